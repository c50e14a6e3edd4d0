"""Training text for each stage, and task items rendered in a language.

Pre-training reads English documents; continued pre-training reads documents in one language
(with code-switched English words) mixed with 1/4 English replay; fine-tuning reads task items
rendered with `tasks/prompts.py`, the prompts the evaluation shows, in English (`-flan`) or with
their content translated (`-mt`; the instructions stay English, as in the evaluation).
"""

import random
from collections.abc import Iterator
from dataclasses import dataclass

from harness.zoo.generators import MathItem, ReadingItem, ResponseItem, TopicItem, Writer
from harness.zoo.lexicon import TOPIC_LABELS, stable_seed, translate
from tasks import prompts

# Task formats of the fine-tuning data, one for each evaluation family's prompt.
SFT_FORMATS = ("sib", "tc", "belebele", "mrc", "rs", "math")
TC_LABELS = sorted(TOPIC_LABELS)  # MLiC-Eval tasks list their label set sorted


# ---- documents ----------------------------------------------------------------------------------

def english_documents(writer: Writer) -> Iterator[str]:
    while True:
        yield " ".join(writer.document()[1])


def language_documents(writer: Writer, lang: str, seed: int, code_switch: float) -> Iterator[str]:
    for document in english_documents(writer):
        yield translate(document, lang, seed, code_switch, writer.rng)


def continued_documents(writer: Writer, lang: str, seed: int, code_switch: float, replay: float) -> Iterator[str]:
    """The language's documents with a `replay` share of English ones mixed in."""
    english = english_documents(writer)
    native = language_documents(writer, lang, seed, code_switch)
    while True:
        yield next(english) if writer.rng.random() < replay else next(native)


# ---- task items in a language -------------------------------------------------------------------

@dataclass
class Rendered:
    """One task item in one language: the fields the evaluation files hold."""
    format: str
    text: str = ""  # classification text, passage, or math question
    turns: list[str] | None = None  # dialogue turns (MRC, RS)
    question: str = ""
    options: list[str] | None = None
    answer: int | str = 0  # option index, label, or number
    working: str = ""  # math: the worked step ("12 + 7 = 19"), digits in every language

    def prompt_and_target(self) -> tuple[str, str]:
        """The evaluation prompt and the continuation a correct model scores highest."""
        if self.format in ("sib", "tc"):
            labels = list(TOPIC_LABELS) if self.format == "sib" else TC_LABELS
            return prompts.classification_prompt(self.text, labels), prompts.classification_choices([self.answer])[0]
        if self.format == "math":
            # A worked answer, as FLAN's chain-of-thought data and MLiC-Eval's `cot` field give one:
            # the step first, then the sentence the evaluation reads the number from.
            working = f" {self.working}." if self.working else ""
            return prompts.math_prompt(self.text), working + prompts.math_target(self.answer)
        letter = prompts.letter_choices(len(self.options))[self.answer]
        if self.format == "rs":
            return prompts.response_prompt("\n".join(self.turns), self.options), letter
        passage = "\n".join(self.turns) if self.format == "mrc" else self.text
        return prompts.reading_prompt(passage, self.question, self.options), letter


def draw_item(writer: Writer, fmt: str):
    """One English item of a format, from the writer's side of the split."""
    if fmt == "sib":
        return writer.topic_item(writer.rng.randint(1, 2))
    if fmt == "tc":
        return writer.topic_item(writer.rng.randint(3, 4))
    if fmt == "belebele":
        return writer.reading_item(2)
    if fmt == "mrc":
        return writer.dialogue_reading_item()
    if fmt == "rs":
        return writer.response_item()
    if fmt == "math":
        return writer.math_item()
    raise ValueError(f"unknown task format {fmt!r}")


def render(item, fmt: str, lang: str, seed: int, question: int = 0) -> Rendered:
    """An English item in `lang` (question: which of a reading item's questions)."""
    def tr(text: str) -> str:
        return translate(text, lang, seed)

    if isinstance(item, TopicItem):
        return Rendered(fmt, text=tr(" ".join(item.sentences)), answer=item.label)
    if isinstance(item, MathItem):
        return Rendered(fmt, text=tr(item.question), answer=item.answer, working=item.working)
    if isinstance(item, ResponseItem):
        return Rendered(fmt, turns=[tr(t) for t in item.turns], options=[tr(o) for o in item.options],
                        answer=item.answer)
    if isinstance(item, ReadingItem):
        q, options, answer = item.questions[question]
        turns = [tr(t) for t in item.passage]
        return Rendered(fmt, text=" ".join(turns), turns=turns, question=tr(q),
                        options=[tr(o) for o in options], answer=answer)
    raise TypeError(f"not a task item: {item!r}")


def sft_examples(writer: Writer, lang: str, seed: int) -> Iterator[tuple[str, str]]:
    """(prompt, target) pairs cycling through the task formats, content in `lang`."""
    while True:
        for fmt in SFT_FORMATS:
            item = draw_item(writer, fmt)
            n_questions = len(item.questions) if isinstance(item, ReadingItem) else 1
            yield render(item, fmt, lang, seed, question=writer.rng.randrange(n_questions)).prompt_and_target()


def tokenizer_texts(config) -> list[str]:
    """What the shared BPE is trained on: documents in every language plus English task prompts."""
    n = config.tokenizer_documents
    writer = Writer(random.Random(stable_seed("tokenizer", config.seed)))
    english = english_documents(writer)
    texts = [next(english) for _ in range(2 * n)]
    for lang in config.languages:
        documents = language_documents(writer, lang, config.seed, config.code_switch)
        texts += [next(documents) for _ in range(n)]
    examples = sft_examples(writer, "en", config.seed)
    texts += ["".join(next(examples)) for _ in range(n // 4)]
    return texts
