"""Held-out loss: how well a zoo model predicts text of a language that it never trained on.

The text comes from the evaluation side of the sentence split (`Writer(heldout=True)`), so no
sentence of it was in any model's training data. Each language's rows are fixed by the zoo's
seed and the language alone, so every model is measured on the same tokens: `ct-uig`'s loss on
Uyghur and `base`'s loss on Uyghur compare directly. A model is measured on English and on the
languages it relates to (`languages_of`): a few seconds per model on one thread.
"""

import random

import torch

from harness.zoo.config import COMBINED, ZooConfig, ZooModel
from harness.zoo.corpora import english_documents, language_documents
from harness.zoo.generators import Writer
from harness.zoo.lexicon import stable_seed
from harness.zoo.train import pack_documents, training_threads

HELDOUT_ROWS = 16
HELDOUT_TOKENS = 256  # tokens per row
ROWS_PER_FORWARD = 4  # bounds the memory of the logits (rows x tokens x vocabulary)


def languages_of(model: ZooModel, config: ZooConfig) -> list[str]:
    """English, plus the model's own language; base and lora-comb relate to every language of the zoo."""
    if model.kind == "pretrain" or model.lang == COMBINED:
        return ["en", *config.languages]
    return ["en"] if model.lang == "en" else ["en", model.lang]


def heldout_rows(tokenizer, lang: str, config: ZooConfig) -> torch.Tensor:
    """HELDOUT_ROWS x HELDOUT_TOKENS token ids of held-out documents in `lang` ("en": English)."""
    writer = Writer(random.Random(stable_seed("heldout", config.seed, lang)), heldout=True)
    documents = (english_documents(writer) if lang == "en"
                 else language_documents(writer, lang, config.seed, config.code_switch))
    return pack_documents(tokenizer, documents, HELDOUT_ROWS, HELDOUT_TOKENS)


def heldout_losses(network, tokenizer, model: ZooModel, config: ZooConfig) -> dict[str, float]:
    """Language -> the network's mean per-token loss (nats) on that language's held-out rows."""
    return {lang: round(mean_loss(network, heldout_rows(tokenizer, lang, config)), 4)
            for lang in languages_of(model, config)}


def mean_loss(network, rows: torch.Tensor) -> float:
    """Mean next-token loss over all rows (all rows are equally long, so rows weigh each batch's mean)."""
    was_training = network.training
    network.eval()
    total = 0.0
    with torch.no_grad(), training_threads():  # the training thread count: the same bits anywhere
        for start in range(0, len(rows), ROWS_PER_FORWARD):
            batch = rows[start:start + ROWS_PER_FORWARD]
            total += network(input_ids=batch, labels=batch).loss.item() * len(batch)
    network.train(was_training)
    return total / len(rows)
