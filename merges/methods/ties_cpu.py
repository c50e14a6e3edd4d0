"""TIES on the CPU in two fused passes (numba), bit for bit what `ties.ties` computes.

`ties.ties` is the definition and runs anywhere torch does; as eager fp32 torch ops it makes some
thirty passes over memory per parameter (promote, subtract, abs, select, mask, weight, elect,
agree, sum, divide, convert), so on a CPU it costs several times the time needed to read the
inputs. Here each tensor takes two passes over its inputs, straight from the stored dtype
(bfloat16 or float32) to the output dtype:

1. selection: for every model at once, count the magnitudes |theta_i - base| above a band that a
   random sample brackets the trim threshold in, and collect those inside it (value and index);
   the exact k-th largest is then selected within the band (the rare miss selects over all);
2. merge: trim (ties at the threshold kept in index order, as `trim_in_place` does), weight,
   elect, disjoint mean, lambda, + base, rounded to the output dtype, block by block, with the
   conflict counts and a check that every input is finite.

Every entry sees the same float32 operations in the same order as in `ties.ties`, so the
results are identical (tests/merges/test_ties_cpu.py holds the two to that). The engine uses
this for `ties` on the CPU when the inputs are bfloat16 or float32 and the output is too;
anything else goes through `ties.ties`. numba compiles the loops on first use and caches them
beside this file (a few seconds, once per installation).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit
from numba.extending import overload

from merges.methods.common import MethodParams, ModelCounts
from merges.methods.ties import BAND, SAMPLE_SIZE, conflict_counts

SUPPORTED_DTYPES = (torch.bfloat16, torch.float32)
SMALL = 1 << 18      # up to this many entries the threshold is selected over all of them
BLOCK = 4096         # entries per block of the merge pass: its scratch stays in cache
BAND_SLACK = 0.06    # band buffers hold 2 * BAND + this fraction of the entries (bf16 ties widen bands)
INFINITY = np.float32(np.inf)
BAND_BYTES_PER_ENTRY = 8 * (2 * BAND + BAND_SLACK)  # float32 value + int32 index per band slot


def supports(dtypes: list[torch.dtype], out_dtype: torch.dtype, shape: tuple[int, ...]) -> bool:
    """Whether `merge` takes inputs of these dtypes (base first) and this output: bfloat16 or
    float32 throughout, one dtype for the models (numba compiles per type), int32 indices."""
    return (set(dtypes) | {out_dtype} <= set(SUPPORTED_DTYPES) and len(set(dtypes[1:])) == 1
            and math.prod(shape) < 2**31)


def as_array(tensor: torch.Tensor) -> np.ndarray:
    """A flat numpy view; bfloat16 travels as its uint16 bit patterns (numpy has no bfloat16)."""
    flat = tensor.reshape(-1)
    return (flat.view(torch.uint16) if flat.dtype == torch.bfloat16 else flat).numpy()


def merge(base: torch.Tensor, tensors: list[torch.Tensor], params: MethodParams,
          out: torch.Tensor) -> tuple[list[ModelCounts], int | None]:
    """TIES of `tensors` over `base` written into `out` (same shape; contiguous CPU tensors that
    `supports`); returns the conflict counts and the position of the first input holding a NaN
    or an infinity (0 base, i + 1 model i), or None."""
    n = base.numel()
    models = tuple(as_array(t) for t in tensors)  # a tuple of one array type: numba indexes it in loops
    base_array = as_array(base)
    thresholds = np.empty(len(models), np.float32)
    cutoffs = np.full(len(models), -1, np.int64)
    for i, density in enumerate(params.densities):
        if density >= 1:
            thresholds[i] = -1.0  # every magnitude is above
        elif density <= 0:
            thresholds[i] = np.inf  # none is (an infinite input fails the finite check)
    selecting = [i for i, density in enumerate(params.densities) if 0 < density < 1]
    if selecting and n:
        _select_thresholds(base_array, models, selecting, [max(1, int(params.densities[i] * n)) for i in selecting],
                           thresholds, cutoffs)
    nonzero = np.zeros(len(models), np.int64)
    agreeing = np.zeros(len(models), np.int64)
    nonfinite = np.zeros(len(models) + 1, np.bool_)
    _merge_pass(base_array, models, thresholds, cutoffs, np.asarray(params.weights, np.float32),
                np.float32(params.lambda_), params.normalize, params.consensus == "sum",
                as_array(out), nonzero, agreeing, nonfinite)
    bad = int(np.argmax(nonfinite)) if nonfinite.any() else None
    return conflict_counts(n, nonzero.tolist(), agreeing.tolist()), bad


def _select_thresholds(base: np.ndarray, models: tuple, selecting: list[int], keep: list[int],
                       thresholds: np.ndarray, cutoffs: np.ndarray) -> None:
    """The k-th largest magnitude of each selecting model's task vector, and the index of the
    last entry tied with it that trimming keeps (-1 when every tied entry is kept or none)."""
    n = base.size
    chosen = np.asarray(selecting, np.int64)
    if n <= SMALL:
        lows = np.full(len(selecting), -np.inf, np.float32)  # the band is everything
        highs = np.full(len(selecting), np.inf, np.float32)
        capacity = n
    else:
        # One random entry in each of SAMPLE_SIZE equal strides: random, yet read in index order
        # (random order would fault the mapped inputs in page by page, many times slower).
        stride = n // SAMPLE_SIZE
        picks = np.arange(SAMPLE_SIZE) * stride + np.random.default_rng(n).integers(0, stride, SAMPLE_SIZE)
        samples = np.sort(_sample_magnitudes(base, models, chosen, picks), axis=1)
        lows, highs = np.empty(len(selecting), np.float32), np.empty(len(selecting), np.float32)
        for row, k in enumerate(keep):
            below = (n - k) / n
            lows[row] = samples[row, max(0, int(np.floor((below - BAND) * SAMPLE_SIZE)))]
            highs[row] = samples[row, min(SAMPLE_SIZE - 1, int(np.ceil((below + BAND) * SAMPLE_SIZE)))]
        capacity = int((2 * BAND + BAND_SLACK) * n)
    values = np.empty((len(selecting), capacity + BLOCK), np.float32)
    indices = np.empty((len(selecting), capacity + BLOCK), np.int32)
    above, found = _collect_band(base, models, chosen, lows, highs, values, indices)
    for row, (i, k) in enumerate(zip(selecting, keep)):
        count = int(found[row])
        need = k - int(above[row])  # the answer is the need-th largest inside the band
        if above[row] < k and count <= capacity and need <= count:
            band, band_indices = values[row, :count], indices[row, :count]
        else:  # the sample missed: select over every entry
            band, band_indices = _all_magnitudes(base, models[i]), np.arange(n)
            need = k
        threshold = np.partition(band, band.size - need)[band.size - need]
        thresholds[i] = threshold
        cutoffs[i] = _tie_cutoff(band, band_indices, threshold, need - int(np.count_nonzero(band > threshold)))


def value(array, index):
    """Entry `index` of a flat input as float32 (bfloat16 arrives as uint16 bit patterns)."""


@overload(value, inline="always")
def _value(array, index):
    if array.dtype.bitwidth == 16:
        return lambda array, index: np.uint32(np.uint32(array[index]) << np.uint32(16)).view(np.float32)
    return lambda array, index: np.float32(array[index])


def store(array, index, number):
    """Write a float32 into a flat output, rounding to nearest even for bfloat16 as torch does."""


@overload(store, inline="always")
def _store(array, index, number):
    if array.dtype.bitwidth == 16:
        def to_bf16(array, index, number):
            if number != number:
                array[index] = np.uint16(0x7FC0)
            else:
                bits = np.float32(number).view(np.uint32)
                array[index] = np.uint16((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
                                         >> np.uint32(16))
        return to_bf16

    def to_float(array, index, number):
        array[index] = number
    return to_float


@njit(nogil=True, cache=True)
def _sample_magnitudes(base, models, chosen, picks):
    out = np.empty((chosen.size, picks.size), np.float32)
    for row in range(chosen.size):
        model = models[chosen[row]]
        for s in range(picks.size):
            j = picks[s]
            out[row, s] = abs(value(model, j) - value(base, j))
    return out


@njit(nogil=True, cache=True)
def _all_magnitudes(base, model):
    out = np.empty(base.size, np.float32)
    for j in range(base.size):
        out[j] = abs(value(model, j) - value(base, j))
    return out


@njit(nogil=True, cache=True)
def _collect_band(base, models, chosen, lows, highs, values, indices):
    """Per selecting model: how many magnitudes exceed its band, and those inside it (in index
    order). A band that would overflow its buffer (which has a block to spare) stops collecting
    and reports one more than the buffer can hold."""
    rows = chosen.size
    capacity = values.shape[1] - BLOCK
    above = np.zeros(rows, np.int64)
    found = np.zeros(rows, np.int64)
    base_block = np.empty(BLOCK, np.float32)
    magnitudes = np.empty(BLOCK, np.float32)
    for start in range(0, base.size, BLOCK):
        size = min(BLOCK, base.size - start)
        for j in range(size):
            base_block[j] = value(base, start + j)
        for row in range(rows):
            model, low, high = models[chosen[row]], lows[row], highs[row]
            count_above = 0
            for j in range(size):
                magnitude = abs(value(model, start + j) - base_block[j])
                magnitudes[j] = magnitude
                count_above += magnitude > high
            above[row] += count_above
            at = found[row]
            if at > capacity:
                continue
            row_values, row_indices = values[row], indices[row]
            for j in range(size):  # branch-free: write every entry, advance only past those inside
                magnitude = magnitudes[j]
                row_values[at] = magnitude
                row_indices[at] = start + j
                at += (magnitude >= low) & (magnitude <= high)
            found[row] = at
    return above, found


@njit(nogil=True, cache=True)
def _tie_cutoff(band, band_indices, threshold, missing):
    """The index of the missing-th entry equal to the threshold (index order); -1 if none."""
    if missing <= 0:
        return -1
    seen = 0
    for at in range(band.size):
        if band[at] == threshold:
            seen += 1
            if seen == missing:
                return band_indices[at]
    return -1


@njit(nogil=True, cache=True)
def _merge_pass(base, models, thresholds, cutoffs, weights, lambda_, normalize, by_sum,
                out, nonzero, agreeing, nonfinite):
    """Trim, weight, elect, disjoint mean, lambda, + base: the operations of `ties.ties`, in its
    order, one block of entries at a time (each inner loop runs over the block, so it vectorizes)."""
    count = len(models)
    weighted = np.empty((count, BLOCK), np.float32)
    base_block = np.empty(BLOCK, np.float32)
    score = np.empty(BLOCK, np.float32)
    votes = np.empty(BLOCK, np.int32)
    merged = np.empty(BLOCK, np.float32)
    divisor = np.empty(BLOCK, np.float32)
    zero, one = np.float32(0.0), np.float32(1.0)
    for start in range(0, base.size, BLOCK):
        size = min(BLOCK, base.size - start)
        finite = True
        for j in range(size):
            b = value(base, start + j)
            base_block[j] = b
            finite &= abs(b) < INFINITY
        nonfinite[0] |= not finite
        for i in range(count):  # trimmed task vector times weight
            model, row = models[i], weighted[i]
            threshold, cutoff, weight = thresholds[i], cutoffs[i] - start, weights[i]
            kept = 0
            finite = True
            for j in range(size):
                x = value(model, start + j)
                finite &= abs(x) < INFINITY
                delta = x - base_block[j]
                magnitude = abs(delta)
                keep = (magnitude > threshold) | ((magnitude == threshold) & (j <= cutoff))
                trimmed = delta * (one if keep else zero)
                kept += trimmed != zero
                row[j] = trimmed * weight
            nonzero[i] += kept
            nonfinite[i + 1] |= not finite
        if by_sum:  # the elected sign is + where the score is >= 0
            for j in range(size):
                score[j] = weighted[0, j]
            for i in range(1, count):
                row = weighted[i]
                for j in range(size):
                    score[j] += row[j]
        else:
            votes[:size] = 0
            for i in range(count):
                row = weighted[i]
                for j in range(size):
                    votes[j] += np.int32(row[j] > zero) - np.int32(row[j] < zero)
            for j in range(size):
                score[j] = votes[j]
        merged[:size] = zero
        divisor[:size] = zero
        for i in range(count):  # the disjoint sum: entries agreeing with the elected sign
            row, weight = weighted[i], weights[i]
            agree_count = 0
            for j in range(size):
                w = row[j]
                agree = (w > zero) if score[j] >= zero else (w < zero)
                agree_count += agree
                masked = w * (one if agree else zero)
                # 0 + w_0 + w_1 + ...: the first addition turns masking's -0.0 into +0.0, as in ties.
                merged[j] += masked
                divisor[j] += weight * (one if masked != zero else zero)
            agreeing[i] += agree_count
        for j in range(size):
            result = merged[j]
            if normalize:
                result = result / (one if divisor[j] == zero else divisor[j])
            if lambda_ != one:
                result = result * lambda_
            store(out, start + j, result + base_block[j])
