"""merges.similarity: the cosine similarity of language vectors equals a direct reference (every
model's vector flattened over the base's tensors, adapters materialised as B·A·scale), for
adapters, full models and a mix; the factored inner products equal the materialised ones; bad
inputs are one-line errors naming the model and tensor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import merges.similarity as similarity_module
from merges.errors import MergeError
from merges.lora import LoraAdapter
from merges.similarity import LowRank, inner_low_rank, inner_low_rank_dense, similarity
from tests.merges.conftest import finetuned, llama_config, load_folder, random_weights, save_checkpoint
from tests.merges.test_lora import peft_adapter


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A base, two full fine-tunes of it, and three PEFT adapters over it (ranks 4, 8, 2; partly
    different target modules)."""
    root = tmp_path_factory.mktemp("similarity")
    base = random_weights(0)
    folders = {
        "base": save_checkpoint(root / "base", base, llama_config()),
        "full-a": save_checkpoint(root / "full-a", finetuned(base, 1), llama_config()),
        "full-b": save_checkpoint(root / "full-b", finetuned(base, 2, scale=0.02), llama_config()),
    }
    folders["lora-a"] = peft_adapter(folders["base"], root / "lora-a", seed=3, rank=4, alpha=8)
    folders["lora-b"] = peft_adapter(folders["base"], root / "lora-b", seed=4, rank=8, alpha=8,
                                     targets=("q_proj", "v_proj", "up_proj"))
    folders["lora-c"] = peft_adapter(folders["base"], root / "lora-c", seed=5, rank=2, alpha=4)
    return folders


def reference_vector(name: str, folder: Path, base_folder: Path) -> torch.Tensor:
    """The language vector written out: every base tensor's ΔW, flattened and concatenated."""
    base = load_folder(base_folder)
    if (folder / "adapter_config.json").is_file():
        adapter = LoraAdapter(name, folder)
        deltas = {}
        for tensor in base:
            if tensor in adapter.modules:
                b, a = adapter.factors(tensor)
                deltas[tensor] = (b.double() @ a.double()) * adapter.modules[tensor].scale
            else:
                deltas[tensor] = torch.zeros(base[tensor].shape, dtype=torch.float64)
    else:
        weights = load_folder(folder)
        deltas = {tensor: weights[tensor].double() - base[tensor].double() for tensor in base}
    return torch.cat([deltas[tensor].reshape(-1) for tensor in sorted(base)])


def reference_cosine(models: dict[str, Path], names: list[str]) -> torch.Tensor:
    vectors = torch.stack([reference_vector(name, models[name], models["base"]) for name in names])
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    return unit @ unit.T


@pytest.mark.parametrize("names", [
    ["lora-a", "lora-b", "lora-c"],            # adapters
    ["full-a", "full-b"],                      # full models
    ["lora-a", "full-a", "lora-b", "full-b"],  # mixed
])
def test_cosine_equals_the_flattened_reference(models, names):
    result = similarity({name: models[name] for name in names}, ("base", models["base"]))
    assert result.names == names
    expected = reference_cosine(models, names)
    # Full models' blocks are multiplied in float32 (summed in float64): far below a cosine's 3 printed places.
    torch.testing.assert_close(result.cosine, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.cosine.diagonal(), torch.ones(len(names), dtype=torch.float64))
    # Not trivially 1 or 0: the vectors differ, and the adapters' share modules.
    off_diagonal = result.cosine[~torch.eye(len(names), dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.999 and off_diagonal.abs().max() > 1e-4


def test_adapters_need_no_base(models):
    names = ["lora-a", "lora-b", "lora-c"]
    with_base = similarity({n: models[n] for n in names}, ("base", models["base"]))
    without = similarity({n: models[n] for n in names})
    torch.testing.assert_close(without.gram, with_base.gram, rtol=1e-12, atol=0)


def test_row_blocks_give_the_same_matrix_as_whole_tensors(models, monkeypatch):
    """A block far smaller than a tensor (and not dividing its rows) gives the same Gram matrix."""
    names = ["lora-a", "full-a", "lora-b", "full-b"]
    inputs = {name: models[name] for name in names}
    whole = similarity(inputs, ("base", models["base"]))
    monkeypatch.setattr(similarity_module, "BLOCK_ELEMENTS", 3 * 64 + 5)  # 3 rows of a 64-wide tensor
    blocked = similarity(inputs, ("base", models["base"]))
    torch.testing.assert_close(blocked.gram, whole.gram, rtol=1e-6, atol=0)  # float32 sums in other blocks
    assert blocked.bytes_read == whole.bytes_read > 0


@pytest.mark.parametrize("out, inner, rank_x, rank_y", [(64, 32, 4, 8), (7, 5, 16, 3), (128, 64, 1, 1)])
def test_low_rank_inner_products_equal_the_materialised_ones(out, inner, rank_x, rank_y):
    generator = torch.Generator().manual_seed(out + rank_x)
    x = LowRank(torch.randn(out, rank_x, generator=generator), torch.randn(rank_x, inner, generator=generator), 2.0)
    y = LowRank(torch.randn(out, rank_y, generator=generator), torch.randn(rank_y, inner, generator=generator), 0.5)
    dense = torch.randn(3, out, inner, generator=generator, dtype=torch.float64)
    x_dense, y_dense = x.dense().double(), y.dense().double()
    assert inner_low_rank(x, y) == pytest.approx(float((x_dense * y_dense).sum()), rel=1e-5)
    torch.testing.assert_close(inner_low_rank_dense(x, dense), (x_dense * dense).sum(dim=(1, 2)), rtol=1e-5, atol=1e-6)


def test_a_full_model_needs_a_base(models):
    with pytest.raises(MergeError, match="'full-a' is a full model: its task vector needs a base model"):
        similarity({"lora-a": models["lora-a"], "full-a": models["full-a"]})


def test_a_model_with_other_shapes_is_named(models, tmp_path):
    wider = finetuned(random_weights(0), 6, extra_rows=2)  # two more vocabulary rows
    folder = save_checkpoint(tmp_path / "wider", wider, llama_config(vocab=130))
    with pytest.raises(MergeError, match=r"model 'wider': tensor lm_head.weight is \[130, 64\] but base model "
                                         r"'base' has \[128, 64\]"):
        similarity({"full-a": models["full-a"], "wider": folder}, ("base", models["base"]))


def test_an_adapter_of_another_shape_is_named(models, tmp_path):
    narrower = {name: tensor[:96] if "up_proj" in name else tensor for name, tensor in random_weights(0).items()}
    other_base = save_checkpoint(tmp_path / "other-base", narrower, llama_config())
    with pytest.raises(MergeError, match=r"adapter 'lora-b': ΔW of model.layers.0.mlp.up_proj.weight is \[128, 64\] "
                                         r"but base model 'other' has \[96, 64\]"):
        similarity({"lora-a": models["lora-a"], "lora-b": models["lora-b"]}, ("other", other_base))


def test_a_model_equal_to_its_base_is_an_error_not_nan(models):
    with pytest.raises(MergeError, match=r"model 'same': its language vector is zero \(it equals base model 'base'\)"):
        similarity({"full-a": models["full-a"], "same": models["base"]}, ("base", models["base"]))


def test_one_model_is_not_a_comparison(models):
    with pytest.raises(MergeError, match="at least two models, got 1"):
        similarity({"lora-a": models["lora-a"]})
