"""Task names, groups, metrics and the `harness tasks` listing."""

import pytest

from harness import HarnessError
from harness import tasklist
from harness.cli import main
from harness.paths import TASKS_DIR
from harness.tasklist import (data_env, group_name, lang_of, main_metric, parse_task_name,
                              render_task_files, task_names)


def harness_tasks(*argv: str) -> int:
    """`harness tasks ARGV`, parsed by the subcommand's own arguments."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--registry", default=None)
    tasklist.add_arguments(parser)
    return tasklist.run(parser.parse_args(argv))


def test_task_names_follow_the_contract():
    assert task_names("tam", "test") == ["lrm_sib_tam_test", "lrm_belebele_tam_test"]
    assert task_names("tel", "dev") == ["lrm_sib_tel_dev", "lrm_belebele_tel_dev", "lrm_mgsm_tel_dev"]
    assert task_names("ben", "test")[-1] == "lrm_mgsm_ben_test"
    assert task_names("uig", "test") == ["lrm_mlic_tc_uig_test", "lrm_mlic_mrc_uig_test",
                                         "lrm_mlic_rs_uig_test", "lrm_mlic_math_uig_test"]
    assert group_name("mvf", "dev") == "lrm_mvf_dev"
    assert group_name("all", "test") == "lrm_all_test"


def test_metrics_and_languages_are_read_from_names():
    assert main_metric("lrm_sib_ory_test") == "acc"
    assert main_metric("lrm_mlic_rs_bod_dev") == "acc"
    assert main_metric("lrm_mgsm_ben_test") == "exact_match"
    assert main_metric("lrm_mlic_math_mvf_test") == "exact_match"
    assert main_metric("lrm_tel_test") == "acc"  # a group: the mean of its tasks' main metrics
    assert lang_of("lrm_mlic_math_mvf_test") == "mvf"
    assert lang_of("lrm_ben_dev") == "ben"
    assert parse_task_name("lrm_mlic_tc_bod_dev") == ("mlic_tc", "bod", "dev")


@pytest.mark.parametrize("bad", ["lrm_mgsm_tam_test", "lrm_sib_xyz_test", "lrm_sib_tam_train", "sib_tam_test", "lrm_mlic_tc_tam_dev"])
def test_unknown_task_names_are_errors(bad):
    with pytest.raises(HarnessError, match="not a task of this harness"):
        main_metric(bad)


def test_unknown_language_or_split_is_an_error():
    with pytest.raises(HarnessError, match="unknown language 'xx'"):
        task_names("xx", "test")
    with pytest.raises(HarnessError, match="unknown split 'val'"):
        group_name("tam", "val")


def test_data_env(tmp_path):
    assert data_env(tmp_path) == {"HARNESS_DATA_DIR": str(tmp_path.resolve())}
    assert data_env(None) == {"HARNESS_DATA_DIR": ""}  # overrides a value inherited from the shell
    with pytest.raises(HarnessError, match="data folder not found"):
        data_env(tmp_path / "missing")


def test_committed_yaml_files_are_the_generated_ones():
    rendered = render_task_files()
    for relative, text in rendered.items():
        path = TASKS_DIR / relative
        assert path.is_file(), f"{relative} missing: run python -m harness.tasklist"
        assert path.read_text(encoding="utf-8") == text, f"{relative} is stale: run python -m harness.tasklist"
    committed = {p.relative_to(TASKS_DIR).as_posix() for p in TASKS_DIR.glob("*/lrm_*.yaml")}
    assert committed == set(rendered)
    assert len([r for r in rendered if not r.startswith("groups/")]) == 2 * (4 * 2 + 2 + 3 * 4)  # 44 tasks
    assert len([r for r in rendered if r.startswith("groups/")]) == 2 * (7 + 1)


def test_harness_tasks_lists_split_sizes(data_dir, capsys):
    assert harness_tasks("--data-dir", str(data_dir)) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if line.strip().startswith("lrm_")}
    assert rows["lrm_sib_tam_<split>"] == ["21", "21"]  # the real-data excerpts (tests/fixtures/data)
    assert rows["lrm_mgsm_tel_<split>"] == ["5", "20"]
    assert rows["lrm_mlic_math_bod_<split>"] == ["4", "8"]
    belebele_dev, belebele_test = map(int, rows["lrm_belebele_ben_<split>"])
    assert belebele_dev + belebele_test == 108 and 0 < belebele_dev < belebele_test
    assert "lrm_all_dev, lrm_all_test" in out


def test_harness_tasks_one_language_without_local_data(capsys):
    # The test's harness home is empty, so the zoo's data folder does not exist.
    assert harness_tasks("--lang", "uig", "--split", "test") == 0
    out = capsys.readouterr().out
    assert "item counts unknown" in out
    assert "lrm_mlic_rs_uig_<split>" in out and "lrm_sib_tam" not in out


def test_harness_tasks_reports_uncountable_splits(tmp_path, capsys):
    assert harness_tasks("--lang", "tam", "--data-dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "lrm_sib_tam_dev: missing data file" in out


def test_harness_tasks_missing_data_dir_is_a_one_line_error(tmp_path, capsys):
    assert main(["tasks", "--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness tasks: error: data folder not found") and "\n" not in err
