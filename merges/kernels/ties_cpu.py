"""TIES on the CPU as a fused C kernel (`ties_cpu.c`), bit for bit what `ties.ties` computes.

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
   dtype, with the conflict counts and a check that every merged value is finite in the output
   dtype (which finds every input that is not).

Every entry sees the same float32 operations in the same order as in `ties.ties`, so the
results are identical (tests/merges/test_ties_cpu.py holds the two to that). This is an execution
backend, not a method: the engine (`Merge._uses_cpu_kernel`) uses it for `ties` on the CPU when
the inputs are bfloat16 or float32 and the output is too; anything else goes through `ties.ties`.

The loops are C, compiled on first use with the system's C compiler (`$CC`, else `cc`; about a
second) for this machine's CPU and cached under ~/.cache/merges (or $XDG_CACHE_HOME/merges), then
loaded with ctypes, which lets go of the GIL during each call, so the engine's threads run them
in parallel. Loading takes a millisecond; a JIT compiler such as numba took 0.5 s to start in
every process, a quarter of the time of a whole 1B-parameter merge. Without a working compiler
`supports` says no (with one warning) and TIES runs as torch operations, several times slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from merges.methods.common import MethodParams, ModelCounts
from merges.methods.ties import SAMPLE_SIZE, conflict_counts

METHOD = "ties"  # the merge method whose results this computes, bit for bit
SUPPORTED_DTYPES = (torch.bfloat16, torch.float32)
SMALL = 1 << 18      # up to this many entries the threshold is selected over all of them
# Entries per emitted slab of output (512 KB of bfloat16): written while still in the CPU's L2
# cache. Bigger slabs cost more to write, not less: with 1M-entry slabs, writing a 1.9 GB merge
# from two threads into one file took 1-3.4 s of system time against 0.45-0.5 s with these
# (64K-entry slabs: 0.7 s; alternating runs in one process).
SLAB = 1 << 18
PIVOT_SIGMAS = (-5.0, -1.0, 0.0, 1.0, 5.0)  # pivots around the sampled threshold, in standard errors
INFINITY = np.float32(np.inf)

SOURCE = Path(__file__).with_suffix(".c")
# No -ffast-math and no FMA contraction: each float operation stays one IEEE operation, as in torch.
FLAGS = ("-O3", "-march=native", "-std=c11", "-ffp-contract=off", "-fno-strict-aliasing", "-fPIC", "-shared")
_compiling = threading.Lock()


def supports(dtypes: list[torch.dtype], out_dtype: torch.dtype) -> bool:
    """Whether `merge` takes inputs of these dtypes (base first) and this output: bfloat16 or
    float32 throughout, one dtype for the models, at most the kernel's max_models models, and
    the kernel compiled on this machine."""
    if not (set(dtypes) | {out_dtype} <= set(SUPPORTED_DTYPES) and len(set(dtypes[1:])) == 1):
        return False
    kernel = library()
    return kernel is not None and len(dtypes) - 1 <= ctypes.c_int.in_dll(kernel, "max_models").value


def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use (once per machine and source version); None,
    with one warning, when it cannot be built here."""
    with _compiling:  # the engine's threads may ask at once; one of them compiles
        return _load_library()


@functools.cache
def _load_library() -> ctypes.CDLL | None:
    compiler = os.environ.get("CC") or "cc"
    try:
        path = _compiled(compiler)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:  # RuntimeError: no home directory
        detail = getattr(error, "stderr", None) or str(error)
        warnings.warn(f"cannot compile the CPU kernel for TIES ({SOURCE.name} with {compiler}: "
                      f"{detail.strip().splitlines()[-1] if detail.strip() else error}); TIES runs as torch "
                      "operations instead, several times slower", RuntimeWarning, stacklevel=4)
        return None
    return _declare(ctypes.CDLL(str(path)))


def _compiled(compiler: str) -> Path:
    """The shared library for this source, compiler, flags and CPU, compiled if not cached."""
    if shutil.which(compiler) is None:
        raise OSError(f"no C compiler {compiler!r} on PATH")
    key = hashlib.sha256("\n".join([SOURCE.read_text(), compiler, *FLAGS, _cpu()]).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "merges"
    path = cache / f"ties_cpu-{key}.so"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as scratch:  # renamed into place when complete
            built = Path(scratch) / path.name
            subprocess.run([compiler, *FLAGS, "-o", str(built), str(SOURCE)], check=True, capture_output=True,
                           text=True)
            os.replace(built, path)
    return path


def _cpu() -> str:
    """What -march=native compiles for: the CPU's model and feature flags (a cache shared by
    machines with different CPUs keeps one library per CPU)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    return "\n".join(line for line in lines[:40] if line.startswith(("model name", "flags", "Features", "CPU part")))


def _declare(kernel: ctypes.CDLL) -> ctypes.CDLL:
    pointer, flag, size, real = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_float
    signatures = {
        "sample_magnitudes": (None, [pointer, flag, pointer, flag, pointer, size, pointer]),
        "count_at_least": (None, [pointer, flag, pointer, flag, size, pointer, size, pointer, size, pointer]),
        "collect": (size, [pointer, flag, pointer, flag, size, real, real, size, pointer]),
        "merge_pass": (flag, [pointer, flag, pointer, flag, size, size, size, pointer, pointer, pointer, real, flag,
                              flag, pointer, flag, pointer, pointer, pointer]),
    }
    for name, (result, arguments) in signatures.items():
        function = getattr(kernel, name)
        function.restype, function.argtypes = result, arguments
    return kernel


def _is_bf16(tensor: torch.Tensor) -> bool:
    return tensor.dtype == torch.bfloat16


def _addresses(tensors: list[torch.Tensor]) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


def merge(base: torch.Tensor, tensors: list[torch.Tensor], params: MethodParams, out_dtype: torch.dtype,
          emit: Callable[[int, torch.Tensor], None]) -> tuple[list[ModelCounts], int | None]:
    """TIES of `tensors` over `base` (contiguous CPU tensors that `supports`), computed one slab
    of SLAB entries at a time and handed to `emit(first_entry, flat_slab)` in order; the slab's
    memory is reused for the next one. Returns the conflict counts and, where some merged value
    is not finite (emitting stops there), what made it so: the position of the first input
    holding a NaN or an infinity (0 base, i + 1 model i), or `len(tensors) + 1` when every input
    is finite and the merge itself overflowed the output dtype; else None."""
    if not all(t.is_contiguous() and t.device.type == "cpu" for t in (base, *tensors)):
        raise ValueError("ties_cpu.merge takes contiguous CPU tensors")
    n = base.numel()
    thresholds = np.full(len(tensors), -1.0, np.float32)  # density >= 1: every magnitude is above
    ties_left = np.zeros(len(tensors), np.int64)  # entries tied with the threshold still to keep
    for i, density in enumerate(params.densities):
        if density <= 0:
            thresholds[i] = INFINITY  # no magnitude is above (an infinite input fails the finite check)
    keep = {i: max(1, int(density * n)) for i, density in enumerate(params.densities) if 0 < density < 1}
    if keep and n:
        for i, (threshold, ties) in trim_thresholds(base, tensors, keep).items():
            thresholds[i], ties_left[i] = threshold, ties
    nonzero = np.zeros(len(tensors), np.int64)
    agreeing = np.zeros(len(tensors), np.int64)
    nonfinite = np.zeros(len(tensors) + 2, np.uint8)  # base, each model, the merge itself
    weights = np.asarray(params.weights, np.float32)
    slab = torch.empty(min(n, SLAB), dtype=out_dtype)
    models, kernel = _addresses(tensors), library()
    for first in range(0, n, SLAB):
        size = min(SLAB, n - first)
        status = kernel.merge_pass(
            base.data_ptr(), _is_bf16(base), models, _is_bf16(tensors[0]), len(tensors), first, first + size,
            thresholds.ctypes.data, ties_left.ctypes.data, weights.ctypes.data, params.lambda_, params.normalize,
            params.consensus == "sum", slab.data_ptr(), _is_bf16(slab), nonzero.ctypes.data, agreeing.ctypes.data,
            nonfinite.ctypes.data)
        if status == -2:
            raise ValueError(f"ties_cpu.merge takes at most {ctypes.c_int.in_dll(kernel, 'max_models').value} models")
        if status:
            raise MemoryError("ties_cpu: out of memory for the merge pass's scratch")
        if nonfinite.any():
            return conflict_counts(n, nonzero.tolist(), agreeing.tolist()), int(np.argmax(nonfinite))
        emit(first, slab[:size])
    return conflict_counts(n, nonzero.tolist(), agreeing.tolist()), None


def trim_thresholds(base: torch.Tensor, models: list[torch.Tensor],
                    keep: dict[int, int]) -> dict[int, tuple[np.float32, int]]:
    """For each model i in `keep`: the keep[i]-th largest magnitude of models[i] - base, and how
    many of the entries equal to it trimming keeps (the first in index order) so that exactly
    keep[i] are kept."""
    n = base.numel()
    if n <= SMALL:
        return {i: _select(_collect(base, models[i], -INFINITY, INFINITY, n), k, 0) for i, k in keep.items()}
    chosen = list(keep)
    pivots = [sample_pivots(base, models[i], keep[i]) for i in chosen]
    grid = np.full((len(chosen), max(p.size for p in pivots)), INFINITY, np.float32)  # rows padded
    for row, row_pivots in enumerate(pivots):
        grid[row, :row_pivots.size] = row_pivots
    at_least = _count_at_least(base, models, np.asarray(chosen, np.int64), grid)  # one pass for all models
    return {i: _bracketed(base, models[i], keep[i], pivots[row], at_least[row, :pivots[row].size])
            for row, i in enumerate(chosen)}


def _bracketed(base: torch.Tensor, model: torch.Tensor, k: int, pivots: np.ndarray,
               at_least: np.ndarray) -> tuple[np.float32, int]:
    """The threshold from the counts of magnitudes at or above each pivot (non-increasing)."""
    a = int(np.count_nonzero(at_least >= k)) - 1  # the threshold is in [pivots[a], pivots[a + 1])
    low = pivots[a] if a >= 0 else -INFINITY
    high = pivots[a + 1] if a + 1 < pivots.size else INFINITY
    above = int(at_least[a + 1]) if a + 1 < pivots.size else 0
    if high == np.nextafter(low, INFINITY):  # the bracket holds one value
        return low, k - above
    return _select(_collect(base, model, low, high, (int(at_least[a]) if a >= 0 else base.numel()) - above), k, above)


def _select(magnitudes: np.ndarray, k: int, above: int) -> tuple[np.float32, int]:
    """The threshold when `above` magnitudes exceed all of these, and the ties trimming keeps."""
    need = k - above  # the threshold is the need-th largest of these
    if not 0 < need <= magnitudes.size:  # only with NaN inputs, which the merge pass reports
        return INFINITY, 0
    threshold = np.partition(magnitudes, magnitudes.size - need)[magnitudes.size - need]
    return threshold, need - int(np.count_nonzero(magnitudes > threshold))


def sample_pivots(base: torch.Tensor, model: torch.Tensor, k: int) -> np.ndarray:
    """Ascending pivots around the sampled k-th largest magnitude, each followed by the next
    float above it (so that a bracket of two adjacent pivots can be a single value)."""
    n = base.numel()
    # One random entry in each of SAMPLE_SIZE equal strides: random, yet read in index order
    # (random order would fault the mapped inputs in page by page, many times slower).
    stride = n // SAMPLE_SIZE
    picks = np.arange(SAMPLE_SIZE, dtype=np.int64) * stride + np.random.default_rng(n).integers(0, stride, SAMPLE_SIZE)
    sample = np.sort(_sample_magnitudes(base, model, picks))
    below = (n - k) / n  # the fraction of entries under the threshold, and its sampling error
    rank, sigma = below * SAMPLE_SIZE, math.sqrt(below * (1 - below) * SAMPLE_SIZE) + 1
    ranks = [min(SAMPLE_SIZE - 1, max(0, round(rank + s * sigma))) for s in PIVOT_SIGMAS]
    values = sample[ranks]
    return np.unique(np.concatenate([values, np.nextafter(values, INFINITY)]))


def _sample_magnitudes(base: torch.Tensor, model: torch.Tensor, picks: np.ndarray) -> np.ndarray:
    out = np.empty(picks.size, np.float32)
    library().sample_magnitudes(base.data_ptr(), _is_bf16(base), model.data_ptr(), _is_bf16(model),
                                picks.ctypes.data, picks.size, out.ctypes.data)
    return out


def _count_at_least(base: torch.Tensor, models: list[torch.Tensor], chosen: np.ndarray,
                    pivots: np.ndarray) -> np.ndarray:
    """counts[row, p]: how many magnitudes of models[chosen[row]] are >= pivots[row, p]."""
    counts = np.empty(pivots.shape, np.int64)
    library().count_at_least(base.data_ptr(), _is_bf16(base), _addresses(models), _is_bf16(models[0]),
                             base.numel(), chosen.ctypes.data, chosen.size, pivots.ctypes.data, pivots.shape[1],
                             counts.ctypes.data)
    return counts


def _collect(base: torch.Tensor, model: torch.Tensor, low: np.float32, high: np.float32, expected: int) -> np.ndarray:
    """The magnitudes in [low, high), in index order (`expected` of them, or fewer if NaN)."""
    found = np.empty(expected, np.float32)
    at = library().collect(base.data_ptr(), _is_bf16(base), model.data_ptr(), _is_bf16(model), base.numel(),
                           low, high, expected, found.ctypes.data)
    return found[:at]
