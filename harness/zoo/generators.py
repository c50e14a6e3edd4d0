"""English-like text and task items from the topical vocabulary of `lexicon.py`.

Everything here is English; `lexicon.translate` turns it into another language. Documents keep to
one topic (nine in ten content words come from it), so a model that knows a language's words
knows their topics. Task items mirror the evaluation suites: topic classification (SIB-200,
MLiC-Eval TC), reading comprehension over a passage (Belebele) or a dialogue (MLiC-Eval MRC),
response selection (MLiC-Eval RS) and arithmetic word problems (MGSM, MLiC-Eval math).

Training and evaluation never share a sentence: `is_heldout` puts a fixed eighth of all possible
sentences (by hash) on the evaluation side, and each side only draws from its own.
"""

import hashlib
import random
from dataclasses import dataclass

from harness.zoo.lexicon import NAMES, TOPICS, Topic, plural

HELDOUT_EIGHTHS = 1  # share of sentences (in eighths) reserved for evaluation data
TIMES = ("yesterday", "today", "last week", "last year", "this morning", "in the evening", "last month")
UNITS = ("day", "week", "month", "year")
PREPOSITIONS = ("in", "near", "at", "from", "with")

# Sentence templates of topical documents. Slots: N noun, NS plural noun, V past verb, VB base verb,
# A adjective, P person, P2 another person, K number, T time, U time unit, R preposition, W topic word.
DOCUMENT_TEMPLATES = (
    "{P} {V} the {A} {N}.",
    "The {N} {V} the {N2} {R} the {N3}.",
    "{T}, {P} {V} {K} {NS}.",
    "The {NS} were very {A}.",
    "{P} and {P2} {V} a {A} {N} {R} the {N2}.",
    "Many people {VB} the {N} every {U}.",
    "This was big news in {W}.",
    "The {A} {N} {V} {K} {NS} {T}.",
    "{P} said that the {N} was {A}.",
    "Why did the {N} {VB} the {N2}?",
    "There were {K} {A} {NS} near the {N}.",
    "{P} asked about the {N} and the {N2}.",
)


def is_heldout(sentence: str) -> bool:
    """Whether a sentence belongs to the evaluation side (fixed by its text, not by a seed)."""
    return hashlib.blake2b(sentence.encode("utf-8"), digest_size=1).digest()[0] < 32 * HELDOUT_EIGHTHS


def _capitalize(text: str) -> str:
    return text[0].upper() + text[1:]


@dataclass
class Writer:
    """Draws English text for one side (training or evaluation) from a seeded generator."""
    rng: random.Random
    heldout: bool = False  # True: evaluation side
    purity: float = 0.9  # chance that a content word comes from the text's own topic

    def topic(self) -> Topic:
        return self.rng.choice(TOPICS)

    def _content_topic(self, topic: Topic) -> Topic:
        return topic if self.rng.random() < self.purity else self.rng.choice(TOPICS)

    def _fill(self, template: str, topic: Topic) -> str:
        rng = self.rng
        nouns = rng.sample(self._content_topic(topic).nouns, 3)
        verb = rng.choice(self._content_topic(topic).verbs)
        people = rng.sample(NAMES, 2)
        slots = {
            "N": nouns[0], "N2": nouns[1], "N3": nouns[2], "NS": plural(rng.choice(self._content_topic(topic).nouns)),
            "V": verb[1], "VB": verb[0], "A": rng.choice(self._content_topic(topic).adjectives),
            "P": people[0], "P2": people[1], "K": str(rng.randint(2, 40)), "T": rng.choice(TIMES),
            "U": rng.choice(UNITS), "R": rng.choice(PREPOSITIONS), "W": rng.choice(topic.words),
        }
        return _capitalize(template.format(**slots))

    def accept(self, sentence: str) -> bool:
        return is_heldout(sentence) == self.heldout

    def sentence(self, topic: Topic, templates: tuple[str, ...] = DOCUMENT_TEMPLATES) -> str:
        """One sentence about `topic` from this writer's side of the split."""
        while True:
            sentence = self._fill(self.rng.choice(templates), topic)
            if self.accept(sentence):
                return sentence

    def document(self, min_sentences: int = 3, max_sentences: int = 8) -> tuple[Topic, list[str]]:
        topic = self.topic()
        n = self.rng.randint(min_sentences, max_sentences)
        return topic, [self.sentence(topic) for _ in range(n)]

    # ---- task items (English; the caller translates every text field) ----

    def topic_item(self, n_sentences: int) -> "TopicItem":
        topic = self.topic()
        return TopicItem([self.sentence(topic) for _ in range(n_sentences)], topic.label, topic.label_zh)

    def _draw(self, make, tries: int = 64) -> str | None:
        """make() until it gives a sentence on this writer's side; None after `tries` misses."""
        for _ in range(tries):
            sentence = make()
            if self.accept(sentence):
                return sentence
        return None

    def _facts(self, topic: Topic, n: int, template: str) -> list[tuple[str, str, tuple[str, str], str]]:
        """n (person, noun, verb, sentence) facts with distinct people and nouns, all on this side."""
        rng = self.rng
        facts: list[tuple[str, str, tuple[str, str], str]] = []
        while len(facts) < n:
            person = rng.choice([p for p in NAMES if p not in {f[0] for f in facts}])
            noun = rng.choice([x for x in topic.nouns if x not in {f[1] for f in facts}])
            verb = rng.choice(topic.verbs)
            sentence = self._draw(lambda: _capitalize(template.format(
                P=person, V=verb[1], A=rng.choice(topic.adjectives), N=noun, T=rng.choice(TIMES))))
            if sentence is not None:
                facts.append((person, noun, verb, sentence))
        return facts

    def _question_about(self, facts, target: int) -> tuple[str, list[str], int]:
        """A who-or-what question on fact `target` with the four facts' answers as options."""
        person, noun, verb, _ = facts[target]
        if self.rng.random() < 0.5:
            question, options = f"What did {person} {verb[0]}?", [f"the {f[1]}" for f in facts]
        else:
            question, options = f"Who {verb[1]} the {noun}?", [f[0] for f in facts]
        order = list(range(len(options)))
        self.rng.shuffle(order)
        return question, [options[i] for i in order], order.index(target)

    def reading_item(self, n_questions: int = 1) -> "ReadingItem":
        """A passage of four facts and questions on distinct facts (Belebele style)."""
        topic = self.topic()
        facts = self._facts(topic, 4, "{P} {V} the {A} {N} {T}.")
        targets = self.rng.sample(range(4), n_questions)
        return ReadingItem([f[3] for f in facts], [self._question_about(facts, t) for t in targets])

    def dialogue_reading_item(self) -> "ReadingItem":
        """A dialogue where each speaker says what they did (MLiC-Eval MRC style)."""
        topic = self.topic()
        facts = self._facts(topic, 4, "{P}: I {V} the {A} {N} {T}.")
        return ReadingItem([f[3] for f in facts], [self._question_about(facts, self.rng.randrange(4))])

    def response_item(self) -> "ResponseItem":
        """A dialogue on one topic; the right response is on that topic, the others are not."""
        rng = self.rng
        topic = self.topic()
        while True:
            a, b = rng.sample(NAMES, 2)
            verb, noun = rng.choice(topic.verbs), rng.choice(topic.nouns)
            other_nouns = [n for n in topic.nouns if n != noun]
            turns = [
                self._draw(lambda: f"{a}: Did you {verb[0]} the {noun} {rng.choice(TIMES)}?"),
                self._draw(lambda: f"{b}: Yes, I {verb[1]} the {rng.choice(topic.adjectives)} {noun}."),
                self._draw(lambda: f"{a}: What about the {rng.choice(other_nouns)}?"),
            ]
            if None not in turns:
                break
        others = rng.sample([t for t in TOPICS if t is not topic], 3)
        templates = ("The {N} was very {A}.", "I think the {N} {V} the {N2}.", "We {V} {K} {NS} there.")
        options = [Writer(rng, self.heldout, purity=1.0).sentence(t, templates) for t in [topic] + others]
        order = list(range(4))
        rng.shuffle(order)
        return ResponseItem(turns, [options[i] for i in order], order.index(0))

    def math_item(self) -> "MathItem":
        rng = self.rng
        while True:
            topic = self.topic()
            person, other = rng.sample(NAMES, 2)
            things = plural(rng.choice(topic.nouns))
            kind = rng.choice(("add", "subtract", "multiply"))
            if kind == "add":
                a, b = rng.randint(2, 30), rng.randint(2, 30)
                answer, sign = a + b, "+"
                question = (f"{person} has {a} {things}. {person} buys {b} more {things}. "
                            f"How many {things} does {person} have now?")
            elif kind == "subtract":
                a = rng.randint(10, 40)
                b = rng.randint(1, a - 1)
                answer, sign = a - b, "-"
                question = (f"{person} has {a} {things}. {person} gives {b} {things} to {other}. "
                            f"How many {things} does {person} have now?")
            else:
                a, b = rng.randint(2, 9), rng.randint(2, 9)
                answer, sign = a * b, "*"
                question = (f"{person} buys {a} boxes. Each box has {b} {things}. "
                            f"How many {things} does {person} have?")
            if self.accept(question):
                return MathItem(question, answer, f"{a} {sign} {b} = {answer}")


@dataclass
class TopicItem:
    sentences: list[str]
    label: str
    label_zh: str

    @property
    def key(self) -> str:
        return " ".join(self.sentences)


@dataclass
class ReadingItem:
    passage: list[str]  # sentences or dialogue turns
    questions: list[tuple[str, list[str], int]]  # (question, options, index of the answer)

    @property
    def key(self) -> str:
        return " ".join(self.passage)


@dataclass
class ResponseItem:
    turns: list[str]
    options: list[str]
    answer: int

    @property
    def key(self) -> str:
        return " ".join(self.turns)


@dataclass
class MathItem:
    question: str
    answer: int
    working: str  # "3 + 4 = 7"

    @property
    def key(self) -> str:
        return self.question

