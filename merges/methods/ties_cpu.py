"""TIES on the CPU as fused numba loops, bit for bit what `ties.ties` computes.

`ties.ties` is the definition and runs anywhere torch does; as eager fp32 torch ops it makes some
thirty passes over memory per parameter (promote, subtract, abs, select, mask, weight, elect,
agree, sum, divide, convert), so on a CPU it costs several times the time needed to read the
inputs. Here a tensor takes about two passes over its inputs, straight from the stored dtype
(bfloat16 or float32) to the output dtype:

1. selection: for each model, a stratified random sample of the magnitudes |theta_i - base|
   picks a few pivot values around its trim threshold (the k-th largest magnitude), each with
   the next float above it; one pass counts, for all models, the magnitudes at or above every
   pivot. Two adjacent pivots then bracket the threshold. When they are a value and the next
   float, the threshold is that value: the usual case with bfloat16 inputs, whose task vectors
   take few distinct values, so many entries tie. Otherwise a second, cheap pass collects the
   few magnitudes between them and selects among those. A sample that misses only widens the
   bracket: the result is always exact.
2. merge, block by block: trim (entries tied with the threshold are kept in index order, as
   `trim_in_place` does), weight, elect, disjoint mean, lambda, + base, rounded to the output
   dtype, with the conflict counts and a check that every input is finite.

Every entry sees the same float32 operations in the same order as in `ties.ties`, so the
results are identical (tests/merges/test_ties_cpu.py holds the two to that). The engine uses
this for `ties` on the CPU when the inputs are bfloat16 or float32 and the output is too;
anything else goes through `ties.ties`. numba compiles the loops on first use and caches them
beside this file (a few seconds, once per installation).

Why the loops look the way they do: each inner loop runs over one block of entries so that
LLVM vectorizes it; inputs are indexed with unsigned integers (numba then skips its
negative-index wraparound, which stops LLVM from vectorizing) and bfloat16 is rounded on the
integer bits of a float32 array view (a scalar float-to-int view does not vectorize).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from numba import njit
from numba.extending import overload

from merges.methods.common import MethodParams, ModelCounts
from merges.methods.ties import SAMPLE_SIZE, conflict_counts

SUPPORTED_DTYPES = (torch.bfloat16, torch.float32)
SMALL = 1 << 18      # up to this many entries the threshold is selected over all of them
BLOCK = 1024         # entries per block of the merge pass: its scratch stays in the L1 cache
SLAB = 1 << 20       # entries per emitted slab of output: written out while still in the CPU's cache
CHUNK = 16           # entries per chunk when collecting: a chunk without a hit costs one vector compare
PIVOT_SIGMAS = (-5.0, -1.0, 0.0, 1.0, 5.0)  # pivots around the sampled threshold, in standard errors
INFINITY = np.float32(np.inf)
U = np.uint64


def supports(dtypes: list[torch.dtype], out_dtype: torch.dtype, shape: tuple[int, ...]) -> bool:
    """Whether `merge` takes inputs of these dtypes (base first) and this output: bfloat16 or
    float32 throughout, one dtype for the models (numba compiles per type), int32-sized tensors."""
    return (set(dtypes) | {out_dtype} <= set(SUPPORTED_DTYPES) and len(set(dtypes[1:])) == 1
            and math.prod(shape) < 2**31)


def as_array(tensor: torch.Tensor) -> np.ndarray:
    """A flat numpy view; bfloat16 travels as its uint16 bit patterns (numpy has no bfloat16)."""
    flat = tensor.reshape(-1)
    return (flat.view(torch.uint16) if flat.dtype == torch.bfloat16 else flat).numpy()


def merge(base: torch.Tensor, tensors: list[torch.Tensor], params: MethodParams, out_dtype: torch.dtype,
          emit: Callable[[int, torch.Tensor], None]) -> tuple[list[ModelCounts], int | None]:
    """TIES of `tensors` over `base` (contiguous CPU tensors that `supports`), computed one slab
    of SLAB entries at a time and handed to `emit(first_entry, flat_slab)` in order; the slab's
    memory is reused for the next one. Returns the conflict counts and the position of the
    first input holding a NaN or an infinity (0 base, i + 1 model i; emitting stops there), or
    None."""
    n = base.numel()
    models = tuple(as_array(t) for t in tensors)  # a tuple of one array type: numba indexes it in loops
    base_array = as_array(base)
    thresholds = np.full(len(models), -1.0, np.float32)  # density >= 1: every magnitude is above
    ties_left = np.zeros(len(models), np.int64)  # entries tied with the threshold still to keep
    for i, density in enumerate(params.densities):
        if density <= 0:
            thresholds[i] = INFINITY  # no magnitude is above (an infinite input fails the finite check)
    keep = {i: max(1, int(density * n)) for i, density in enumerate(params.densities) if 0 < density < 1}
    if keep and n:
        for i, (threshold, ties) in trim_thresholds(base_array, models, keep).items():
            thresholds[i], ties_left[i] = threshold, ties
    nonzero = np.zeros(len(models), np.int64)
    agreeing = np.zeros(len(models), np.int64)
    nonfinite = np.zeros(len(models) + 1, np.bool_)
    weights = np.asarray(params.weights, np.float32)
    slab = torch.empty(min(n, SLAB), dtype=out_dtype)
    for first in range(0, n, SLAB):
        size = min(SLAB, n - first)
        _merge_pass(base_array, models, first, first + size, thresholds, ties_left, weights,
                    np.float32(params.lambda_), params.normalize, params.consensus == "sum", as_array(slab),
                    nonzero, agreeing, nonfinite)
        if nonfinite.any():
            return conflict_counts(n, nonzero.tolist(), agreeing.tolist()), int(np.argmax(nonfinite))
        emit(first, slab[:size])
    return conflict_counts(n, nonzero.tolist(), agreeing.tolist()), None


def trim_thresholds(base: np.ndarray, models: tuple, keep: dict[int, int]) -> dict[int, tuple[np.float32, int]]:
    """For each model i in `keep`: the keep[i]-th largest magnitude of models[i] - base, and how
    many of the entries equal to it trimming keeps (the first in index order) so that exactly
    keep[i] are kept."""
    n = base.size
    if n <= SMALL:
        return {i: _select(_collect(base, models[i], -INFINITY, INFINITY, n), k, 0) for i, k in keep.items()}
    chosen = list(keep)
    pivots = [sample_pivots(base, models[i], keep[i]) for i in chosen]
    grid = np.full((len(chosen), max(p.size for p in pivots)), INFINITY, np.float32)  # rows padded
    for row, row_pivots in enumerate(pivots):
        grid[row, :row_pivots.size] = row_pivots
    at_least = _count_at_least(base, models, np.asarray(chosen), grid)  # one pass for all models
    return {i: _bracketed(base, models[i], keep[i], pivots[row], at_least[row, :pivots[row].size])
            for row, i in enumerate(chosen)}


def _bracketed(base: np.ndarray, model: np.ndarray, k: int, pivots: np.ndarray,
               at_least: np.ndarray) -> tuple[np.float32, int]:
    """The threshold from the counts of magnitudes at or above each pivot (non-increasing)."""
    a = int(np.count_nonzero(at_least >= k)) - 1  # the threshold is in [pivots[a], pivots[a + 1])
    low = pivots[a] if a >= 0 else -INFINITY
    high = pivots[a + 1] if a + 1 < pivots.size else INFINITY
    above = int(at_least[a + 1]) if a + 1 < pivots.size else 0
    if high == np.nextafter(low, INFINITY):  # the bracket holds one value
        return low, k - above
    return _select(_collect(base, model, low, high, (int(at_least[a]) if a >= 0 else base.size) - above), k, above)


def _select(magnitudes: np.ndarray, k: int, above: int) -> tuple[np.float32, int]:
    """The threshold when `above` magnitudes exceed all of these, and the ties trimming keeps."""
    need = k - above  # the threshold is the need-th largest of these
    if not 0 < need <= magnitudes.size:  # only with NaN inputs, which the merge pass reports
        return INFINITY, 0
    threshold = np.partition(magnitudes, magnitudes.size - need)[magnitudes.size - need]
    return threshold, need - int(np.count_nonzero(magnitudes > threshold))


def sample_pivots(base: np.ndarray, model: np.ndarray, k: int) -> np.ndarray:
    """Ascending pivots around the sampled k-th largest magnitude, each followed by the next
    float above it (so that a bracket of two adjacent pivots can be a single value)."""
    n = base.size
    # One random entry in each of SAMPLE_SIZE equal strides: random, yet read in index order
    # (random order would fault the mapped inputs in page by page, many times slower).
    stride = n // SAMPLE_SIZE
    picks = np.arange(SAMPLE_SIZE) * stride + np.random.default_rng(n).integers(0, stride, SAMPLE_SIZE)
    sample = np.sort(_sample_magnitudes(base, model, picks))
    below = (n - k) / n  # the fraction of entries under the threshold, and its sampling error
    rank, sigma = below * SAMPLE_SIZE, math.sqrt(below * (1 - below) * SAMPLE_SIZE) + 1
    ranks = [min(SAMPLE_SIZE - 1, max(0, round(rank + s * sigma))) for s in PIVOT_SIGMAS]
    values = sample[ranks]
    return np.unique(np.concatenate([values, np.nextafter(values, INFINITY)]))


def value(array, index):
    """Entry `index` of a flat input as float32 (bfloat16 arrives as uint16 bit patterns)."""


@overload(value, inline="always")
def _value(array, index):
    if array.dtype.bitwidth == 16:
        return lambda array, index: np.uint32(np.uint32(array[index]) << np.uint32(16)).view(np.float32)
    return lambda array, index: np.float32(array[index])


def store_block(out, first, block, size):
    """Write the float32 `block[:size]` at out[first:]; bfloat16 is rounded to nearest even, as
    torch rounds it, with NaN kept a NaN."""


@overload(store_block, inline="always")
def _store_block(out, first, block, size):
    if out.dtype.bitwidth == 16:
        def to_bf16(out, first, block, size):
            bits = block.view(np.uint32)
            for j in range(size):
                b = bits[j]
                rounded = np.uint16((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))
                is_nan = (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
                out[first + U(j)] = np.uint16(0x7FC0) if is_nan else rounded
        return to_bf16

    def to_float(out, first, block, size):
        for j in range(size):
            out[first + U(j)] = block[j]
    return to_float


@njit(nogil=True, cache=True)
def _sample_magnitudes(base, model, picks):
    out = np.empty(picks.size, np.float32)
    for s in range(picks.size):
        j = picks[s]
        out[s] = abs(value(model, j) - value(base, j))
    return out


@njit(nogil=True, cache=True)
def _count_at_least(base, models, chosen, pivots):
    """counts[row, p]: how many magnitudes of models[chosen[row]] are >= pivots[row, p]."""
    counts = np.zeros(pivots.shape, np.int64)
    base_block = np.empty(BLOCK, np.float32)
    magnitudes = np.empty(BLOCK, np.float32)
    for start in range(0, base.size, BLOCK):
        size = min(BLOCK, base.size - start)
        first = U(start)
        for j in range(size):
            base_block[j] = value(base, first + U(j))
        for row in range(chosen.size):
            model = models[chosen[row]]
            for j in range(size):
                magnitudes[j] = abs(value(model, first + U(j)) - base_block[j])
            for p in range(pivots.shape[1]):
                pivot = pivots[row, p]
                count = np.int32(0)
                for j in range(size):
                    count += np.int32(magnitudes[j] >= pivot)
                counts[row, p] += count
    return counts


@njit(nogil=True, cache=True)
def _collect(base, model, low, high, expected):
    """The magnitudes in [low, high), in index order (`expected` of them, or fewer if NaN)."""
    found = np.empty(expected + CHUNK, np.float32)  # a chunk to spare: writes are branch-free
    at = 0
    magnitudes = np.empty(BLOCK, np.float32)
    for start in range(0, base.size, BLOCK):
        size = min(BLOCK, base.size - start)
        first = U(start)
        for j in range(size):
            magnitudes[j] = abs(value(model, first + U(j)) - value(base, first + U(j)))
        for chunk in range(0, size, CHUNK):
            end = min(chunk + CHUNK, size)
            hits = 0
            for j in range(chunk, end):
                hits += (magnitudes[j] >= low) & (magnitudes[j] < high)
            if hits and at + hits <= expected:
                for j in range(chunk, end):  # write every entry, advance past those inside
                    found[at] = magnitudes[j]
                    at += (magnitudes[j] >= low) & (magnitudes[j] < high)
    return found[:at]


@njit(nogil=True, cache=True)
def _tied_kept_before(task_vector, size, threshold, tied, ties_left, i):
    """The block index (of `size` entries) before which entries tied with the threshold are
    kept: model i keeps ties_left[i] more of them, the first ones in index order."""
    if tied <= ties_left[i]:
        ties_left[i] -= tied
        return size
    seen = 0
    for j in range(size):
        if abs(task_vector[j]) == threshold:
            if seen == ties_left[i]:
                ties_left[i] = 0
                return j
            seen += 1
    return size


@njit(nogil=True, cache=True)
def _merge_pass(base, models, begin, end, thresholds, ties_left, weights, lambda_, normalize, by_sum,
                out, nonzero, agreeing, nonfinite):
    """Entries begin..end into out[0:end - begin]: trim, weight, elect, disjoint mean, lambda,
    + base, the operations of `ties.ties` in its order, one block of entries at a time."""
    count = len(models)
    weighted = np.empty((count, BLOCK), np.float32)
    base_block = np.empty(BLOCK, np.float32)
    sign = np.empty(BLOCK, np.float32)
    merged = np.empty(BLOCK, np.float32)
    zero, one = np.float32(0.0), np.float32(1.0)
    for start in range(begin, end, BLOCK):
        size = min(BLOCK, end - start)
        first = U(start)
        finite = np.int32(0)
        for j in range(size):
            b = value(base, first + U(j))
            base_block[j] = b
            finite += np.int32(abs(b) < INFINITY)
        nonfinite[0] |= finite != size
        for i in range(count):
            row, threshold = weighted[i], thresholds[i]
            finite = tied = np.int32(0)
            for j in range(size):  # the task vector, and how many entries tie with the threshold
                x = value(models[i], first + U(j))
                finite += np.int32(abs(x) < INFINITY)
                delta = x - base_block[j]
                tied += np.int32(abs(delta) == threshold)
                row[j] = delta
            nonfinite[i + 1] |= finite != size
            ties_end = np.int32(_tied_kept_before(row, size, threshold, tied, ties_left, i))
            weight = weights[i]
            kept = np.int32(0)
            for j in range(size):  # trimmed, then weighted
                magnitude = abs(row[j])
                keep = (magnitude > threshold) | ((magnitude == threshold) & (np.int32(j) < ties_end))
                trimmed = row[j] * (one if keep else zero)
                kept += np.int32(trimmed != zero)
                row[j] = trimmed * weight
            nonzero[i] += kept
        for j in range(size):  # the elected sign: + where the score is >= 0
            score = zero
            for i in range(count):
                w = weighted[i, j]
                score += w if by_sum else np.float32(w > zero) - np.float32(w < zero)
            sign[j] = one if score >= zero else -one
        for i in range(count):  # w agrees with the elected sign where w * sign > 0
            agree_count = np.int32(0)
            for j in range(size):
                agree_count += np.int32(weighted[i, j] * sign[j] > zero)
            agreeing[i] += agree_count
        for j in range(size):  # the disjoint mean: entries that agree with the elected sign
            total = divisor = zero  # 0 + w_0 + w_1 + ...: the first addition turns -0.0 into +0.0, as in ties
            for i in range(count):
                w = weighted[i, j]
                masked = w * (one if w * sign[j] > zero else zero)
                total += masked
                divisor += weights[i] * (one if masked != zero else zero)
            if normalize:
                total = total / (one if divisor == zero else divisor)
            if lambda_ != one:
                total = total * lambda_
            merged[j] = total + base_block[j]
        store_block(out, U(start - begin), merged, size)
