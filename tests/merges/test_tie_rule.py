"""TIES's trim where several entries tie with the threshold magnitude (common with Adam updates
and bfloat16): exactly k entries are kept, the first k by descending magnitude with the index
breaking ties. The same set in torch (whatever the thread count or selection path), in the fused
CPU kernel and in TIES-SV."""

from __future__ import annotations

import pytest
import torch

from merges.methods.common import MethodParams
from merges.methods.ties import EXACT_SELECTION_LIMIT, ties, trim_in_place
from merges.methods.ties_sv import ties_sv

from .test_ties_cpu import kernel_merge, needs_compiler


def tied_task_vector(numel: int, seed: int) -> torch.Tensor:
    """Entries in {0, +-0.25, +-0.5, +-0.75}: thousands share each magnitude."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-3, 4, (numel,), generator=generator) * 0.25


def rule_kept(delta: torch.Tensor, density: float) -> torch.Tensor:
    """The rule, written independently of trim_in_place: a stable descending sort keeps index
    order among equal magnitudes, and its first k = max(1, int(density * numel)) are kept."""
    k = max(1, int(density * delta.numel()))
    order = torch.sort(delta.abs().reshape(-1), descending=True, stable=True).indices
    kept = torch.zeros(delta.numel(), dtype=torch.bool)
    kept[order[:k]] = True
    return kept.reshape(delta.shape)


def assert_threshold_is_split(delta: torch.Tensor, density: float) -> None:
    """The case under test: some but not all entries at the threshold magnitude are kept."""
    kept = rule_kept(delta, density)
    threshold = delta.abs()[kept].min()
    at_threshold = delta.abs() == threshold
    assert threshold > 0 and 0 < int((kept & at_threshold).sum()) < int(at_threshold.sum())


@pytest.mark.parametrize("numel", [5_000, EXACT_SELECTION_LIMIT + 300_001])  # kthvalue / sampled band
@pytest.mark.parametrize("density", [0.3, 0.55])
def test_torch_trim_keeps_exactly_the_rule_s_set_at_any_thread_count(numel, density):
    delta = tied_task_vector(numel, seed=1)
    assert_threshold_is_split(delta, density)
    expected = rule_kept(delta, density)
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            trimmed = trim_in_place(delta.clone(), density)
            assert torch.equal(trimmed != 0, expected & (delta != 0))
            assert torch.equal(trimmed[expected], delta[expected])
    finally:
        torch.set_num_threads(threads)


@needs_compiler
@pytest.mark.parametrize("shape", [(70, 97), (1024, 300)])  # selection over all entries / sampled pivots
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cpu_kernel_keeps_exactly_the_rule_s_set(shape, dtype):
    # One model, weight 1, no normalisation: the merge is base + the trimmed task vector, so the
    # kept entries are where the output differs from the base. Every value is exact in bfloat16.
    generator = torch.Generator().manual_seed(2)
    base = (torch.randint(-64, 64, shape, generator=generator) / 16).to(dtype)
    delta = tied_task_vector(base.numel(), seed=3).reshape(shape)
    model = (base.float() + delta).to(dtype)
    for density in (0.3, 0.55):
        assert_threshold_is_split(delta, density)
        params = MethodParams(weights=(1.0,), densities=(density,))
        out, counts, bad = kernel_merge(base, [model], params, dtype)
        assert bad is None
        assert torch.equal(out.float() - base.float(), torch.where(rule_kept(delta, density), delta, 0.0))
        assert counts[0].trimmed == int((rule_kept(delta, density) & (delta != 0)).sum())
        assert torch.equal(out, ties(base.float(), [model], params).tensor.to(dtype))


def test_ties_sv_trims_by_the_same_rule():
    generator = torch.Generator().manual_seed(4)
    base = torch.randint(-64, 64, (3000,), generator=generator) / 16
    deltas = [tied_task_vector(3000, seed) for seed in (5, 6)]
    densities = (0.3, 0.55)
    for delta, density in zip(deltas, densities):
        assert_threshold_is_split(delta, density)
    params = MethodParams(weights=(1.0, 1.0), densities=densities, normalize=True, slack=0.0, protect=0)
    sv = ties_sv(base, [base + d for d in deltas], params)
    plain = ties(base, [base + d for d in deltas], params)
    assert torch.equal(sv.tensor, plain.tensor)
    assert [c.trimmed for c in sv.counts] == [int((rule_kept(d, p) & (d != 0)).sum())
                                             for d, p in zip(deltas, densities)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")
@pytest.mark.parametrize("numel", [5_000, EXACT_SELECTION_LIMIT + 300_001])
def test_cuda_trim_keeps_the_same_set(numel):
    delta = tied_task_vector(numel, seed=1)
    trimmed = trim_in_place(delta.to("cuda"), 0.3).cpu()
    assert torch.equal(trimmed, torch.where(rule_kept(delta, 0.3), delta, 0.0))
