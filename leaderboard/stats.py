"""Is a difference between two models real? A paired bootstrap over the items both answered.

Both models saw the same documents, so the test resamples documents (not each model separately):
each resample draws n documents with replacement and takes the mean of (B - A) on them. The 95%
percentile interval of those means is the confidence interval; it excludes 0 when the gain is
unlikely to be an accident of which items happen to be in the test set. scipy does the resampling.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class PairedDiff:
    n: int  # shared documents
    mean_a: float
    mean_b: float
    diff: float  # mean of (b - a) over the shared documents
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return not (self.low <= 0.0 <= self.high)


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
) -> PairedDiff:
    """Mean of b - a with its bootstrap confidence interval; a and b are per-item scores, paired."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"need two paired 1-d score arrays of 2+ items, got shapes {a.shape} and {b.shape}")
    result = bootstrap(
        (a, b),
        _mean_difference,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return PairedDiff(
        n=int(a.size),
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        diff=float((b - a).mean()),
        low=float(interval.low),
        high=float(interval.high),
    )


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(b - a, axis=axis)


def compare_scores(scores_a: pd.Series, scores_b: pd.Series, **options) -> PairedDiff | None:
    """Paired bootstrap on the documents (index: doc_id) both models have; None if fewer than 2."""
    shared = scores_a.index.intersection(scores_b.index)
    if len(shared) < 2:
        return None
    return paired_bootstrap(scores_a[shared].to_numpy(), scores_b[shared].to_numpy(), **options)
