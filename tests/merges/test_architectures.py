"""Real-architecture shapes: grouped-query attention merges and loads in transformers; the paper's
Llama-2-7B merges plan as expected (tensors, output size, which backend, working memory)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch

from harness.registry import load_registry
from merges import run_merge
from merges.engine import DEFAULT_MEMORY_BUDGET, Merge, estimated_peak_bytes, working_bytes
from merges.io import DTYPE_CODES
from merges.methods.common import MethodParams
from merges.methods.ties import ties
from merges.recipe import load_recipe

from .conftest import llama_config, load_folder, save_checkpoint
from .test_ties_cpu import needs_compiler
from .test_tied_embeddings import RECIPES


def llama_shapes(hidden: int, intermediate: int, layers: int, vocab: int, heads: int,
                 kv_heads: int) -> dict[str, tuple[int, ...]]:
    """The tensors of a LlamaForCausalLM with untied embeddings, in transformers' names."""
    kv = hidden // heads * kv_heads  # grouped-query attention: k and v have fewer heads than q
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (hidden, hidden), p + "self_attn.k_proj.weight": (kv, hidden),
            p + "self_attn.v_proj.weight": (kv, hidden), p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (intermediate, hidden), p + "mlp.up_proj.weight": (intermediate, hidden),
            p + "mlp.down_proj.weight": (hidden, intermediate),
            p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
        })
    shapes.update({"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)})
    return shapes


# ---- grouped-query attention --------------------------------------------------------------------

GQA = dict(hidden=64, intermediate=128, layers=2, vocab=128, heads=8, kv_heads=2)


@pytest.fixture(scope="module")
def gqa_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gqa")
    config = llama_config(num_attention_heads=GQA["heads"], num_key_value_heads=GQA["kv_heads"])
    generator = torch.Generator().manual_seed(0)
    base = {name: torch.randn(shape, generator=generator) * 0.02 for name, shape in llama_shapes(**GQA).items()}
    models = {"base": save_checkpoint(root / "base", base, config)}
    for name in ("sft", "ct"):
        models[name] = save_checkpoint(root / name, {key: value + torch.randn(value.shape, generator=generator) * 0.01
                                                     for key, value in base.items()}, config)
    return models


@pytest.mark.parametrize("method", RECIPES)
def test_grouped_query_attention_merges_and_loads_in_transformers(method, gqa_models, tmp_path):
    from transformers import AutoModelForCausalLM

    out = run_merge(RECIPES[method], gqa_models.get, tmp_path / "out", progress=False).path
    merged = load_folder(out)
    assert merged["model.layers.0.self_attn.k_proj.weight"].shape == (16, 64)  # 2 of 8 heads of 8 dims
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.config.num_key_value_heads == 2
    state = loaded.state_dict()
    assert sorted(state) == sorted(merged)
    assert all(torch.equal(state[name], merged[name]) for name in merged)
    with torch.no_grad():
        logits = loaded(torch.tensor([[1, 5, 9, 3]])).logits
    assert logits.shape == (1, 4, 128) and torch.isfinite(logits).all()


# ---- the paper's Llama-2-7B, planned from headers ----------------------------------------------

LLAMA_2_7B = dict(hidden=4096, intermediate=11008, layers=32, vocab=32000, heads=32, kv_heads=32)
LLAMA_2_7B_PARAMS = 6_738_415_616  # as the model card counts them
EMBEDDING_ENTRIES = 32000 * 4096


def save_unfilled_checkpoint(folder: Path, shapes: dict, dtype: torch.dtype) -> Path:
    """A safetensors checkpoint whose data is a hole in a sparse file (it reads as zeros): a 7B
    model's headers, at no memory or disk cost. `fill` writes real values into one tensor."""
    folder.mkdir(parents=True)
    header, offset = {}, 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(folder / "model.safetensors", "wb") as file:
        file.write(struct.pack("<Q", len(encoded)) + encoded)
        file.truncate(8 + len(encoded) + offset)
    (folder / "config.json").write_text(json.dumps(llama_config(
        32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=32, dtype=str(dtype).removeprefix("torch."))))
    return folder


def fill(folder: Path, name: str, values: torch.Tensor) -> None:
    path = folder / "model.safetensors"
    with open(path, "r+b") as file:
        length = struct.unpack("<Q", file.read(8))[0]
        start = json.loads(file.read(length))[name]["data_offsets"][0]
        file.seek(8 + length + start)
        file.write(values.contiguous().view(torch.uint8).numpy().tobytes())


class CapturingWriter:
    """Stands in for the engine's ShardedWriter: keeps the parts of a tensor by byte offset."""

    cancelled = False

    def __init__(self):
        self.parts: dict[int, torch.Tensor] = {}

    def write(self, name: str, tensor: torch.Tensor, byte_offset: int = 0) -> None:
        self.parts[byte_offset] = tensor.clone()


@pytest.fixture(scope="module")
def paper_ties_recipe():
    return load_registry("paper").resolve("ties-tam").recipe


def plan_7b(root: Path, recipe: dict, dtype: torch.dtype) -> tuple[Merge, dict[str, Path]]:
    shapes = llama_shapes(**LLAMA_2_7B)
    folders = {name: save_unfilled_checkpoint(root / name, shapes, dtype) for name in ("base", "sft-flan", "ct-tam")}
    return Merge(load_recipe(recipe), folders.get, "cpu", None), folders


@needs_compiler
def test_llama_2_7b_ties_plan_in_bfloat16_runs_on_the_kernel_within_the_budget(paper_ties_recipe, tmp_path):
    merge, folders = plan_7b(tmp_path, paper_ties_recipe, torch.bfloat16)
    assert len(merge.jobs) == 291
    assert sum(job.out.nbytes for job in merge.jobs) == 2 * LLAMA_2_7B_PARAMS
    assert {job.name: job.out.shape for job in merge.jobs} == llama_shapes(**LLAMA_2_7B)
    assert all(job.cpu_kernel and job.out.dtype == torch.bfloat16 for job in merge.jobs)
    # The kernel's working set is the inputs it maps: 3 models x 2 bytes per entry.
    largest = max(merge.jobs, key=lambda job: working_bytes(merge, job))
    assert largest.name in ("model.embed_tokens.weight", "lm_head.weight")
    assert working_bytes(merge, largest) == 3 * 2 * EMBEDDING_ENTRIES  # 0.79 GB
    assert estimated_peak_bytes(merge, threads=1) == 3 * 2 * EMBEDDING_ENTRIES
    assert estimated_peak_bytes(merge, threads=4) == DEFAULT_MEMORY_BUDGET  # 1.5 GB for a 13.5 GB merge

    # One 4096 x 4096 tensor really merged through the plan's job, as the definition merges it.
    name = "model.layers.0.self_attn.q_proj.weight"
    generator = torch.Generator().manual_seed(0)
    values = {model: (torch.randn(4096, 4096, generator=generator) * 0.02).to(torch.bfloat16) for model in folders}
    for model, tensor in values.items():
        fill(folders[model], name, tensor)
    writer = CapturingWriter()
    merge.merge_into(next(job for job in merge.jobs if job.name == name), writer)
    merged = torch.cat([writer.parts[at] for at in sorted(writer.parts)]).reshape(4096, 4096)
    expected = ties(values["base"].float(), [values["sft-flan"], values["ct-tam"]],
                    MethodParams(weights=(1.0, 1.0), densities=(0.6, 0.6), normalize=True)).tensor
    assert torch.equal(merged, expected.to(torch.bfloat16))


def test_llama_2_7b_ties_plan_in_float16_falls_back_to_torch_with_its_memory(paper_ties_recipe, tmp_path):
    # Llama-2-7b-hf ships float16, which the CPU kernel does not take: TIES runs as torch
    # operations, whose estimate is 4 bytes x (2 per input model + 5) per entry.
    merge, _ = plan_7b(tmp_path, paper_ties_recipe, torch.float16)
    assert not any(job.cpu_kernel for job in merge.jobs)
    assert sum(job.out.nbytes for job in merge.jobs) == 2 * LLAMA_2_7B_PARAMS
    embedding = 4 * (2 * 2 + 5) * EMBEDDING_ENTRIES  # 4.7 GB: over the budget, so it runs alone
    assert estimated_peak_bytes(merge, threads=4) == embedding > DEFAULT_MEMORY_BUDGET
