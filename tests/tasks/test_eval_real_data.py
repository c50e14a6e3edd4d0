"""`harness eval` on a benchmark outside the paper's split: real SIB-200 Tibetan (bod_Tibt) files in a
`--data-dir`, scored by a tiny random model through the hf backend, stored, and read by the leaderboard."""

import pytest

from harness.cli import main
from harness.evaluate import choose_tasks
from harness.store import ResultStore
from leaderboard import tables
from leaderboard.data import main_metric_lookup, read_store
from tests.tasks.conftest import eval_tiny_bod

TASK = "lrm_sib_bod_test"


def test_real_sib200_tibetan_evaluates_into_the_store_and_the_leaderboard(tiny_model, real_data, tmp_path, harness_cli):
    out, store_url = eval_tiny_bod(harness_cli, tiny_model, real_data, tmp_path, TASK)
    assert f"not averaged (outside their language's default suite): {TASK}" in out

    [row] = ResultStore(store_url).results().query("metric == 'acc'").to_dict("records")
    assert (row["task"], row["lang"], row["split"], row["model"], row["n"]) == (TASK, "bod", "test", "tiny-bod", 21)
    assert 0.0 <= row["value"] <= 1.0

    snapshot = read_store(store_url)
    scores = tables.main_scores(snapshot.results, "test", main_metric_lookup())
    tibetan = tables.language_table(scores, "bod", tables.model_kinds(scores, snapshot.models))
    assert tibetan.score_columns == ["SIB-200"]  # shown, not averaged: MLiC-Eval is Tibetan's default suite
    assert tibetan.frame.loc["tiny-bod", "SIB-200"] == row["value"] * 100


def test_suite_all_adds_the_benchmarks_a_language_has_data_for(real_data, capsys):
    default = ["lrm_mlic_tc_bod_test", "lrm_mlic_mrc_bod_test", "lrm_mlic_rs_bod_test", "lrm_mlic_math_bod_test"]
    assert choose_tasks(("bod",), None, None, "test", "ct-bod", real_data) == default
    cmilbench = ["lrm_cmil_tc_bod_test", "lrm_cmil_mrc_bod_test", "lrm_cmil_math_bod_test"]
    # --suite all: SIB-200 and CMiLBench (their files are here); Belebele has no local file, so it is left out with a note
    assert choose_tasks(("bod",), None, None, "test", "ct-bod", real_data, "all") == ["lrm_sib_bod_test", *default, *cmilbench]
    assert "left out lrm_belebele_bod_test: missing data file" in capsys.readouterr().err
    # from the hub (no data folder) every benchmark on the hub that has the language is kept; CMiLBench
    # is not on the hub, so it is left out with a note
    assert choose_tasks(("bod",), None, None, "test", "ct-bod", None, "all") == [
        "lrm_sib_bod_test", "lrm_belebele_bod_test", *default]
    assert "left out lrm_cmil_mrc_bod_test: CMiLBench extractive reading comprehension is not on the hub" \
        in capsys.readouterr().err


def test_lang_khk_evaluates_sib200_and_belebele(real_data, capsys):
    assert choose_tasks(("uig",), ["khk"], None, "dev", "ct-uig", None) == ["lrm_sib_khk_dev", "lrm_belebele_khk_dev"]
    assert choose_tasks(("uig",), ["khk"], None, "dev", "ct-uig", real_data, "all") == ["lrm_sib_khk_dev", "lrm_belebele_khk_dev"]


def test_an_unknown_suite_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse's own usage error
        main(["eval", "--model", "ct-bod", "--suite", "every"])
    assert exit_.value.code == 2 and "argument --suite: invalid choice: 'every'" in capsys.readouterr().err
