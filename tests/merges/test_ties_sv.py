"""TIES-SV against a straightforward reference written here, entry by entry in plain Python."""

from __future__ import annotations

import sys

import pytest
import torch

from merges.methods import MethodParams
from merges.methods.ties import kth_largest, ties, trim_in_place
from merges.methods.ties_sv import ties_sv


def reference_ties_sv(base, tensors, weights, densities, protect, slack, lam=1.0, normalize=True):
    """Loops over lists of floats; returns (merged list, kept count, discarded per model)."""
    base = base.reshape(-1).tolist()
    n = len(base)
    trimmed = []
    for tensor, density in zip(tensors, densities):
        delta = [t - b for t, b in zip(tensor.reshape(-1).tolist(), base)]
        k = max(1, int(density * n)) if density < 1 else n
        order = sorted(range(n), key=lambda j: -abs(delta[j]))  # distinct magnitudes: no ties
        keep = set(order[:k])
        trimmed.append([delta[j] if j in keep else 0.0 for j in range(n)])
    weighted = [[w * x for x in t] for w, t in zip(weights, trimmed)]
    score = [sum(col) for col in zip(*weighted)]
    elected = [1.0 if s >= 0 else -1.0 for s in score]

    def sign(x):
        return (x > 0) - (x < 0)

    p = weighted[protect]
    candidates = [j for j in range(n) if p[j] != 0 and sign(p[j]) != elected[j]]
    k = min(round(slack * sum(1 for x in p if x != 0)), len(candidates))
    for j in sorted(candidates, key=lambda j: (abs(score[j]), j))[:k]:
        elected[j] = float(sign(p[j]))
    merged, discarded = [], [0] * len(tensors)
    for j in range(n):
        total, divisor = 0.0, 0.0
        for i, w in enumerate(weights):
            if weighted[i][j] != 0 and sign(weighted[i][j]) == elected[j]:
                total += weighted[i][j]
                divisor += w
            elif weighted[i][j] != 0:
                discarded[i] += 1
        if normalize and divisor != 0:
            total /= divisor
        merged.append(base[j] + lam * total)
    return merged, k, discarded


def random_inputs(seed, models=2, shape=(24, 20)):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g, dtype=torch.float64)
    tensors = [base + torch.randn(shape, generator=g, dtype=torch.float64) * 0.1 for _ in range(models)]
    return base, tensors


@pytest.mark.parametrize("seed, models, slack, densities, weights, protect", [
    (0, 2, 0.2, [0.6, 0.6], [1.0, 1.0], 0),
    (1, 2, 0.5, [0.4, 0.9], [1.0, 1.0], 0),
    (2, 3, 0.3, [0.5, 0.7, 0.3], [1.0, 0.6, 0.8], 0),
    (3, 3, 1.0, [0.8, 0.8, 0.8], [0.5, 1.0, 1.0], 1),
])
def test_ties_sv_matches_reference(seed, models, slack, densities, weights, protect):
    base, tensors = random_inputs(seed, models)
    params = MethodParams(weights=tuple(weights), densities=tuple(densities), normalize=True,
                          slack=slack, protect=protect)
    out = ties_sv(base, tensors, params)
    expected, kept, discarded = reference_ties_sv(base, tensors, weights, densities, protect, slack)
    torch.testing.assert_close(out.tensor.reshape(-1), torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0)
    assert out.counts[protect].kept_by_slack == kept > 0
    assert [c.discarded for c in out.counts] == discarded
    # The slack changed the result compared with plain TIES, and saved entries of p.
    plain = ties(base, tensors, params)
    assert not torch.equal(plain.tensor, out.tensor)
    assert out.counts[protect].discarded == plain.counts[protect].discarded - kept


@pytest.mark.parametrize("seed", range(3))
def test_slack_zero_is_ties_bit_for_bit(seed):
    base, tensors = random_inputs(seed, models=3, shape=(64, 48))
    base, tensors = base.float(), [t.float() for t in tensors]
    params = MethodParams(weights=(1.0, 0.7, 0.4), densities=(0.5, 0.6, 0.3), normalize=True, slack=0.0, protect=0)
    sv, plain = ties_sv(base, tensors, params), ties(base, tensors, params)
    assert torch.equal(sv.tensor, plain.tensor)
    assert sv.counts == plain.counts


@pytest.mark.parametrize("slack", [0.05, 0.1, 0.25])
def test_kept_count_equals_formula(slack):
    base, tensors = random_inputs(7, models=2, shape=(100, 50))
    params = MethodParams(weights=(1.0, 1.0), densities=(0.6, 0.6), normalize=True, slack=slack, protect=0)
    out = ties_sv(base, tensors, params)
    nnz = max(1, int(0.6 * 5000))
    discarded_by_ties = ties(base, tensors, params).counts[0].discarded
    assert out.counts[0].trimmed == nnz
    assert out.counts[0].kept_by_slack == min(round(slack * nnz), discarded_by_ties)
    assert out.counts[1].kept_by_slack == 0


def test_large_slack_is_capped_by_discarded():
    base, tensors = random_inputs(8, models=2)
    params = MethodParams(weights=(1.0, 1.0), densities=(0.6, 0.6), normalize=True, slack=1.0, protect=0)
    out = ties_sv(base, tensors, params)
    assert out.counts[0].discarded == 0
    assert out.counts[0].kept_by_slack == ties(base, tensors, params).counts[0].discarded


def test_kth_largest_is_exact_on_big_tensors_with_ties():
    """The sampled bracket gives the same value as a full selection, duplicates included."""
    g = torch.Generator().manual_seed(0)
    values = (torch.randn(3_000_000, generator=g) * 100).round().abs()  # many equal magnitudes
    for k in (1, 17, 1_500_000, 2_999_999, 3_000_000):
        assert kth_largest(values, k) == torch.kthvalue(values, values.numel() - k + 1).values
    delta = torch.randn(2_100_000, generator=g).round()
    trimmed = trim_in_place(delta.clone(), 0.3)
    k = int(0.3 * delta.numel())
    kept = trimmed != 0
    assert int(kept.sum()) <= k  # zeros can be "kept" without counting
    assert trimmed[kept].abs().min() >= delta.abs()[~kept].max()
    assert int((trim_in_place(torch.randn(2_100_000, generator=g), 0.3) != 0).sum()) == k


def whole_tensor_disjoint_mean(base, weighted, positive, weights, normalize, lam):
    """TIES's disjoint mean over whole tensors, the direct way: 0 + sum of agreeing entries."""
    merged, divisor = torch.zeros_like(base), torch.zeros_like(base)
    for w_i, weight in zip(weighted, weights):
        agree = torch.where(positive, w_i > 0, w_i < 0)
        merged += w_i * agree
        divisor += agree * weight
    if normalize:
        merged = merged / torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    return merged * lam + base if lam != 1 else merged + base


@pytest.mark.parametrize("normalize,lam", [(True, 1.0), (False, 0.7)])
def test_blockwise_selection_and_mean_are_bit_identical_to_whole_tensor(monkeypatch, normalize, lam):
    """Big tensors are counted, selected and summed in blocks to bound memory: same bits as whole."""
    module = sys.modules["merges.methods.ties"]  # the module: this file imports a function of that name
    g = torch.Generator().manual_seed(3)
    base = (torch.randn(1001, 37, generator=g) * 0.02).to(torch.bfloat16).float()  # bf16: many tied magnitudes
    tensors = [(base + torch.randn(base.shape, generator=g) * 0.002).to(torch.bfloat16).float() for _ in range(3)]
    # Where every task vector is a tiny negative number, trimming leaves -0.0 in all of them and
    # no model agrees; over a base of -0.0 the sum 0 + (-0.0) + ... must give +0.0, not -0.0.
    base[::5] = -0.0
    for tensor in tensors:
        tensor[::5] = -1e-9
    params = MethodParams(weights=(1.0, 0.5, 0.8), densities=(0.6, 0.3, 0.5), normalize=normalize, lambda_=lam)
    whole = ties(base, tensors, params)
    monkeypatch.setattr(module, "EXACT_SELECTION_LIMIT", 1000)  # take the sampled path
    monkeypatch.setattr(module, "SELECTION_BLOCK", 997)
    monkeypatch.setattr(module, "FINALIZE_CHUNK", 1009)
    blocked = ties(base, tensors, params)
    assert torch.equal(blocked.tensor.view(torch.int32), whole.tensor.view(torch.int32))  # -0.0 included
    assert blocked.counts == whole.counts
    # and both are the direct whole-tensor formula
    weighted = torch.stack([trim_in_place(t - base, d) * w for t, d, w in zip(tensors, params.densities, params.weights)])
    expected = whole_tensor_disjoint_mean(base, weighted, weighted.sum(0) >= 0, params.weights, normalize, lam)
    assert torch.equal(whole.tensor.view(torch.int32), expected.view(torch.int32))
