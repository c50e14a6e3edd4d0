"""`harness tasks`: the listing of tasks per language with their split sizes."""

from harness import tasklist
from harness.cli import main


def harness_tasks(*argv: str) -> int:
    """`harness tasks ARGV`, parsed by the subcommand's own arguments."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--registry", default=None)
    tasklist.add_arguments(parser)
    return tasklist.run(parser.parse_args(argv))


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
