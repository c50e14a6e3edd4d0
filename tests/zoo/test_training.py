"""Training is deterministic, and the shared tokenizer covers every script."""

import random

import pytest
import torch

from harness.zoo.build import train_zoo_model
from harness.zoo.config import ZooModel
from harness.zoo.corpora import tokenizer_texts
from harness.zoo.generators import Writer
from harness.zoo.lexicon import SCRIPTS, lexicon, translate
from harness.zoo.tokenizer import train_tokenizer
from tasks.languages import TARGET_LANGUAGES


@pytest.fixture(scope="module")
def tiny_tokenizer():
    from dataclasses import replace

    from harness.zoo.config import ZooConfig

    config = replace(ZooConfig(), tokenizer_documents=60)
    return train_tokenizer(tokenizer_texts(config), 1024)


@pytest.mark.parametrize("model", [
    ZooModel("base", "pretrain", None, "en"),
    ZooModel("sft-flan", "sft", "base", "en", "en"),
], ids=lambda m: m.id)
def test_a_training_stage_run_twice_gives_identical_weights(model, tiny_config, tiny_tokenizer):
    def run():
        parent = None
        if model.parent:  # the same fixed starting point both times
            parent, _ = train_zoo_model(ZooModel("base", "pretrain", None, "en"), tiny_config, tiny_tokenizer)
        trained, losses = train_zoo_model(model, tiny_config, tiny_tokenizer, parent)
        return trained.state_dict(), losses

    (first, first_losses), (second, second_losses) = run(), run()
    assert first_losses == second_losses
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_continued_pretraining_changes_the_weights(tiny_config, tiny_tokenizer):
    base, _ = train_zoo_model(ZooModel("base", "pretrain", None, "en"), tiny_config, tiny_tokenizer)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    ct, losses = train_zoo_model(ZooModel("ct-uig", "continued", "base", "uig"), tiny_config, tiny_tokenizer, base)
    assert len(losses) == tiny_config.continued.steps
    assert any(not torch.equal(before[k], v) for k, v in ct.state_dict().items())


def test_ct_checkpoints_are_saved_and_leave_the_final_weights_bit_identical(tiny_config, tiny_tokenizer, tmp_path):
    import copy
    from dataclasses import replace

    from harness.zoo.train import load_model

    config = replace(tiny_config, continued=replace(tiny_config.continued, steps=3, checkpoints=(1, 2)))
    base, _ = train_zoo_model(ZooModel("base", "pretrain", None, "en"), config, tiny_tokenizer)
    ct = ZooModel("ct-uig", "continued", "base", "uig")
    plain, plain_losses = train_zoo_model(ct, config, tiny_tokenizer, copy.deepcopy(base))
    saving, saving_losses = train_zoo_model(ct, config, tiny_tokenizer, copy.deepcopy(base), checkpoints_into=tmp_path)
    assert saving_losses == plain_losses
    final = saving.state_dict()
    for name, tensor in plain.state_dict().items():
        assert torch.equal(final[name], tensor), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step1", "step2"]
    # Each a whole HF folder (weights, config, tokenizer) between the parent and the final model.
    step1, step2 = (load_model(tmp_path / label).state_dict() for label in ("step1", "step2"))
    assert (tmp_path / "step1" / "tokenizer.json").is_file()
    weight = "model.layers.0.mlp.up_proj.weight"
    assert len({tuple(w[weight].flatten()[:8].tolist()) for w in (base.state_dict(), step1, step2, final)}) == 4


def test_tokenizer_round_trips_every_script(tiny_tokenizer):
    writer = Writer(random.Random(0))
    english = " ".join(writer.document(5, 5)[1])
    for lang in TARGET_LANGUAGES:
        text = translate(english, lang, seed=1234)
        ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tiny_tokenizer.decode(ids) == text, lang
        assert tiny_tokenizer.unk_token_id not in ids
    for token in ("<s>", "</s>", "<pad>"):
        assert token in tiny_tokenizer.get_vocab()


def test_the_zoo_tokenizer_learnt_merges_for_every_script(zoo_home):
    from transformers import AutoTokenizer

    from harness.zoo.config import ZooConfig

    tokenizer = AutoTokenizer.from_pretrained(str(zoo_home / "zoo" / "base"))
    english = " ".join(Writer(random.Random(0)).document(5, 5)[1])
    for lang in TARGET_LANGUAGES:
        text = translate(english, lang, seed=ZooConfig().seed)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text, lang
        # well under one token per character: the script's words are not spelt letter by letter
        assert len(ids) < 0.6 * len(text), (lang, len(ids), len(text))


def test_each_language_is_spelt_in_its_own_script():
    import unicodedata

    script_names = {"tam": "TAMIL", "tel": "TELUGU", "ory": "ORIYA", "ben": "BENGALI", "bod": "TIBETAN",
                    "uig": "ARABIC", "mvf": "MONGOLIAN"}
    assert set(SCRIPTS) == set(TARGET_LANGUAGES)
    for lang, words in ((lang, lexicon(lang, 1234).words) for lang in TARGET_LANGUAGES):
        assert len(set(words.values())) == len(words), f"{lang}: two English words share a translation"
        letters = {ch for word in words.values() for ch in word if ch != "\u0f0b"}
        assert all(unicodedata.name(ch).startswith(script_names[lang]) for ch in letters), lang


def test_translation_is_word_by_word_and_keeps_numbers():
    text = "Anna has 12 tickets."
    for lang in TARGET_LANGUAGES:
        out = translate(text, lang, seed=1234)
        assert "12" in out and "Anna" not in out
        assert translate(text, lang, seed=1234) == out
        assert translate(text, lang, seed=99) != out  # the lexicon follows the zoo's seed


def test_task_batches_hold_one_whole_example_per_row_with_the_loss_on_the_answer_only(tiny_tokenizer):
    from harness.zoo.train import BUCKET, IGNORE, encode_example, task_batches

    examples = [("Question: " + "very " * (k % 7) + f"{k} plus one?\nAnswer:", f" {k + 1}.") for k in range(64)]
    batches = list(task_batches(tiny_tokenizer, iter(examples), batch_size=4, max_len=64, n_batches=BUCKET))
    encoded = {tuple(ids): labels for ids, labels in (encode_example(tiny_tokenizer, *e, 64) for e in examples)}
    seen = []
    for batch in batches:
        lengths = []
        for ids_row, labels_row in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
            length = next(n for n in range(len(ids_row), 0, -1) if tuple(ids_row[:n]) in encoded)
            ids = tuple(ids_row[:length])  # one whole example, then padding without loss
            assert labels_row[:length] == encoded[ids]
            assert set(ids_row[length:]) <= {tiny_tokenizer.pad_token_id} and set(labels_row[length:]) <= {IGNORE}
            seen.append(ids)
            lengths.append(length)
        assert max(lengths) == batch["input_ids"].shape[1]  # padded to its own longest example only
    assert len(seen) == len(set(seen)) == 4 * BUCKET  # every example of the pool once
    widths = [batch["input_ids"].shape[1] for batch in batches]
    assert widths == sorted(widths)  # cut from a pool sorted by length


def test_the_target_only_loss_equals_the_full_models_loss(tiny_config, tiny_tokenizer):
    from harness.zoo.train import IGNORE, batch_loss, new_model

    model = new_model(tiny_config.shape, tiny_tokenizer, seed=0)
    ids = torch.randint(3, 500, (2, 24))
    labels = ids.clone()
    labels[:, :15] = IGNORE  # a prompt without loss, then the answer
    batch = {"input_ids": ids, "labels": labels}
    assert torch.allclose(batch_loss(model, batch), model(**batch).loss, atol=1e-6)


def test_the_prompt_term_is_language_modelling_on_every_fourth_prompt_token(tiny_config, tiny_tokenizer):
    from harness.zoo.train import IGNORE, PROMPT_LOSS_STRIDE, batch_loss, new_model

    model = new_model(tiny_config.shape, tiny_tokenizer, seed=0)
    ids = torch.randint(3, 500, (2, 24))
    labels = torch.full_like(ids, IGNORE)
    labels[:, 20:] = ids[:, 20:]  # the answer
    text_mask = torch.ones_like(ids, dtype=torch.bool)
    text_mask[1, 22:] = False  # the second row is shorter: padding after it
    labels[1, 22:] = IGNORE
    batch = {"input_ids": ids, "labels": labels, "text_mask": text_mask}

    logits = model(input_ids=ids).logits[:, :-1]
    answer = torch.nn.functional.cross_entropy(logits[labels[:, 1:] != IGNORE], labels[:, 1:][labels[:, 1:] != IGNORE])
    positions = [(row, p) for row in range(2) for p in range(0, 23, PROMPT_LOSS_STRIDE)
                 if labels[row, p + 1] == IGNORE and text_mask[row, p + 1]]
    prompt = torch.nn.functional.cross_entropy(torch.stack([logits[r, p] for r, p in positions]),
                                               torch.stack([ids[r, p + 1] for r, p in positions]))
    assert torch.allclose(batch_loss(model, batch, 0.5), answer + 0.5 * prompt, atol=1e-5)
    assert torch.allclose(batch_loss(model, batch), answer, atol=1e-5)
