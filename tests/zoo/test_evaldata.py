"""The zoo's evaluation files: the English control gets every family, parallel to the targets."""

import pytest

from harness.zoo.config import ZooConfig, zoo_models
from harness.zoo.evaldata import write_eval_data
from tasks.languages import TARGET_LANGUAGES
from tasks.suite import SPLITS, families_of
from tasks.utils import read_task_docs


@pytest.fixture(scope="module")
def eval_data(tiny_config, tmp_path_factory):
    """The evaluation files of the tiny zoo (targets tel and uig) and the English control."""
    folder = tmp_path_factory.mktemp("zoo-eval-data")
    write_eval_data(folder, tiny_config)
    return folder


def docs(eval_data, family, lang, split) -> list[dict]:
    return read_task_docs(family, lang, split, eval_data)[0]


def item_key(doc: dict) -> tuple[str, str]:
    """The item's id without a language code (MGSM's `mgsm-te-5` -> `5`) and its answer."""
    return doc["id"].rsplit("-", 1)[-1], str(doc["answer"])


def is_english(text: str) -> bool:
    return text.isascii() and any(ch.isalpha() for ch in text)


@pytest.mark.parametrize("family", families_of("eng"))
def test_english_has_every_family_with_the_items_of_the_target_languages(eval_data, family):
    target = "tel" if family in families_of("tel") else "uig"
    for split in SPLITS:
        english, translated = docs(eval_data, family, "eng", split), docs(eval_data, family, target, split)
        assert len(english) == len(translated) > 0, (family, split)
        # Parallel sets: the same items with the same answers, only the language differs.
        assert [item_key(d) for d in english] == [item_key(d) for d in translated]
        assert english != translated


def test_english_items_are_untranslated(eval_data):
    sib = docs(eval_data, "sib", "eng", "test")
    assert all(is_english(d["text"]) for d in sib)
    assert not any(is_english(d["text"]) for d in docs(eval_data, "sib", "tel", "test"))
    rs = docs(eval_data, "mlic_rs", "eng", "test")
    assert all(is_english(d["dialogue"]) and all(option.isascii() for option in d["options"]) for d in rs)
    assert all(is_english(d["question"]) for d in docs(eval_data, "mgsm", "eng", "dev"))


def test_only_the_configured_targets_and_english_are_written(eval_data):
    assert sorted(p.name for p in (eval_data / "sib200").iterdir()) == ["eng_Latn", "tel_Telu"]
    assert sorted(p.name for p in (eval_data / "mgsm").iterdir()) == ["mgsm_en.tsv", "mgsm_te.tsv"]
    assert sorted(p.name for p in (eval_data / "mlic-eval" / "data" / "math").iterdir()) == ["en", "ug"]


def test_english_is_evaluated_but_never_trained_for():
    config = ZooConfig()
    assert config.languages == tuple(TARGET_LANGUAGES) and "eng" not in config.languages
    ids = [model.id for model in zoo_models(config)]
    assert not [model_id for model_id in ids if "eng" in model_id]
    assert {"base", "sft-flan", "ct-uig", "ctsft-uig-mt"} <= set(ids)
