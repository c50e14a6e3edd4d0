"""Adapters as merge inputs: a merge over PEFT LoRA adapters equals the same merge over the full
models they make (base + ΔW materialised and saved), tensor by tensor; bad adapter inputs are one
line and write nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import merges
from merges.errors import MergeError
from merges.lora import LoraAdapter, materialise
from tests.merges.conftest import llama_config, load_folder, random_weights, save_checkpoint

peft = pytest.importorskip("peft")
from tests.merges.test_lora import peft_adapter  # noqa: E402  (needs peft)

# Three languages' adapters: different ranks, scales and target modules (the union is merged).
ADAPTERS = {"lora-a": dict(seed=11, rank=4, alpha=8, targets=("q_proj", "v_proj", "down_proj")),
            "lora-b": dict(seed=12, rank=8, alpha=8, targets=("q_proj", "v_proj", "down_proj")),
            "lora-c": dict(seed=13, rank=2, alpha=4, targets=("q_proj", "k_proj", "up_proj"))}


@pytest.fixture(scope="module")
def adapter_models(tmp_path_factory) -> dict[str, Path]:
    """The base, the adapters over it, and `full-<adapter>`: base + ΔW saved as a checkpoint."""
    root = tmp_path_factory.mktemp("adapters")
    base = random_weights(0)
    folders = {"base": save_checkpoint(root / "base", base, llama_config(), tokenizer_tag="base")}
    for name, options in ADAPTERS.items():
        folders[name] = peft_adapter(folders["base"], root / name, **options)
        adapter = LoraAdapter(name, folders[name])
        full = {tensor: materialise(value, adapter.delta(tensor)) if tensor in adapter.modules else value
                for tensor, value in base.items()}
        folders[f"full-{name}"] = save_checkpoint(root / f"full-{name}", full, llama_config())
    return folders


def recipe(method: str, models: list[str], **parameters) -> dict:
    weights = {"lora-a": 1.0, "lora-b": 0.7, "lora-c": 0.5}
    return {"merge_method": method, "base_model": "base",
            "models": [{"model": m, "parameters": {"weight": weights[m.removeprefix("full-")], "density": 0.5}}
                       for m in models],
            "parameters": parameters}


MERGES = [("linear", {}), ("task_arithmetic", {"lambda": 0.8}), ("ties", {}), ("dare_ties", {"seed": 7}),
          ("knots_ties", {}), ("knots_dare_ties", {"seed": 7})]


@pytest.mark.parametrize("method, parameters", MERGES)
def test_merging_adapters_equals_merging_the_full_models_they_make(adapter_models, tmp_path, method, parameters):
    names = list(ADAPTERS)
    over_adapters = merges.merge(recipe(method, names, **parameters), adapter_models, tmp_path / "adapters",
                                 progress=False)
    over_full = merges.merge(recipe(method, [f"full-{n}" for n in names], **parameters), adapter_models,
                             tmp_path / "full", progress=False)
    got, expected = load_folder(over_adapters.path), load_folder(over_full.path)
    assert set(got) == set(expected)
    # KnOTS over adapters takes the SVD from a sketch (the adapters bound the rank), over full
    # models the full SVD: the same basis to rounding, so a looser bound.
    tolerance = dict(rtol=1e-5, atol=1e-6) if method.startswith("knots") else dict(rtol=1e-6, atol=1e-7)
    changed = 0
    for tensor in expected:
        torch.testing.assert_close(got[tensor], expected[tensor], **tolerance, msg=tensor)
        changed += not torch.equal(expected[tensor], load_folder(adapter_models["base"])[tensor])
    assert changed >= 5 * 2  # q, k, v, up, down of both layers: the adapters did change the merge
    assert (over_adapters.stats is None) == method.startswith(("linear", "task_arithmetic", "knots"))
    if over_full.stats is not None:
        assert over_adapters.stats["total"] == {
            name.removeprefix("full-"): counts for name, counts in over_full.stats["total"].items()}


def test_tensors_no_adapter_changes_are_the_bases(adapter_models, tmp_path):
    out = merges.merge(recipe("ties", ["lora-a", "lora-b"]), adapter_models, tmp_path / "m", progress=False)
    got, base = load_folder(out.path), load_folder(adapter_models["base"])
    for tensor in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate_proj.weight",
                   "model.layers.0.self_attn.o_proj.weight", "model.norm.weight"):
        assert torch.equal(got[tensor], base[tensor]), tensor
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(got[q_proj], base[q_proj])


def test_an_adapter_needs_a_base_model(adapter_models, tmp_path):
    linear = {"merge_method": "linear", "models": [{"model": "lora-a"}, {"model": "full-lora-b"}]}
    with pytest.raises(MergeError, match="'lora-a' is a LoRA adapter: the recipe needs a base_model") as error:
        merges.merge(linear, adapter_models, tmp_path / "out", progress=False)
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()
    as_base = recipe("ties", ["full-lora-b"]) | {"base_model": "lora-a"}
    with pytest.raises(MergeError, match="base_model 'lora-a' is a LoRA adapter"):
        merges.merge(as_base, adapter_models, tmp_path / "out", progress=False)


def test_an_adapter_for_another_base_is_refused_before_anything_is_written(adapter_models, tmp_path):
    other = random_weights(5)
    other["model.layers.0.mlp.down_proj.weight"] = torch.zeros(64, 96)  # another intermediate size
    models = dict(adapter_models, base=save_checkpoint(tmp_path / "other-base", other, llama_config()))
    with pytest.raises(MergeError, match=r"adapter 'lora-a': ΔW of model.layers.0.mlp.down_proj.weight is "
                                         r"\[64, 128\] but base model 'base' has \[64, 96\]"):
        merges.merge(recipe("ties", ["lora-a", "lora-b"]), models, tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "other-base"]
