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
