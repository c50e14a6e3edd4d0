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
    assert rows["lrm_sib_eng_<split>"] == ["21", "21"] and rows["lrm_mgsm_eng_<split>"] == ["5", "20"]
    assert rows["lrm_mlic_tc_eng_<split>"] == ["4", "8"]  # English MLiC-style data, as the zoo writes it
    belebele_dev, belebele_test = map(int, rows["lrm_belebele_ben_<split>"])
    assert belebele_dev + belebele_test == 108 and 0 < belebele_dev < belebele_test
    assert "lrm_all_dev, lrm_all_test" in out


def test_harness_tasks_lists_the_english_control_from_real_files(real_data, capsys):
    """The real SIB-200 eng_Latn and MGSM en excerpts are counted; MLiC-Eval has no English, and
    Belebele has no file here: those splits are reported as not counted, one line each."""
    assert harness_tasks("--lang", "eng", "--data-dir", str(real_data)) == 0
    out = capsys.readouterr().out
    assert "eng  English  (control: not a merge target, not in lrm_all)  groups: lrm_eng_dev, lrm_eng_test" in out
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if "_<split>" in line}
    assert list(rows) == [f"lrm_{family}_eng_<split>" for family in
                          ("sib", "belebele", "mgsm", "mlic_tc", "mlic_mrc", "mlic_rs", "mlic_math")]
    assert rows["lrm_sib_eng_<split>"] == ["21", "21"] and rows["lrm_mgsm_eng_<split>"] == ["5", "20"]
    assert all(rows[f"lrm_{family}_eng_<split>"] == ["-", "-"] for family in ("belebele", "mlic_tc", "mlic_math"))
    assert "MLiC-Eval text classification (zoo data only)" in out
    assert "10 split(s) not counted (-):" in out
    assert "lrm_mlic_tc_eng_test: missing data folder" in out and "lrm_tam" not in out


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


def test_harness_tasks_lists_every_benchmark_of_a_language_with_suite_all(data_dir, capsys):
    assert harness_tasks("--lang", "bod", "--suite", "all", "--data-dir", str(data_dir)) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if "_<split>" in line}
    assert list(rows) == [f"lrm_{family}_bod_<split>" for family in
                          ("sib", "belebele", "mlic_tc", "mlic_mrc", "mlic_rs", "mlic_math", "cmil_tc", "cmil_mrc", "cmil_math")]
    assert rows["lrm_sib_bod_<split>"] == ["21", "21"]  # the real SIB-200 bod_Tibt excerpt
    assert rows["lrm_mlic_tc_bod_<split>"] == ["4", "8"]
    # the real CMiLBench excerpts (tests/fixtures/data/README.md)
    assert rows["lrm_cmil_tc_bod_<split>"] == ["2", "7"] and rows["lrm_cmil_mrc_bod_<split>"] == ["2", "3"]
    assert "CMiLBench extractive reading comprehension (not in the default suite)" in out
    metric = {line.split()[0]: line.split()[3] for line in out.splitlines() if "_<split>" in line}
    assert metric["lrm_cmil_mrc_bod_<split>"] == "rougeL" and metric["lrm_cmil_math_bod_<split>"] == "exact_match"
    assert "SIB-200 topic classification (not in the default suite)" in out and "not counted" not in out


def test_harness_tasks_default_suite_names_the_other_benchmarks(data_dir, capsys):
    assert harness_tasks("--lang", "uig", "--data-dir", str(data_dir)) == 0
    out = capsys.readouterr().out
    assert "lrm_sib_uig_<split>   " not in out  # not a row of the default suite's table
    assert ("  with --suite all also: lrm_sib_uig_<split>, lrm_cmil_tc_uig_<split>, lrm_cmil_mrc_uig_<split>, "
            "lrm_cmil_math_uig_<split>\n") in out


def test_harness_tasks_an_extra_language(real_data, capsys):
    assert harness_tasks("--lang", "khk", "--data-dir", str(real_data)) == 0
    out = capsys.readouterr().out
    assert "khk  Khalkha Mongolian  (extra: evaluated only; no CT model or merge, not in lrm_all)" in out
    rows = {line.split()[0]: line.split()[1:3] for line in out.splitlines() if "_<split>" in line}
    assert rows == {"lrm_sib_khk_<split>": ["21", "21"], "lrm_belebele_khk_<split>": ["-", "-"]}
