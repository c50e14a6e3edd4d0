"""merges.lora reads real PEFT adapters: ΔW equals what PEFT itself merges into the weights, and
every LoRA variant the formula does not cover is refused in one line naming the setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merges.errors import MergeError
from merges.lora import LoraAdapter, is_adapter_folder, materialise
from tests.merges.conftest import llama_config, llama_shapes, random_weights, save_checkpoint

peft = pytest.importorskip("peft")


def peft_adapter(base_dir: Path, out: Path, seed: int, rank: int = 4, alpha: float = 8,
                 targets=("q_proj", "v_proj", "down_proj"), **options) -> Path:
    """A real PEFT LoRA adapter over `base_dir` with random (non-zero) B factors, saved by PEFT."""
    from transformers import LlamaForCausalLM
    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(str(base_dir))
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, **options)
    wrapped = peft.get_peft_model(model, config)
    for name, parameter in wrapped.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    wrapped.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("base"), random_weights(0), llama_config())


def peft_merged_weights(base_dir: Path, adapter_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import LlamaForCausalLM
    model = peft.PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(str(base_dir)), str(adapter_dir))
    return {k: v.detach() for k, v in model.merge_and_unload().state_dict().items()}


def test_delta_equals_peft_merge(base_dir, tmp_path):
    adapter_dir = peft_adapter(base_dir, tmp_path / "a", seed=1, rank=4, alpha=8)
    adapter = LoraAdapter("a", adapter_dir)
    assert is_adapter_folder(adapter_dir)
    assert adapter.base_model == str(base_dir)
    expected = peft_merged_weights(base_dir, adapter_dir)
    base = load_file(str(base_dir / "model.safetensors"))
    assert len(adapter.modules) == 3 * 2
    for target in adapter.modules:
        assert adapter.modules[target].scale == 2.0
        torch.testing.assert_close(materialise(base[target], adapter.delta(target)), expected[target],
                                   rtol=0, atol=1e-6)
    untouched = set(base) - set(adapter.modules)
    assert all(torch.equal(base[name], expected[name]) for name in untouched)


def test_rank_pattern_scales_by_each_modules_rank(base_dir, tmp_path):
    adapter_dir = peft_adapter(base_dir, tmp_path / "a", seed=2, rank=4, alpha=16, rank_pattern={"v_proj": 8})
    adapter = LoraAdapter("a", adapter_dir)
    v_proj = adapter.modules["model.layers.0.self_attn.v_proj.weight"]
    assert (v_proj.rank, v_proj.scale) == (8, 2.0)
    expected = peft_merged_weights(base_dir, adapter_dir)
    base = load_file(str(base_dir / "model.safetensors"))
    torch.testing.assert_close(materialise(base[v_proj.target], adapter.delta(v_proj.target)),
                               expected[v_proj.target], rtol=0, atol=1e-6)


@pytest.mark.parametrize("setting, value, words", [
    ("use_dora", True, "DoRA"), ("use_rslora", True, "rsLoRA"), ("bias", "all", "trained biases"),
    ("alpha_pattern", {"q_proj": 4}, "alpha_pattern"), ("fan_in_fan_out", True, "fan_in_fan_out"),
    ("modules_to_save", ["lm_head"], "modules_to_save"), ("peft_type", "IA3", "only LoRA"),
    ("lora_alpha", 0, "positive"),
])
def test_variants_are_refused_naming_the_setting(base_dir, tmp_path, setting, value, words):
    adapter_dir = peft_adapter(base_dir, tmp_path / "a", seed=3)
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config[setting] = value
    config_path.write_text(json.dumps(config))
    with pytest.raises(MergeError, match=words) as error:
        LoraAdapter("lang-a", adapter_dir)
    assert "'lang-a'" in str(error.value) and "\n" not in str(error.value)


def test_damaged_factors_are_refused(base_dir, tmp_path):
    adapter_dir = peft_adapter(base_dir, tmp_path / "a", seed=4)
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    b_key = next(k for k in weights if k.endswith("lora_B.weight"))
    save_file({k: v for k, v in weights.items() if k != b_key}, str(adapter_dir / "adapter_model.safetensors"))
    with pytest.raises(MergeError, match="no matching .*lora_B"):
        LoraAdapter("a", adapter_dir)
    weights["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = torch.ones(64)
    save_file(weights, str(adapter_dir / "adapter_model.safetensors"))
    with pytest.raises(MergeError, match="DoRA"):
        LoraAdapter("a", adapter_dir)
    (adapter_dir / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(MergeError, match="unreadable safetensors"):
        LoraAdapter("a", adapter_dir)


def test_adapter_for_another_shape_is_refused(base_dir, tmp_path):
    adapter = LoraAdapter("a", peft_adapter(base_dir, tmp_path / "a", seed=5))
    adapter.check_base(llama_shapes(), "base")
    shapes = dict(llama_shapes())
    shapes["model.layers.1.mlp.down_proj.weight"] = (64, 256)
    with pytest.raises(MergeError, match=r"down_proj.weight is \[64, 128\] but base model 'base' has \[64, 256\]"):
        adapter.check_base(shapes, "base")
    del shapes["model.layers.0.self_attn.q_proj.weight"]
    with pytest.raises(MergeError, match="q_proj.weight, which base model 'base' does not have"):
        adapter.check_base(shapes, "base")
