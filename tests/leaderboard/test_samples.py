"""Reading lm-eval's per-sample logs (format written by conftest's writers, as lm-eval 0.4.13 does)."""

import json

import pytest

from harness import HarnessError
from leaderboard import samples


def test_finds_the_newest_file_of_exactly_that_task(tmp_path):
    task = "lrm_sib_tam_test"
    older = tmp_path / f"samples_{task}_2025-01-01T00-00-00.000001.jsonl"
    newer = tmp_path / f"samples_{task}_2026-03-01T10-11-12.123456.jsonl"
    other = tmp_path / f"samples_{task}_extra_2027-01-01T00-00-00.000001.jsonl"  # another task's log
    staged = tmp_path / f".partial-{task}" / f"samples_{task}_2027-01-01T00-00-00.000001.jsonl"  # unfinished
    for path in (older, newer, other, staged):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    assert samples.find_samples_file(tmp_path, task) == newer
    assert samples.find_samples_file(tmp_path, "lrm_sib_tel_test") is None
    assert samples.find_samples_file(None, task) is None
    assert samples.find_samples_file(float("nan"), task) is None  # pandas' missing run_dir
    assert samples.find_samples_file(tmp_path / "gone", task) is None


def test_multiple_choice_answer_is_the_highest_loglikelihood_option(tmp_path, log_writers):
    path = log_writers.mc(tmp_path, "lrm_mlic_tc_uig_test", {0}, 2)
    rows = samples.browser_rows(samples.read_samples(path), "acc").set_index("doc_id")
    assert rows.loc[0, ["model answer", "target", "correct"]].tolist() == ["animals", "animals", True]
    assert rows.loc[1, ["model answer", "target", "correct"]].tolist() == ["business", "animals", False]
    assert rows.loc[0, "prompt"] == "Text 0: the cat sat\nTopic:"
    assert samples.item_scores(path, "acc").to_dict() == {0: 1.0, 1: 0.0}


def test_several_filters_are_kept_apart(tmp_path, log_writers):
    path = log_writers.math(tmp_path, "lrm_mgsm_tel_test", {0, 1}, 3)
    logged = samples.read_samples(path)
    strict = [dict(s, filter="strict-match", exact_match=0.0) for s in logged]
    both = tmp_path / "both.jsonl"
    both.write_text("".join(json.dumps(s) + "\n" for s in logged + strict))
    lines = samples.read_samples(both)
    assert samples.filters_of(lines) == ["flexible", "strict-match"]
    assert samples.item_scores(both, "exact_match").sum() == 2.0  # the first filter by default
    assert samples.item_scores(both, "exact_match", "strict-match").sum() == 0.0
    assert len(samples.browser_rows(lines, "exact_match")) == 3


def test_math_samples_show_the_number_the_scorer_reads(tmp_path, log_writers):
    # The math tasks log their raw generation (no lm-eval filter): the browser shows the number
    # tasks.utils.math_results compares, beside the raw text.
    path = log_writers.math(tmp_path, "lrm_mgsm_tel_test", {0}, 2)
    logged = [dict(s, filtered_resps=s["resps"][0], filter="none") for s in samples.read_samples(path)]
    rows = samples.browser_rows(logged, "exact_match", task="lrm_mgsm_tel_test").set_index("doc_id")
    assert rows.loc[0, "options / generation"] == " The answer is 2"
    assert rows.loc[0, "model answer"] == "2" and rows.loc[1, "model answer"] == "7"
    assert samples.browser_rows(logged, "exact_match").loc[0, "model answer"] == " The answer is 2"  # task unknown


def test_item_scores_are_read_again_when_the_log_changes(tmp_path, log_writers):
    task = "lrm_mlic_tc_uig_test"
    path = log_writers.mc(tmp_path, task, {0, 1}, 3)
    assert samples.logged_item_scores(tmp_path, task, "acc", "none").tolist() == [1.0, 1.0, 0.0]
    assert samples.logged_item_scores(tmp_path, "lrm_sib_tam_test", "acc", "none") is None  # no log
    assert samples.item_scores(path, "acc_norm").empty  # a metric the log lacks: no documents
    log_writers.mc(tmp_path, task, {2}, 4)  # rewritten (another evaluation): not the cached reading
    assert samples.logged_item_scores(tmp_path, task, "acc", "none").tolist() == [0.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("content", [b"{ not json\n", "caf\xe9".encode("latin-1") + b"\n", b"[1, 2]\n", b'{"acc": 1}\n'],
                         ids=["not-json", "not-utf8", "not-an-object", "no-doc-id"])
def test_a_damaged_log_is_one_line_naming_it_for_the_bootstrap_too(tmp_path, content):
    path = tmp_path / "samples_lrm_mlic_tc_uig_test_2026-01-01T00-00-00.000001.jsonl"
    path.write_bytes(b'{"doc_id": 0, "acc": 1.0}\n' + content)
    with pytest.raises(HarnessError) as info:
        samples.item_scores(path, "acc")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
