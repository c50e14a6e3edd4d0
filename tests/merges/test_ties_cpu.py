"""The fused CPU kernel for TIES computes exactly what the torch definition (`ties.ties`) does."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from merges.engine import run_merge
from merges.kernels import ties_cpu
from merges.methods.common import MethodParams
from merges.methods.ties import ties

from .conftest import finetuned, load_folder, random_weights, save_checkpoint

HAS_COMPILER = shutil.which(os.environ.get("CC") or "cc") is not None
needs_compiler = pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler: the kernel cannot be built here")


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.view(torch.int16 if tensor.element_size() == 2 else torch.int32)


def checkpoints(shape, models: int, dtype: torch.dtype, seed: int = 0, scale: float = 0.01):
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=generator)
    tuned = [base + scale * torch.randn(shape, generator=generator) for _ in range(models)]
    return base.to(dtype), [t.to(dtype) for t in tuned]


def kernel_merge(base, tensors, params, out_dtype):
    """The kernel's output gathered from the slabs it emits, its counts and its NaN culprit."""
    out = torch.full(base.shape, float("nan"), dtype=out_dtype)
    flat = out.view(-1)

    def emit(first, slab):
        assert slab.dtype == out_dtype and first + slab.numel() <= flat.numel()
        flat[first:first + slab.numel()] = slab

    counts, bad = ties_cpu.merge(base, tensors, params, out_dtype, emit)
    return out, counts, bad


def assert_same_as_torch(base, tensors, params, out_dtype):
    reference = ties(base.float(), tensors, params)
    out, counts, bad = kernel_merge(base, tensors, params, out_dtype)
    assert bad is None
    assert torch.equal(bits(out), bits(reference.tensor.to(out_dtype)))
    assert counts == reference.counts


CASES = {
    "2 models, sum, normalize": dict(weights=(1.0, 1.0), densities=(0.6, 0.6), normalize=True),
    "3 models, weights, lambda": dict(weights=(0.5, 1.0, 2.0), densities=(0.3, 0.5, 0.9), normalize=True,
                                      lambda_=0.7),
    "3 models, count, no normalize": dict(weights=(1.0, 0.3, 1.0), densities=(0.2, 1.0, 0.0),
                                          consensus="count", normalize=False),
    "densities 1 and 0": dict(weights=(1.0, 1.0), densities=(1.0, 0.0), normalize=True),
    # every sum of weights a power of two: the kernel multiplies by the reciprocal instead of dividing
    "2 models, weights 0.5, lambda": dict(weights=(0.5, 0.5), densities=(0.4, 0.7), normalize=True, lambda_=1.3),
    "2 models, one weight not a power of two": dict(weights=(1.0, 0.3), densities=(0.5, 0.5), normalize=True),
    "1 model": dict(weights=(0.7,), densities=(0.5,), normalize=True),
    "5 models, count": dict(weights=(1.0, 0.5, 2.0, 1.0, 0.25), densities=(0.5, 0.3, 0.8, 0.6, 0.2),
                            consensus="count", normalize=True),
}


@needs_compiler
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype,out_dtype", [(torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32),
                                             (torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)])
def test_small_tensors_match_torch(case, dtype, out_dtype):
    params = MethodParams(**CASES[case])
    base, tensors = checkpoints((96, 130), len(params.weights), dtype)
    assert_same_as_torch(base, tensors, params, out_dtype)


@needs_compiler
@pytest.mark.parametrize("slab", [None, 50_021])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_large_tensor_sampled_selection_matches_torch(dtype, slab, monkeypatch):
    # Over ties_cpu.SMALL entries the trim threshold is bracketed by sampled pivots; bfloat16 task
    # vectors take few distinct values, so many entries tie with the threshold and the kernel
    # must keep the same tied entries (the first in index order, across blocks and slabs) as
    # trim_in_place.
    if slab:
        monkeypatch.setattr(ties_cpu, "SLAB", slab)  # many slabs, none a whole number of blocks
    params = MethodParams(weights=(1.0, 0.8, 1.0), densities=(0.6, 0.25, 0.9), normalize=True)
    base, tensors = checkpoints((1024, 700), 3, dtype, seed=1)
    assert base.numel() > ties_cpu.SMALL
    assert_same_as_torch(base, tensors, params, torch.bfloat16)


@needs_compiler
def test_float32_threshold_is_selected_among_few_collected_magnitudes(monkeypatch):
    # Continuous float32 magnitudes rarely tie: the threshold lies strictly between two pivots
    # and only the magnitudes between them (about 1/256 of the entries) are collected.
    collected = []
    monkeypatch.setattr(ties_cpu, "_collect", lambda *args, real=ties_cpu._collect: collected.append(args[-1])
                        or real(*args))
    params = MethodParams(weights=(1.0, 1.0), densities=(0.6, 0.3), normalize=True)
    base, tensors = checkpoints((1024, 600), 2, torch.float32, seed=5)
    assert_same_as_torch(base, tensors, params, torch.float32)
    assert len(collected) == 2 and all(0 < count < base.numel() / 256 for count in collected)


@needs_compiler
@pytest.mark.parametrize("sigmas", [(30.0, 40.0), (-40.0, -30.0), (-40.0, 40.0)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_pivots_that_miss_the_threshold_still_give_the_exact_result(monkeypatch, sigmas, dtype):
    monkeypatch.setattr(ties_cpu, "PIVOT_SIGMAS", sigmas)  # pivots all above, all below, or far around it
    params = MethodParams(weights=(1.0, 1.0), densities=(0.6, 0.4), normalize=True)
    base, tensors = checkpoints((1024, 400), 2, dtype, seed=2)
    assert_same_as_torch(base, tensors, params, torch.bfloat16)


@needs_compiler
@pytest.mark.parametrize("consensus", ["sum", "count"])
def test_tie_budgets_of_several_models_running_out_in_one_block_match_torch(consensus):
    # Task vectors of a few discrete values: most entries tie with each trim threshold, and in a
    # tensor of one block every model's budget of kept ties runs out inside that block.
    generator = torch.Generator().manual_seed(6)
    base = torch.zeros(1000, dtype=torch.bfloat16)
    tensors = [(torch.randint(-2, 3, (1000,), generator=generator) * 0.25).to(torch.bfloat16) for _ in range(3)]
    params = MethodParams(weights=(1.0, 1.0, 1.0), densities=(0.3, 0.5, 0.65), consensus=consensus, normalize=True)
    assert_same_as_torch(base, tensors, params, torch.bfloat16)


@needs_compiler
def test_all_zero_task_vectors_match_torch():
    # Every magnitude ties at 0: the first k entries are "kept" (as zeros), none counts as non-zero.
    base, _ = checkpoints((700, 500), 1, torch.bfloat16, seed=3)
    params = MethodParams(weights=(1.0, 1.0), densities=(0.5, 0.5), normalize=True)
    assert_same_as_torch(base, [base.clone(), base.clone()], params, torch.bfloat16)


@needs_compiler
@pytest.mark.parametrize("culprit", [0, 1, 2])
@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_reports_the_first_input_that_is_not_finite(culprit, poison):
    base, tensors = checkpoints((600, 500), 2, torch.bfloat16, seed=4)
    inputs = [base, *tensors]
    inputs[culprit].view(-1)[123_457] = poison
    if culprit < 2:
        inputs[2].view(-1)[5] = poison  # a later input with a NaN does not hide the earlier one
    _, _, bad = kernel_merge(inputs[0], inputs[1:], MethodParams(weights=(1.0, 1.0), densities=(0.5, 0.5)),
                             torch.bfloat16)
    assert bad == culprit


@needs_compiler
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_finite_inputs_that_overflow_are_reported_as_the_merge_s_not_an_input_s(out_dtype):
    base, tensors = checkpoints((300, 10), 2, torch.float32, seed=7)
    base[0, :5], tensors[0][0, :5] = -3e38, 3e38  # the task vector overflows to infinity there
    params = MethodParams(weights=(1.0, 1.0), densities=(1.0, 0.5), normalize=True)
    assert not torch.isfinite(ties(base, tensors, params).tensor).all()
    _, _, bad = kernel_merge(base, tensors, params, out_dtype)
    assert bad == 3  # len(tensors) + 1: every input is finite


@needs_compiler
def test_a_float32_result_that_rounds_to_infinity_in_bfloat16_is_reported():
    base, tensors = checkpoints((300, 10), 1, torch.float32, seed=7)
    base[1, 3], tensors[0][1, 3] = 3.4e38, 3.4e38  # no task vector: the merged value is the base's
    params = MethodParams(weights=(1.0,), densities=(1.0,))
    assert torch.isfinite(ties(base, tensors, params).tensor).all()
    assert not torch.isfinite(ties(base, tensors, params).tensor.to(torch.bfloat16)).all()
    assert kernel_merge(base, tensors, params, torch.float32)[2] is None
    assert kernel_merge(base, tensors, params, torch.bfloat16)[2] == 2


@needs_compiler
def test_supports_only_the_dtypes_it_compiles_for():
    assert ties_cpu.supports([torch.bfloat16] * 3, torch.bfloat16)
    assert ties_cpu.supports([torch.float32, torch.bfloat16, torch.bfloat16], torch.float32)
    assert not ties_cpu.supports([torch.bfloat16, torch.bfloat16, torch.float32], torch.bfloat16)
    assert not ties_cpu.supports([torch.float16] * 3, torch.float16)
    assert not ties_cpu.supports([torch.float64] * 3, torch.float32)
    assert ties_cpu.supports([torch.bfloat16] * 17, torch.bfloat16)  # 16 models
    assert not ties_cpu.supports([torch.bfloat16] * 18, torch.bfloat16)


@needs_compiler
def test_engine_merges_bf16_checkpoints_with_the_kernel_as_torch_would(tmp_path, monkeypatch):
    base = random_weights(0, dtype=torch.bfloat16)
    ct = {name: tensor.to(torch.bfloat16) for name, tensor in finetuned(base, 2, extra_rows=16).items()}
    models = {"base": base, "sft": finetuned(base, 1), "ct": ct}
    folders = {name: save_checkpoint(tmp_path / name, tensors) for name, tensors in models.items()}
    recipe = {"merge_method": "ties", "base_model": "base", "dtype": "bfloat16", "parameters": {"normalize": True},
              "models": [{"model": "sft", "parameters": {"weight": 1.0, "density": 0.5}},
                         {"model": "ct", "parameters": {"weight": 0.7, "density": 0.3}}]}
    calls = []
    monkeypatch.setattr(ties_cpu, "merge", lambda *args, real=ties_cpu.merge: calls.append(1) or real(*args))
    merged = load_folder(run_merge(recipe, folders.get, tmp_path / "out", progress=False).path)
    assert len(calls) == len(base)  # every tensor went through the kernel
    params = MethodParams(weights=(1.0, 0.7), densities=(0.5, 0.3), normalize=True)
    for name, tensor in base.items():
        rows = tensor.shape[0]
        expected = ties(tensor.float(), [models["sft"][name], models["ct"][name][:rows]], params).tensor
        if models["ct"][name].shape[0] > rows:  # extra vocabulary rows come from ct unchanged
            expected = torch.cat([expected, models["ct"][name][rows:].float()])
        assert torch.equal(bits(merged[name]), bits(expected.to(torch.bfloat16))), name


@pytest.fixture
def fresh_kernel(tmp_path, monkeypatch):
    """The kernel looked up anew, with an empty cache; looked up anew again afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ties_cpu._load_library.cache_clear()
    yield tmp_path / "cache" / "merges"
    ties_cpu._load_library.cache_clear()


@needs_compiler
def test_kernel_is_compiled_once_into_the_cache_and_then_loaded(fresh_kernel, monkeypatch):
    assert ties_cpu.library() is not None
    assert [path.suffix for path in fresh_kernel.iterdir()] == [".so"]  # no scratch left behind
    ties_cpu._load_library.cache_clear()
    monkeypatch.setattr(ties_cpu.subprocess, "run", lambda *args, **kwargs: pytest.fail("compiled again"))
    assert ties_cpu.library() is not None


@pytest.mark.parametrize("compiler", ["no-such-compiler", "false"])
def test_without_a_working_compiler_ties_runs_on_torch_with_a_warning(fresh_kernel, monkeypatch, tmp_path,
                                                                     compiler):
    monkeypatch.setenv("CC", compiler)
    with pytest.warns(RuntimeWarning, match=f"cannot compile the CPU kernel for TIES.*{compiler}.*torch"):
        assert not ties_cpu.supports([torch.bfloat16] * 3, torch.bfloat16)
    base = random_weights(0, dtype=torch.bfloat16)
    sft, ct = finetuned(base, 1), finetuned(base, 2)
    folders = {name: save_checkpoint(tmp_path / name, tensors)
               for name, tensors in {"base": base, "sft": sft, "ct": ct}.items()}
    recipe = {"merge_method": "ties", "base_model": "base", "dtype": "bfloat16", "parameters": {"normalize": True},
              "models": [{"model": "sft", "parameters": {"weight": 1.0, "density": 0.5}},
                         {"model": "ct", "parameters": {"weight": 1.0, "density": 0.5}}]}
    merged = load_folder(run_merge(recipe, folders.get, tmp_path / "out", progress=False).path)
    params = MethodParams(weights=(1.0, 1.0), densities=(0.5, 0.5), normalize=True)
    for name, tensor in base.items():
        expected = ties(tensor.float(), [sft[name], ct[name]], params).tensor.to(torch.bfloat16)
        assert torch.equal(bits(merged[name]), bits(expected)), name
    assert not fresh_kernel.exists() or not any(fresh_kernel.iterdir())  # nothing half-built left
