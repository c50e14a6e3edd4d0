"""KnOTS against a small independent reference: the SVD of the stacked task vectors computed
directly (float64), TIES / DARE-TIES written out plainly on the per-model parts Σ V_i^T, mapped
back through U. Both SVD routes (full, and the sketch used when a rank bound is known) agree."""

from __future__ import annotations

import pytest
import torch

from merges.methods import METHODS, MethodParams
from merges.methods.ties import ties

OUT, IN, RANKS = 48, 40, (3, 4, 2)


def low_rank_models(seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """A base, and models base + ΔW_i with ΔW_i of rank RANKS[i] (the exact ΔWs in float64)."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(OUT, IN, generator=generator, dtype=torch.float64) * 0.02
    deltas = [torch.randn(OUT, r, generator=generator, dtype=torch.float64)
              @ torch.randn(r, IN, generator=generator, dtype=torch.float64) * 0.01 for r in RANKS]
    return base, deltas, [(base + delta).float() for delta in deltas]


def reference_parts(deltas: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    u, s, vh = torch.linalg.svd(torch.cat(deltas, dim=1), full_matrices=False)
    keep = s > 1e-9 * s[0]
    assert int(keep.sum()) == sum(RANKS)  # the joint column space of independent random ΔWs
    parts = (torch.diag(s[keep]) @ vh[keep]).split(IN, dim=1)
    return u[:, keep], list(parts)


def reference_disjoint_mean(kept: list[torch.Tensor], weights, normalize: bool, lambda_: float) -> torch.Tensor:
    weighted = torch.stack([w * part for w, part in zip(weights, kept)])
    elected = torch.where(weighted.sum(0) >= 0, 1.0, -1.0)
    agree = torch.sign(weighted) == elected
    total = (weighted * agree).sum(0)
    if normalize:
        divisor = (agree * torch.tensor(weights, dtype=total.dtype).reshape(-1, 1, 1)).sum(0)
        total = total / torch.where(divisor == 0, 1.0, divisor)
    return lambda_ * total


def reference_trim(part: torch.Tensor, density: float) -> torch.Tensor:
    k = int(density * part.numel())
    threshold = part.abs().flatten().sort(descending=True).values[k - 1]
    return part * (part.abs() >= threshold)


def reference_drop(part: torch.Tensor, density: float, seed: int) -> torch.Tensor:
    keep = torch.rand(part.shape, generator=torch.Generator().manual_seed(seed)) < density
    return part * keep / density


PARAMS = dict(weights=(1.0, 0.6, 0.8), densities=(0.5, 0.7, 0.4), lambda_=0.9, seeds=(11, 12, 13))


@pytest.mark.parametrize("rank_bound", [None, sum(RANKS)])
def test_knots_ties_matches_the_reference(rank_bound):
    base, deltas, models = low_rank_models()
    u, parts = reference_parts(deltas)
    kept = [reference_trim(part, d) for part, d in zip(parts, PARAMS["densities"])]
    expected = base + u @ reference_disjoint_mean(kept, PARAMS["weights"], True, PARAMS["lambda_"])
    params = MethodParams(**PARAMS, normalize=True, rank_bound=rank_bound)
    got = METHODS["knots_ties"].function(base.float(), models, params).tensor
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-6)
    plain = ties(base.float(), models, params).tensor
    assert (plain - got).abs().max() > 1e-3  # KnOTS is not TIES on the raw entries


@pytest.mark.parametrize("rank_bound", [None, sum(RANKS)])
def test_knots_dare_ties_matches_the_reference(rank_bound):
    base, deltas, models = low_rank_models(seed=1)
    u, parts = reference_parts(deltas)
    kept = [reference_drop(part, d, seed) for part, d, seed in zip(parts, PARAMS["densities"], PARAMS["seeds"])]
    expected = base + u @ reference_disjoint_mean(kept, PARAMS["weights"], False, PARAMS["lambda_"])
    params = MethodParams(**PARAMS, normalize=False, rank_bound=rank_bound)
    got = METHODS["knots_dare_ties"].function(base.float(), models, params).tensor
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-6)


def test_at_full_density_with_unit_weights_knots_ties_sums_agreeing_parts():
    """Density 1, one model: the parts are ΔW's own coordinates, so the merge is base + λ·ΔW."""
    base, deltas, models = low_rank_models(seed=2)
    params = MethodParams(weights=(1.0,), densities=(1.0,), lambda_=0.5, normalize=True)
    got = METHODS["knots_ties"].function(base.float(), models[:1], params).tensor
    torch.testing.assert_close(got.double(), base + 0.5 * deltas[0], rtol=1e-4, atol=1e-6)


def test_tensors_that_are_not_matrices_take_the_plain_method_and_zero_task_vectors_give_the_base():
    generator = torch.Generator().manual_seed(3)
    base = torch.randn(64, generator=generator)
    models = [base + torch.randn(64, generator=generator) * 0.01 for _ in range(2)]
    params = MethodParams(weights=(1.0, 1.0), densities=(0.5, 0.5), normalize=True)
    assert torch.equal(METHODS["knots_ties"].function(base, models, params).tensor, ties(base, models, params).tensor)
    matrix = torch.randn(8, 6, generator=generator)
    unchanged = METHODS["knots_ties"].function(matrix, [matrix.clone(), matrix.clone()], params).tensor
    assert torch.equal(unchanged, matrix)


def test_knots_methods_report_no_conflict_statistics():
    assert not METHODS["knots_ties"].elects_signs and not METHODS["knots_dare_ties"].elects_signs
    assert (METHODS["knots_ties"].label, METHODS["knots_dare_ties"].label) == ("KnOTS-TIES", "KnOTS-DARE-TIES")
