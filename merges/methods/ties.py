"""TIES (Yadav et al. 2023), with mergekit's semantics except where the trim threshold is tied.

1. Task vectors tau_i = theta_i - base.
2. Trim: keep the k_i = max(1, int(density_i * numel)) entries of tau_i largest in magnitude,
   per tensor (density >= 1 keeps all, density <= 0 none); zero the rest. Where several entries
   have exactly the k-th largest magnitude (common with Adam updates and bfloat16), the first in
   index order are kept, so exactly k_i are: the stated density holds, and the set depends on
   no device, thread count or kernel. mergekit picks among them with an unstable argsort, which
   no rule can reproduce; everywhere else the two agree.
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
from merges.methods.spec import CONSENSUS, DENSITY, LAMBDA, NORMALIZE, WEIGHT, MethodSpec

EXACT_SELECTION_LIMIT = 1 << 20  # below this many entries a plain kthvalue is fast enough
SAMPLE_SIZE = 1 << 16
SELECTION_BLOCK = 1 << 22  # entries per block when counting and collecting the band
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
    # Block by block: a boolean mask over the whole tensor, and the int64 index that masked
    # selection builds from it, would cost more memory than the task vector itself.
    blocks = values.split(SELECTION_BLOCK)
    above = sum(int(torch.count_nonzero(block > high)) for block in blocks)
    if above < k:
        band = torch.cat([block[(block >= low) & (block <= high)] for block in blocks])
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
    missing = k - int(torch.count_nonzero(keep))  # not keep.sum(): that makes an int64 copy
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


def election_score(weighted: torch.Tensor, consensus: str) -> torch.Tensor:
    """Per parameter: the sum of the weighted entries ("sum", the paper's) or the count of
    positive minus negative entries ("count"); the elected sign is its sign."""
    if consensus == "sum":
        return weighted.sum(dim=0)
    return (weighted > 0).sum(dim=0) - (weighted < 0).sum(dim=0)


def elect_signs(weighted: torch.Tensor, consensus: str) -> torch.Tensor:
    """Whether the elected sign is + (bool per parameter; a tie elects +). The score is dropped
    here: kept alive through the disjoint mean it would cost a model-sized float tensor."""
    return election_score(weighted, consensus) >= 0


FINALIZE_CHUNK = 1 << 22  # entries per block of the final sum: bounds its temporaries to a few MB


def disjoint_merge(base: torch.Tensor, weighted: torch.Tensor, positive: torch.Tensor,
                   params: MethodParams) -> tuple[torch.Tensor, list[int]]:
    """base + lambda * (mean or sum of the entries agreeing with the elected sign).

    Also returns how many entries of each model agree. Consumes `weighted`: the disagreeing
    entries are zeroed in place, and the result is built in `weighted[0]` block by block, so no
    model-sized accumulator or divisor is allocated (the embedding matrix sets the merge's peak
    memory). Every entry sees the same operations in the same order as a whole-tensor
    computation, so blocking does not change a bit.
    """
    agreeing = []
    for i in range(len(params.weights)):
        agree = torch.where(positive, weighted[i] > 0, weighted[i] < 0)  # zero entries never agree
        agreeing.append(int(torch.count_nonzero(agree)))
        weighted[i].mul_(agree)
        del agree  # the last mask would otherwise live through the final mean
    flat = weighted.reshape(len(params.weights), -1)
    flat_base = base.reshape(-1)
    for start in range(0, flat.shape[1], FINALIZE_CHUNK):
        block = flat[:, start:start + FINALIZE_CHUNK]
        merged = block[0]
        if params.normalize:
            # After masking, a model's entry is non-zero exactly where it agrees.
            divisor = torch.zeros_like(merged)
            for i, weight in enumerate(params.weights):
                divisor.add_(block[i] != 0, alpha=weight)
        # 0 + w_0 + w_1 + ...: adding 0.0 first turns masking's -0.0 into +0.0, as that sum does.
        merged.add_(0.0)
        for i in range(1, len(params.weights)):
            merged.add_(block[i])
        if params.normalize:
            merged.div_(divisor.masked_fill_(divisor == 0, 1))
        if params.lambda_ != 1:
            merged.mul_(params.lambda_)
        merged.add_(flat_base[start:start + FINALIZE_CHUNK])
    return flat[0].view(base.shape), agreeing  # flat is weighted itself unless that was not contiguous


def conflict_counts(numel: int, nonzero: list[int], agreeing: list[int],
                    kept_by_slack: list[int] | None = None) -> list[ModelCounts]:
    return [ModelCounts(params=numel, trimmed=nz, discarded=nz - agree,
                        kept_by_slack=kept_by_slack[i] if kept_by_slack else 0)
            for i, (nz, agree) in enumerate(zip(nonzero, agreeing))]


def ties(base: torch.Tensor, tensors: list[torch.Tensor], params: MethodParams) -> MethodOutput:
    weighted, nonzero = weighted_task_vectors(
        base, tensors, params, lambda i, delta: trim_in_place(delta, params.densities[i]))
    positive = elect_signs(weighted, params.consensus)
    merged, agreeing = disjoint_merge(base, weighted, positive, params)
    return MethodOutput(merged, conflict_counts(base.numel(), nonzero, agreeing))


SPECS = (MethodSpec("ties", ties, label="TIES", model_parameters=(WEIGHT, DENSITY),
                    parameters=(LAMBDA, NORMALIZE, CONSENSUS), elects_signs=True),)
