"""The one language-average rule (tasks/averages.py) that `harness eval` and the leaderboard share."""

import math

import pytest

from tasks.averages import language_average

EXPECTED = ["lrm_sib_tel_test", "lrm_mgsm_tel_test"]


def test_average_is_the_unweighted_mean_of_every_expected_task():
    average = language_average(EXPECTED, {"lrm_sib_tel_test": 0.5, "lrm_mgsm_tel_test": 0.1, "other": 0.9})
    assert average.value == pytest.approx(0.3) and average.missing == ()


@pytest.mark.parametrize("scores", [
    {"lrm_sib_tel_test": 0.5},  # not evaluated
    {"lrm_sib_tel_test": 0.5, "lrm_mgsm_tel_test": None},
    {"lrm_sib_tel_test": 0.5, "lrm_mgsm_tel_test": math.nan},  # pandas' missing cell
])
def test_a_missing_task_makes_the_average_missing_and_is_named(scores):
    average = language_average(EXPECTED, scores)
    assert average.value is None and average.missing == ("lrm_mgsm_tel_test",)


def test_no_expected_task_is_no_average():
    assert language_average([], {"lrm_sib_tel_test": 0.5}).value is None
