"""A merge written as a PEFT LoRA adapter (`output: {format: adapter, rank: R}`): PEFT loads it,
at full rank it reproduces the full-model merge, at a lower rank the reported reconstruction
error is the one PEFT's weights have; what an adapter cannot carry is refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

import merges
from merges.errors import MergeError
from merges.recipe import load_recipe
from tests.merges.conftest import llama_config, load_folder, save_checkpoint

peft = pytest.importorskip("peft")
from tests.merges.test_adapter_merge import ADAPTERS, adapter_models, recipe  # noqa: E402,F401  (fixture)

FULL_RANK = 64  # hidden size of the tiny models: every adapted module is 64 x 64, 128 x 64 or 64 x 128


def peft_weights(base_dir, adapter_dir) -> dict[str, torch.Tensor]:
    """The weights PEFT runs with: the adapter loaded over the base and merged in."""
    from transformers import LlamaForCausalLM
    model = peft.PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(str(base_dir)), str(adapter_dir))
    return {k: v.detach() for k, v in model.merge_and_unload().state_dict().items()}


def adapter_recipe(method: str, rank: int, **parameters) -> dict:
    return recipe(method, list(ADAPTERS), **parameters) | {"output": {"format": "adapter", "rank": rank}}


@pytest.mark.parametrize("method, parameters", [("ties", {}), ("knots_dare_ties", {"seed": 3}), ("linear", {})])
def test_a_full_rank_adapter_output_reproduces_the_full_model_merge(adapter_models, tmp_path, method, parameters):
    as_adapter = merges.merge(adapter_recipe(method, FULL_RANK, **parameters), adapter_models, tmp_path / "adapter",
                              progress=False).path
    as_model = merges.merge(recipe(method, list(ADAPTERS), **parameters), adapter_models, tmp_path / "model",
                            progress=False).path
    config = json.loads((as_adapter / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", FULL_RANK, FULL_RANK)
    assert config["target_modules"] == ["down_proj", "k_proj", "q_proj", "up_proj", "v_proj"]
    assert config["base_model_name_or_path"] == str(adapter_models["base"])
    assert not (as_adapter / "config.json").exists() and (as_adapter / "merge_recipe.yaml").is_file()
    got, expected = peft_weights(adapter_models["base"], as_adapter), load_folder(as_model)
    for tensor, value in expected.items():
        torch.testing.assert_close(got[tensor], value, rtol=1e-5, atol=2e-6, msg=tensor)
    report = json.loads((as_adapter / "adapter_reconstruction.json").read_text())
    assert report["rank"] == FULL_RANK and report["overall"] < 1e-5 and len(report["modules"]) == 2 * 5


def test_a_low_rank_output_reports_the_error_its_weights_have(adapter_models, tmp_path):
    rank = 4
    as_adapter = merges.merge(adapter_recipe("ties", rank), adapter_models, tmp_path / "adapter", progress=False).path
    as_model = load_folder(merges.merge(recipe("ties", list(ADAPTERS)), adapter_models, tmp_path / "model",
                                        progress=False).path)
    base, got = load_folder(adapter_models["base"]), peft_weights(adapter_models["base"], as_adapter)
    report = json.loads((as_adapter / "adapter_reconstruction.json").read_text())
    residuals, norms = 0.0, 0.0
    for module, error in report["modules"].items():
        tensor = module + ".weight"
        delta = as_model[tensor].double() - base[tensor].double()
        residual = torch.linalg.norm(delta - (got[tensor].double() - base[tensor].double()))
        assert error == pytest.approx(float(residual / torch.linalg.norm(delta)), rel=1e-3), module
        assert 0.05 < error < 1  # a TIES merge of adapters is not of rank 4
        residuals, norms = residuals + float(residual) ** 2, norms + float(torch.linalg.norm(delta)) ** 2
    assert report["overall"] == pytest.approx((residuals / norms) ** 0.5, rel=1e-3)


def test_what_an_adapter_cannot_carry_is_refused_in_one_line(adapter_models, tmp_path):
    with_full_model = recipe("ties", ["lora-a", "full-lora-b"]) | {"output": {"format": "adapter", "rank": 8}}
    changed = load_folder(adapter_models["full-lora-b"])
    changed["model.norm.weight"] = changed["model.norm.weight"] + 0.1  # no adapter changes norms
    models = dict(adapter_models, **{"full-lora-b": save_checkpoint(tmp_path / "changed", changed, llama_config())})
    with pytest.raises(MergeError, match=r"output.format adapter: tensor model.norm.weight would change \(by up to "
                                         r"0.1\) but no input adapter adapts it") as error:
        merges.merge(with_full_model, models, tmp_path / "out", progress=False)
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()
    with pytest.raises(MergeError, match=r"output.rank 65 exceeds the rank of module model.layers.0.mlp.down_proj "
                                         r"\(64 x 128, at most 64\)"):
        merges.merge(adapter_recipe("ties", 65), adapter_models, tmp_path / "out", progress=False)
    no_adapters = recipe("ties", ["full-lora-a", "full-lora-b"]) | {"output": {"format": "adapter", "rank": 8}}
    with pytest.raises(MergeError, match="no input model is a LoRA adapter"):
        merges.merge(no_adapters, adapter_models, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["changed"]


@pytest.mark.parametrize("output, message", [
    ({"format": "gguf"}, "output.format must be model or adapter, got 'gguf'"),
    ({"format": "adapter"}, "output.rank must be a positive integer"),
    ({"format": "adapter", "rank": 0}, "output.rank must be a positive integer"),
    ({"format": "adapter", "rank": True}, "output.rank must be a positive integer"),
    ({"format": "model", "rank": 8}, "output.rank is only for output.format adapter"),
    ({"format": "adapter", "rank": 8, "alpha": 8}, r"unknown key\(s\) \['alpha'\] in output"),
    ("adapter", "output must be a mapping"),
])
def test_bad_output_keys_are_named(output, message):
    with pytest.raises(MergeError, match=message):
        load_recipe(recipe("ties", ["lora-a"]) | {"output": output})


def test_output_enters_the_canonical_form_only_when_it_is_an_adapter():
    plain = load_recipe(recipe("ties", ["lora-a"]))
    assert load_recipe(recipe("ties", ["lora-a"]) | {"output": {"format": "model"}}).canonical_json() == \
        plain.canonical_json()
    assert "output" not in plain.to_dict()
    adapter = load_recipe(recipe("ties", ["lora-a"]) | {"output": {"format": "adapter", "rank": 16}})
    assert adapter.to_dict()["output"] == {"format": "adapter", "rank": 16}
    assert load_recipe(adapter.to_dict()) == adapter
    linear = {"merge_method": "linear", "models": [{"model": "a"}, {"model": "b"}],
              "output": {"format": "adapter", "rank": 4}}
    with pytest.raises(MergeError, match="output.format adapter needs base_model"):
        load_recipe(linear)


def test_over_a_bfloat16_base_the_language_vectors_are_not_rounded(adapter_models, tmp_path):
    """Adapters are read in float32 over a bf16 base: the adapter output's ΔW is the one over a
    float32 base (not base + ΔW rounded to bf16), and a full-model output is bf16 throughout."""
    base = {name: tensor.to(torch.bfloat16) for name, tensor in load_folder(adapter_models["base"]).items()}
    models = dict(adapter_models, base=save_checkpoint(tmp_path / "bf16-base", base, llama_config(dtype="bfloat16")))
    over_bf16 = merges.merge(adapter_recipe("ties", FULL_RANK), models, tmp_path / "bf16", progress=False).path
    over_fp32 = merges.merge(adapter_recipe("ties", FULL_RANK), adapter_models, tmp_path / "fp32", progress=False).path
    got, expected = load_folder(over_bf16), load_folder(over_fp32)
    for key in (k for k in expected if k.endswith("lora_B.weight")):
        a_key = key.replace("lora_B", "lora_A")
        torch.testing.assert_close(got[key] @ got[a_key], expected[key] @ expected[a_key], rtol=1e-4, atol=1e-6)
    full = merges.merge(recipe("ties", list(ADAPTERS)), models, tmp_path / "full", progress=False).path
    assert {tensor.dtype for tensor in load_folder(full).values()} == {torch.bfloat16}
