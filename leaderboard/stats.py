"""Is a difference between two models real? A paired bootstrap over the items both answered.

Both models saw the same documents, so the test resamples documents (not each model separately):
each resample draws n documents with replacement and takes the mean of (B - A) on them. The 95%
percentile interval of those means is the confidence interval; it excludes 0 when the gain is
unlikely to be an accident of which items happen to be in the test set.

A resample's mean only depends on how often each distinct difference was drawn, and those counts
follow a multinomial distribution (n draws, each difference's share of the documents as its
probability). So the resamples are drawn as counts (numpy's `multinomial`) over the few distinct
differences (scores are mostly 0/1, so -1, 0 and 1 per task): the same bootstrap distribution as
drawing documents one by one (scipy.stats.bootstrap, paired), without an n x resamples array, so a
whole table's tie tests (leaderboard.ties) take milliseconds. The Compare view and the tie groups
both call `paired_bootstrap`, so they agree on the same pair.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

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
    differences, counts = np.unique(b - a, return_counts=True)
    drawn = np.random.default_rng(seed).multinomial(a.size, counts / a.size, size=resamples)
    means = drawn @ differences / a.size  # one resample's mean of (b - a) per row
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])  # the percentile interval
    return PairedDiff(
        n=int(a.size),
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        diff=float((b - a).mean()),
        low=float(low),
        high=float(high),
    )


def compare_scores(scores_a: pd.Series, scores_b: pd.Series, **options) -> PairedDiff | None:
    """Paired bootstrap on the documents (index: doc_id) both models have; None if fewer than 2."""
    shared = scores_a.index.intersection(scores_b.index)
    if len(shared) < 2:
        return None
    return paired_bootstrap(scores_a[shared].to_numpy(), scores_b[shared].to_numpy(), **options)
