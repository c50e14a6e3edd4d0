"""Every prompt the tasks show a model: English instructions around target-language content.

The paper's SFT-flan model follows English prompts, so instructions stay English whatever the
language of the text. Multiple-choice tasks are scored by the log-likelihood of each answer
continuation (" <label>" or " <letter>"); math generates and the final number is extracted;
extractive reading comprehension generates the answer text.
The zoo's task-format training data is rendered with these same functions.
"""

LETTERS = "ABCDEFGH"


def classification_prompt(text: str, labels: list[str]) -> str:
    return f"Classify the topic of the text.\nText: {text}\nOptions: {', '.join(labels)}\nTopic:"


def classification_choices(labels: list[str]) -> list[str]:
    return [f" {label}" for label in labels]


def multiple_choice_prompt(instruction: str, context_name: str, context: str, question: str | None, options: list[str]) -> str:
    lines = [instruction, f"{context_name}: {context}"]
    if question:
        lines.append(f"Question: {question}")
    lines += [f"{LETTERS[i]}. {option}" for i, option in enumerate(options)]
    lines.append("Answer:")
    return "\n".join(lines)


def reading_prompt(passage: str, question: str, options: list[str]) -> str:
    """Belebele (passage) and MLiC-Eval reading comprehension (dialogue turns joined by newlines)."""
    return multiple_choice_prompt("Read the passage and answer the question.", "Passage", passage, question, options)


def response_prompt(dialogue: str, options: list[str]) -> str:
    return multiple_choice_prompt("Choose the best response to the dialogue.", "Dialogue", dialogue, None, options)


def letter_choices(n_options: int) -> list[str]:
    return [f" {LETTERS[i]}" for i in range(n_options)]


def math_prompt(question: str) -> str:
    return f"Solve the math problem. End with 'The answer is N.'\nQuestion: {question}\nAnswer:"


def math_target(answer: int | float | str) -> str:
    """How a worked answer ends; the math tasks extract the number after 'The answer is'."""
    return f" The answer is {answer}."


def extractive_reading_prompt(passage: str, question: str) -> str:
    """CMiLBench reading comprehension: the answer is free text (a span of the passage), generated."""
    return f"Read the passage and answer the question with words from the passage.\nPassage: {passage}\nQuestion: {question}\nAnswer:"


def extractive_reading_target(answer: str) -> str:
    return f" {answer}"
