"""The paired bootstrap behind the Compare view."""

import numpy as np
import pandas as pd
import pytest

from leaderboard.stats import compare_scores, paired_bootstrap


def test_identical_models_differ_by_zero():
    scores = np.random.default_rng(1).integers(0, 2, 200).astype(float)
    result = paired_bootstrap(scores, scores.copy())
    assert result.diff == 0.0 and result.low <= 0.0 <= result.high and not result.significant


def test_clearly_better_model_has_a_ci_excluding_zero():
    rng = np.random.default_rng(2)
    a = (rng.random(300) < 0.4).astype(float)
    b = np.maximum(a, (rng.random(300) < 0.3).astype(float))  # b right wherever a is, and more
    result = paired_bootstrap(a, b)
    assert result.diff == pytest.approx(b.mean() - a.mean())
    assert 0.0 < result.low <= result.diff <= result.high
    assert result.significant


def test_a_one_item_gain_is_not_significant():
    a = np.r_[np.ones(40), np.zeros(10)]
    b = np.r_[np.ones(41), np.zeros(9)]
    result = paired_bootstrap(a, b)
    assert result.diff == pytest.approx(0.02) and result.low <= 0.0 and not result.significant


def test_seeded_and_reproducible():
    rng = np.random.default_rng(3)
    a, b = rng.random(100), rng.random(100)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7).low != paired_bootstrap(a, b, seed=8).low


def test_compare_uses_shared_documents_only():
    a = pd.Series({0: 1.0, 1: 0.0, 2: 1.0, 3: 0.0})
    b = pd.Series({1: 1.0, 2: 1.0, 3: 1.0, 99: 0.0})
    result = compare_scores(a, b)
    assert result.n == 3 and result.diff == pytest.approx(2 / 3)
    assert compare_scores(a, pd.Series({0: 1.0})) is None


def test_unpaired_input_is_refused():
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap(np.ones(3), np.ones(4))


@pytest.mark.parametrize("n, p_a, p_b", [(40, 0.5, 0.6), (400, 0.3, 0.35), (2000, 0.7, 0.7)])
def test_interval_matches_scipys_paired_bootstrap(n, p_a, p_b):
    """The multinomial draw is the same bootstrap as scipy's document-by-document resampling: the two
    percentile intervals agree within Monte-Carlo error (scipy as the oracle, many resamples each)."""
    from scipy.stats import bootstrap

    generator = np.random.default_rng(n)
    a = (generator.random(n) < p_a).astype(float)
    b = (generator.random(n) < p_b).astype(float)
    ours = paired_bootstrap(a, b, resamples=20000)
    theirs = bootstrap((a, b), lambda x, y, axis=-1: np.mean(y - x, axis=axis), paired=True, vectorized=True,
                       n_resamples=20000, method="percentile", rng=np.random.default_rng(1)).confidence_interval
    width = theirs.high - theirs.low
    assert abs(ours.low - theirs.low) < 0.03 * width + 1 / n
    assert abs(ours.high - theirs.high) < 0.03 * width + 1 / n
