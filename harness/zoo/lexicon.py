"""The zoo's synthetic languages: an English-like vocabulary and its word-level "translations".

English is a small topical vocabulary: one block of nouns, verbs and adjectives for each of the
seven SIB-200 topics, plus names, everyday nouns and function words. Every other language maps
each English word, one to one, to a pseudo-word spelled in that language's real script
(syllables of its consonants and vowel signs), with regular suffixes for plurals and past tenses
so the languages have some morphology. A translation keeps the English word order. The mapping
is fixed by the zoo's seed, so every corpus, task file and model of one zoo agrees on it.
"""

import random
import re
import zlib
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Topic:
    label: str  # the SIB-200 category
    label_zh: str  # MLiC-Eval also gives a Chinese label
    words: tuple[str, ...]  # how texts name the topic itself ("news about sports")
    nouns: tuple[str, ...]  # countable: every noun has a plural
    verbs: tuple[tuple[str, str], ...]  # (base form, past form)
    adjectives: tuple[str, ...]


TOPICS: tuple[Topic, ...] = (
    Topic("science/technology", "科学/技术", ("science", "technology"),
          ("computer", "robot", "laboratory", "scientist", "experiment", "phone", "program", "battery",
           "telescope", "engine", "satellite", "machine", "sensor", "rocket", "chip", "network"),
          (("build", "built"), ("test", "tested"), ("design", "designed"), ("measure", "measured"),
           ("launch", "launched"), ("repair", "repaired")),
          ("digital", "modern", "electric", "powerful", "smart", "precise")),
    Topic("travel", "旅行", ("travel", "tourism"),
          ("airport", "hotel", "passport", "ticket", "train", "beach", "tourist", "suitcase",
           "flight", "map", "museum", "journey", "guide", "bus", "camera", "visa"),
          (("visit", "visited"), ("book", "booked"), ("pack", "packed"), ("explore", "explored"),
           ("fly", "flew"), ("reach", "reached")),
          ("foreign", "cheap", "crowded", "sunny", "comfortable", "distant")),
    Topic("politics", "政治", ("politics", "government"),
          ("election", "minister", "parliament", "vote", "law", "president", "party", "senator",
           "campaign", "policy", "citizen", "court", "debate", "tax", "mayor", "treaty"),
          (("elect", "elected"), ("sign", "signed"), ("discuss", "discussed"), ("announce", "announced"),
           ("support", "supported"), ("reject", "rejected")),
          ("national", "public", "official", "democratic", "federal", "political")),
    Topic("sports", "体育", ("sports", "athletics"),
          ("football", "team", "player", "coach", "goal", "match", "stadium", "ball",
           "race", "medal", "racket", "runner", "league", "referee", "season", "trophy"),
          (("win", "won"), ("kick", "kicked"), ("practice", "practiced"), ("play", "played"),
           ("score", "scored"), ("lose", "lost")),
          ("fast", "strong", "final", "athletic", "young", "winning")),
    Topic("health", "健康", ("health", "medicine"),
          ("doctor", "hospital", "patient", "nurse", "disease", "vaccine", "clinic", "heart",
           "meal", "fever", "workout", "virus", "bandage", "pill", "therapy", "surgeon"),
          (("treat", "treated"), ("cure", "cured"), ("examine", "examined"), ("prescribe", "prescribed"),
           ("heal", "healed"), ("prevent", "prevented")),
          ("healthy", "sick", "medical", "chronic", "fresh", "painful")),
    Topic("entertainment", "娱乐", ("entertainment", "music"),
          ("movie", "actor", "guitar", "concert", "singer", "film", "theater", "song",
           "festival", "show", "album", "dancer", "comedian", "director", "star", "stage"),
          (("watch", "watched"), ("sing", "sang"), ("perform", "performed"), ("record", "recorded"),
           ("dance", "danced"), ("enjoy", "enjoyed")),
          ("famous", "funny", "popular", "loud", "dramatic", "musical")),
    Topic("geography", "地理", ("geography", "nature"),
          ("mountain", "river", "desert", "ocean", "valley", "forest", "lake", "volcano",
           "coast", "glacier", "continent", "island", "region", "canyon", "plain", "border"),
          (("cover", "covered"), ("flow", "flowed"), ("form", "formed"), ("cross", "crossed"),
           ("surround", "surrounded"), ("divide", "divided")),
          ("vast", "rocky", "northern", "dry", "deep", "tropical")),
)
TOPIC_LABELS: tuple[str, ...] = tuple(topic.label for topic in TOPICS)

NAMES = ("Anna", "Ravi", "Maya", "Omar", "Lina", "Arjun", "Sara", "Tenzin",
         "Aylin", "Bilal", "Nora", "Kiran", "Elena", "Hassan", "Mina", "Batu")
COMMON_NOUNS = ("people", "city", "day", "year", "week", "month", "country", "group", "report",
                "friend", "family", "morning", "evening", "news", "box", "story")
FUNCTION_WORDS = (
    "the", "a", "in", "on", "at", "of", "to", "with", "and", "from", "near", "about", "this", "that",
    "was", "were", "is", "are", "very", "many", "also", "then", "yesterday", "today", "last", "every",
    "more", "how", "what", "who", "why", "did", "does", "do", "has", "have", "had", "i", "you", "it",
    "we", "they", "each", "now", "buys", "bought", "gives", "gave", "big", "said", "yes", "no", "not",
    "what", "went", "saw", "some", "new", "good", "much", "liked", "there", "asked", "think", "so",
)
NUMBER_WORD = re.compile(r"^\d+$")


def plural(noun: str) -> str:
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def english_vocabulary() -> list[str]:
    """Every lower-case English word the generators can produce, in a fixed order."""
    words: list[str] = []
    for topic in TOPICS:
        words += topic.words + topic.adjectives
        words += [form for noun in topic.nouns for form in (noun, plural(noun))]
        words += [form for verb in topic.verbs for form in verb]
    words += [name.lower() for name in NAMES] + list(COMMON_NOUNS) + [plural(n) for n in COMMON_NOUNS]
    words += FUNCTION_WORDS
    return list(dict.fromkeys(words))


def _stems_and_suffixes() -> dict[str, tuple[str, str]]:
    """word -> (stem word, suffix kind) for the forms a language builds from a stem."""
    derived: dict[str, tuple[str, str]] = {}
    for topic in TOPICS:
        for noun in topic.nouns:
            derived[plural(noun)] = (noun, "plural")
        for base, past in topic.verbs:
            derived[past] = (base, "past")
    for noun in COMMON_NOUNS:
        derived[plural(noun)] = (noun, "plural")
    return derived


# ---- scripts ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Script:
    """How pseudo-words of one language are spelled and how its sentences are punctuated."""
    consonants: str
    vowel_signs: str  # dependent vowels after a consonant (abugidas) or vowel letters (alphabets)
    initial_vowels: str  # how a word may start with a vowel
    abugida: bool  # a bare consonant carries an inherent vowel, so a syllable may omit the sign
    period: str = "."
    comma: str = ","
    question: str = "?"
    syllable_joiner: str = ""  # Tibetan separates every syllable with a tsheg
    max_syllables: int = 3


SCRIPTS: dict[str, Script] = {
    "tam": Script("கஙசஞடணதநபமயரலவழளறன", "ாிீுூெேைொோ", "அஆஇஈஉஎஏஒ", True),
    "tel": Script("కగచజటడణతదనపబమయరలవశసహ", "ాిీుూెేొో", "అఆఇఈఉఎఏఒ", True),
    "ory": Script("କଗଚଜଟଡଣତଦନପବମଯରଲଶସହ", "ାିୀୁୂେୋ", "ଅଆଇଉଏଓ", True, period="।"),
    "ben": Script("কগচজটডণতদনপবমযরলশসহ", "ািীুূেো", "অআইউএও", True, period="।"),
    "bod": Script("ཀཁགངཅཆཇཉཏཐདནཔཕབམཙཚཛཝཞཟའཡརལཤསཧ", "ིེོུ", "ཨ", True,
                  period="།", comma="།", question="།", syllable_joiner="་", max_syllables=2),
    "uig": Script("بپتجچخدرزسشغفقكگڭلمنھۋي", "اەوۇۆۈېى", "ئ", False, comma="،", question="؟"),
    "mvf": Script("ᠨᠪᠬᠭᠮᠯᠰᠱᠲᠳᠴᠵᠶᠷᠸ", "ᠠᠡᠢᠣᠤᠥᠦ", "ᠠᠡᠢᠣᠤ", False, period="᠃", comma="᠂"),
}


def stable_seed(*parts: object) -> int:
    """A stable integer seed from strings (Python's hash() changes between runs)."""
    return zlib.crc32("/".join(map(str, parts)).encode("utf-8"))


def _syllable(script: Script, rng: random.Random, first: bool) -> str:
    if first and rng.random() < 0.15:
        vowel = rng.choice(script.initial_vowels)
        return vowel + rng.choice(script.vowel_signs) if not script.abugida else vowel
    consonant = rng.choice(script.consonants)
    if script.abugida and rng.random() < 0.3:
        return consonant  # the inherent vowel
    return consonant + rng.choice(script.vowel_signs)


def _pseudo_syllables(script: Script, rng: random.Random, n_syllables: int) -> list[str]:
    return [_syllable(script, rng, first=i == 0) for i in range(n_syllables)]


@dataclass(frozen=True)
class Lexicon:
    """English word -> the language's word (as a list of syllables) for one language."""
    lang: str
    script: Script
    words: dict[str, str]

    def word(self, english: str) -> str:
        return self.words[english.lower()]


@cache
def lexicon(lang: str, seed: int) -> Lexicon:
    """The deterministic word mapping of one language under one zoo seed."""
    script = SCRIPTS[lang]
    rng = random.Random(stable_seed("lexicon", lang, seed))
    join = script.syllable_joiner.join
    suffixes = {kind: join(_pseudo_syllables(script, rng, 1)) for kind in ("plural", "past")}
    derived = _stems_and_suffixes()
    forms_of: dict[str, list[tuple[str, str]]] = {}  # stem -> [(derived English word, suffix kind)]
    for english, (stem, kind) in derived.items():
        forms_of.setdefault(stem, []).append((english, kind))

    def attach(stem: str, kind: str) -> str:
        return join([stem, suffixes[kind]]) if script.syllable_joiner else stem + suffixes[kind]

    words: dict[str, str] = {}
    taken: set[str] = set(suffixes.values())
    for english in english_vocabulary():
        if english in derived:
            continue
        n_syllables = min(script.max_syllables, 1 + len(english) // 4)
        while True:
            candidate = join(_pseudo_syllables(script, rng, n_syllables))
            # The word and the forms built from it (plural, past) must all be new: a stem plus a
            # suffix can spell another word, and two English words must never share a translation.
            forms = {english: candidate} | {d: attach(candidate, kind) for d, kind in forms_of.get(english, [])}
            if not taken.intersection(forms.values()) and len(set(forms.values())) == len(forms):
                break
            n_syllables = min(script.max_syllables + 1, n_syllables + (rng.random() < 0.3))
        words.update(forms)
        taken.update(forms.values())
    return Lexicon(lang, script, words)


# ---- translation --------------------------------------------------------------------------------

TOKEN = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")


def translate(text: str, lang: str, seed: int, code_switch: float = 0.0, rng: random.Random | None = None) -> str:
    """`text` (generator English) in `lang`, word by word; "en" returns it unchanged.

    With `code_switch` > 0 each word stays English with that probability (drawn from `rng`),
    as words do in real web text in these languages.
    """
    if lang == "en":
        return text
    lex = lexicon(lang, seed)
    script = lex.script
    pieces: list[tuple[str, bool]] = []  # (text, is a word of the language)
    for token in TOKEN.findall(text):
        if token[0].isalpha():
            if code_switch and rng is not None and rng.random() < code_switch:
                pieces.append((token, False))
            else:
                pieces.append((lex.word(token), True))
        elif token.isdigit():
            pieces.append((token, False))
        else:
            punctuation = {".": script.period, ",": script.comma, "?": script.question}.get(token, token)
            pieces.append((punctuation, None))
    return _join(pieces, script)


def _join(pieces: list[tuple[str, bool | None]], script: Script) -> str:
    out = ""
    previous_native = False
    for piece, native in pieces:
        if native is None:  # punctuation sticks to the word before it
            out += piece
            previous_native = False
            continue
        if out and not out.endswith("\n"):
            tsheg = script.syllable_joiner and native and previous_native
            out += script.syllable_joiner if tsheg else " "
        out += piece
        previous_native = bool(native)
    return out
