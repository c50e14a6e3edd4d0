"""The zoo's LoRA adapters (INDV lora-<lang>, COMB lora-comb): PEFT folders over base, recorded, deterministic."""

import itertools
import json

import pytest

from harness.zoo import build as zoo_build
from harness.zoo.adapters import interleaved_examples
from harness.zoo.config import adapter_models
from merges.lora import LoraAdapter

ADAPTERS = ["lora-tel", "lora-uig", "lora-comb"]


@pytest.fixture(scope="module")
def first_build(tmp_path_factory, tiny_config):
    """The tiny zoo's adapters (with base, the tokenizer and the data), built once for this module."""
    dest = tmp_path_factory.mktemp("adapters") / "zoo"
    zoo_build.build(dest, tiny_config, progress=False, only=ADAPTERS)
    return dest, ADAPTERS


def test_every_adapter_is_a_peft_folder_over_base_with_its_training_recorded(first_build, tiny_config):
    dest, _ = first_build
    records = json.loads((dest / "zoo.json").read_text())["artifacts"]
    budget = tiny_config.lora.stage
    for model_id, languages in (("lora-tel", 1), ("lora-uig", 1), ("lora-comb", 2)):
        record = records[model_id]
        assert record["steps"] == budget.steps * languages, model_id  # COMB: the same examples of every language
        assert record["examples"] == budget.steps * languages * budget.batch_size
        assert 0 < record["train_seconds"] <= record["seconds"]
        adapter = LoraAdapter(model_id, dest / model_id)
        assert adapter.base_model == "base"
        assert {module.rank for module in adapter.modules.values()} == {tiny_config.lora.rank}
        assert len(adapter.modules) == tiny_config.shape.num_layers * len(tiny_config.lora.target_modules)


def test_adapter_training_is_deterministic(first_build, tiny_config, tmp_path):
    """Trained again into another folder, an adapter has the same bits (the manifest aside)."""
    dest, _ = first_build
    lora_uig = next(model for model in adapter_models(tiny_config) if model.id == "lora-uig")
    (tmp_path / "again").mkdir()
    details = zoo_build.train_into(lora_uig, tiny_config, dest, tmp_path / "again")
    weights = "adapter_model.safetensors"
    assert (tmp_path / "again" / weights).read_bytes() == (dest / "lora-uig" / weights).read_bytes()
    assert details["final_loss"] == json.loads((dest / "zoo.json").read_text())["artifacts"]["lora-uig"]["final_loss"]


def test_comb_sees_the_indv_adapters_examples_interleaved(tiny_config):
    comb = list(itertools.islice(interleaved_examples(tiny_config, {"tel": 1, "uig": 1}), 6))
    tel = list(itertools.islice(interleaved_examples(tiny_config, {"tel": 1}), 3))
    uig = list(itertools.islice(interleaved_examples(tiny_config, {"uig": 1}), 3))
    assert comb == [example for pair in zip(tel, uig) for example in pair]
    doubled = list(itertools.islice(interleaved_examples(tiny_config, {"uig": 2, "tel": 1}), 3))
    assert doubled == [uig[0], uig[1], tel[0]]


def test_zoo_info_shows_each_adapters_training_time_steps_and_examples(first_build, tiny_config):
    from harness.zoo import zoo_info

    dest, _ = first_build
    record = json.loads((dest / "zoo.json").read_text())["artifacts"]["lora-comb"]
    lines = zoo_info(dest, tiny_config).splitlines()
    header = next(line for line in lines if line.startswith("adapter"))
    assert header.split()[:5] == ["adapter", "rank", "train", "s", "steps"]
    row = next(line for line in lines if line.startswith("lora-comb "))
    assert row.split()[1:5] == [str(tiny_config.lora.rank), f"{record['train_seconds']:.1f}", str(record["steps"]),
                                str(record["examples"])]
    assert row.endswith("ok")
