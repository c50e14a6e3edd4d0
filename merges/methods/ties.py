"""TIES (Yadav et al. 2023), with mergekit's semantics.

1. Task vectors tau_i = theta_i - base.
2. Trim: keep the k_i = max(1, int(density_i * numel)) entries of tau_i largest in magnitude,
   per tensor (density >= 1 keeps all, density <= 0 none); zero the rest.
3. Elect a sign per parameter from the weighted trimmed vectors w_i * tau_i: the sign of their
   sum ("sum", the paper's) or of the count of positive minus negative entries ("count");
   a tie elects +.
4. Disjoint mean: sum the weighted entries whose sign agrees with the elected one; with
   `normalize`, divide by the summed weights of the agreeing models (1 where none agree).
5. Result: base + lambda * merged.
"""

from __future__ import annotations

import math

import torch

from merges.methods.common import MethodOutput, MethodParams, ModelCounts, weight_column

EXACT_SELECTION_LIMIT = 1 << 20  # below this many entries a plain kthvalue is fast enough
SAMPLE_SIZE = 1 << 16
BAND = 0.01  # the sampled quantile is within ~0.002 of the true one; the band is 5 sigma wide


def kth_largest(values: torch.Tensor, k: int) -> torch.Tensor:
    """The exact k-th largest entry of a flat tensor (1 <= k <= numel).

    A full kthvalue over tens of millions of entries is slow on CPUs, so a random sample first
    brackets the answer in a narrow band of values; counting above the band and selecting
    inside it gives the exact same value. The rare miss falls back to the full selection.
    """
    n = values.numel()
    if n <= EXACT_SELECTION_LIMIT:
        return torch.kthvalue(values, n - k + 1).values
    generator = torch.Generator(device=values.device).manual_seed(n)
    picks = torch.randint(n, (SAMPLE_SIZE,), generator=generator, device=values.device)
    sample = values[picks].sort().values
    below = (n - k) / n  # fraction of entries under the answer
    low = sample[max(0, math.floor((below - BAND) * SAMPLE_SIZE))]
    high = sample[min(SAMPLE_SIZE - 1, math.ceil((below + BAND) * SAMPLE_SIZE))]
    above = int((values > high).sum())
    if above < k:
        band = values[(values >= low) & (values <= high)]
        need = k - above  # the answer is the need-th largest inside the band
        if need <= band.numel():
            return torch.kthvalue(band, band.numel() - need + 1).values
    return torch.kthvalue(values, n - k + 1).values


def trim_in_place(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the k largest-magnitude entries of `delta`; exactly k are kept.

    Entries tied with the k-th largest magnitude are kept in index order until k are kept.
    """
    n = delta.numel()
    if density >= 1 or n == 0:
        return delta
    if density <= 0:
        return delta.zero_()
    k = max(1, int(density * n))
    magnitude = delta.abs().reshape(-1)
    threshold = kth_largest(magnitude, k)
    keep = magnitude > threshold
    missing = k - int(keep.sum())
    if missing > 0:
        tied = (magnitude == threshold).nonzero().reshape(-1)[:missing]
        keep[tied] = True
    del magnitude
    return delta.mul_(keep.reshape(delta.shape))


def weighted_task_vectors(base: torch.Tensor, tensors: list[torch.Tensor], params: MethodParams,
                          sparsify) -> tuple[torch.Tensor, list[int]]:
    """Stack w_i * sparsify_i(theta_i - base); also the non-zero count of each sparsified vector."""
    stacked = base.new_empty((len(tensors), *base.shape))
    nonzero = []
    for i, tensor in enumerate(tensors):
        torch.sub(tensor, base, out=stacked[i])
        sparsify(i, stacked[i])
        nonzero.append(int(torch.count_nonzero(stacked[i])))
    stacked.mul_(weight_column(params.weights, base))
    return stacked, nonzero


def elect_signs(weighted: torch.Tensor, consensus: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether the elected sign is + (bool per parameter), and the election score it came from."""
    if consensus == "sum":
        score = weighted.sum(dim=0)
    else:
        score = (weighted > 0).sum(dim=0) - (weighted < 0).sum(dim=0)
    return score >= 0, score


def disjoint_merge(base: torch.Tensor, weighted: torch.Tensor, positive: torch.Tensor,
                   params: MethodParams) -> tuple[torch.Tensor, list[int]]:
    """base + lambda * (mean or sum of the entries agreeing with the elected sign).

    Also returns how many entries of each model agree. Consumes `weighted` (zeroes the
    disagreeing entries in place) to keep memory at one extra tensor per step.
    """
    merged = torch.zeros_like(base)
    divisor = torch.zeros_like(base) if params.normalize else None
    agreeing = []
    for i, weight in enumerate(params.weights):
        agree = torch.where(positive, weighted[i] > 0, weighted[i] < 0)  # zero entries never agree
        agreeing.append(int(torch.count_nonzero(agree)))
        merged.add_(weighted[i].mul_(agree))
        if divisor is not None:
            divisor.add_(agree, alpha=weight)
    if divisor is not None:
        merged.div_(divisor.masked_fill_(divisor == 0, 1))
    if params.lambda_ != 1:
        merged.mul_(params.lambda_)
    return merged.add_(base), agreeing


def conflict_counts(numel: int, nonzero: list[int], agreeing: list[int],
                    kept_by_slack: list[int] | None = None) -> list[ModelCounts]:
    return [ModelCounts(params=numel, trimmed=nz, discarded=nz - agree,
                        kept_by_slack=kept_by_slack[i] if kept_by_slack else 0)
            for i, (nz, agree) in enumerate(zip(nonzero, agreeing))]


def ties(base: torch.Tensor, tensors: list[torch.Tensor], params: MethodParams) -> MethodOutput:
    weighted, nonzero = weighted_task_vectors(
        base, tensors, params, lambda i, delta: trim_in_place(delta, params.densities[i]))
    positive, _ = elect_signs(weighted, params.consensus)
    merged, agreeing = disjoint_merge(base, weighted, positive, params)
    return MethodOutput(merged, conflict_counts(base.numel(), nonzero, agreeing))
