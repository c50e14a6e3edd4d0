"""Task names, groups, metrics, the data variable, and the generated YAML files (tasks.suite)."""

import pytest

from tasks.errors import TaskError
from tasks.languages import (BELEBELE, BENCHMARKS, CONTROL_LANGUAGES, LANGUAGES, MLIC, SIB200, TARGET_LANGUAGES,
                             benchmarks_of, data_code)
from tasks.suite import (TASKS_DIR, data_env, families_of, group_name, in_default_suite, lang_of, main_metric,
                         parse_task_name, render_task_files, synthetic_only, task_names)


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
    with pytest.raises(TaskError, match="not a task of this harness"):
        main_metric(bad)


def test_unknown_language_or_split_is_an_error():
    with pytest.raises(TaskError, match="unknown language 'xx'"):
        task_names("xx", "test")
    with pytest.raises(TaskError, match="unknown split 'val'"):
        group_name("tam", "val")


def test_data_env(tmp_path):
    assert data_env(tmp_path) == {"HARNESS_DATA_DIR": str(tmp_path.resolve())}
    assert data_env(None) == {"HARNESS_DATA_DIR": ""}  # overrides a value inherited from the shell
    with pytest.raises(TaskError, match="data folder not found"):
        data_env(tmp_path / "missing")


def test_committed_yaml_files_are_the_generated_ones():
    rendered = render_task_files()
    for relative, text in rendered.items():
        path = TASKS_DIR / relative
        assert path.is_file(), f"{relative} missing: run python -m tasks.suite"
        assert path.read_text(encoding="utf-8") == text, f"{relative} is stale: run python -m tasks.suite"
    committed = {p.relative_to(TASKS_DIR).as_posix() for p in TASKS_DIR.glob("*/lrm_*.yaml")}
    assert committed == set(rendered)
    # 44 tasks of the seven target languages' default suites, 14 of the English control, and the
    # benchmarks outside the paper's suites: SIB-200 and Belebele for bod and khk, SIB-200 for uig,
    # CMiLBench's three for bod, uig and mvf
    assert len([r for r in rendered if not r.startswith("groups/")]) == 2 * (4 * 2 + 2 + 3 * 4 + 7 + 5 + 3 * 3)
    assert len([r for r in rendered if r.startswith("groups/")]) == 2 * (7 + 1 + 1 + 1)


def test_english_is_a_control_with_every_family():
    assert list(TARGET_LANGUAGES) == ["tam", "tel", "ory", "ben", "bod", "uig", "mvf"]
    assert list(CONTROL_LANGUAGES) == ["eng"] and set(LANGUAGES) == set(TARGET_LANGUAGES) | {"eng", "khk"}
    assert task_names("eng", "test") == [
        "lrm_sib_eng_test", "lrm_belebele_eng_test", "lrm_mgsm_eng_test", "lrm_mlic_tc_eng_test",
        "lrm_mlic_mrc_eng_test", "lrm_mlic_rs_eng_test", "lrm_mlic_math_eng_test"]
    assert parse_task_name("lrm_mlic_math_eng_dev") == ("mlic_math", "eng", "dev")
    assert main_metric("lrm_mgsm_eng_test") == "exact_match" and main_metric("lrm_eng_test") == "acc"
    assert lang_of("lrm_sib_eng_test") == "eng" and lang_of("lrm_eng_dev") == "eng"
    assert [f for f in families_of("eng") if synthetic_only(f, "eng")] == ["mlic_tc", "mlic_mrc", "mlic_rs", "mlic_math"]
    assert not any(synthetic_only(f, lang) for lang in TARGET_LANGUAGES for f in families_of(lang))


def test_the_whole_suite_group_holds_the_target_languages_only():
    whole = render_task_files()["groups/lrm_all_test.yaml"]
    assert all(f"  - lrm_{lang}_test\n" in whole for lang in TARGET_LANGUAGES)
    assert "lrm_eng_test" not in whole
    assert "  - lrm_mlic_math_eng_test\n" in render_task_files()["groups/lrm_eng_test.yaml"]


# ---- benchmarks by data, not by the paper's language split ---------------------------------------

def test_every_benchmark_that_has_a_language_gives_it_tasks():
    assert task_names("bod", "test", "all") == ["lrm_sib_bod_test", "lrm_belebele_bod_test", "lrm_mlic_tc_bod_test",
                                                "lrm_mlic_mrc_bod_test", "lrm_mlic_rs_bod_test", "lrm_mlic_math_bod_test",
                                                "lrm_cmil_tc_bod_test", "lrm_cmil_mrc_bod_test", "lrm_cmil_math_bod_test"]
    assert task_names("uig", "dev", "all")[0] == "lrm_sib_uig_dev"  # Belebele has no Uyghur
    assert "lrm_belebele_uig_dev" not in task_names("uig", "dev", "all")
    # CMiLBench is the only other benchmark with traditional Mongolian
    assert task_names("mvf", "test", "all") == task_names("mvf", "test") + [
        "lrm_cmil_tc_mvf_test", "lrm_cmil_mrc_mvf_test", "lrm_cmil_math_mvf_test"]
    assert parse_task_name("lrm_sib_uig_test") == ("sib", "uig", "test")
    assert main_metric("lrm_belebele_khk_test") == "acc" and lang_of("lrm_sib_bod_dev") == "bod"


def test_the_default_suite_is_the_papers():
    assert task_names("bod", "test") == ["lrm_mlic_tc_bod_test", "lrm_mlic_mrc_bod_test",
                                         "lrm_mlic_rs_bod_test", "lrm_mlic_math_bod_test"]
    assert not in_default_suite("lrm_sib_bod_test") and in_default_suite("lrm_mlic_tc_bod_test")
    group = render_task_files()["groups/lrm_bod_test.yaml"]
    assert "lrm_mlic_tc_bod_test" in group and "lrm_sib_bod_test" not in group
    # the paper's Indic four and English already use every benchmark that has them
    for lang in ("tam", "tel", "ory", "ben", "eng"):
        assert task_names(lang, "test", "all") == task_names(lang, "test")


def test_an_extra_language_is_evaluated_on_all_it_has_and_never_merged_or_averaged_in_lrm_all():
    assert LANGUAGES["khk"].flores == "khk_Cyrl" and "khk" not in TARGET_LANGUAGES and "khk" not in CONTROL_LANGUAGES
    assert task_names("khk", "test") == ["lrm_sib_khk_test", "lrm_belebele_khk_test"] == task_names("khk", "test", "all")
    assert "lrm_khk_test" not in render_task_files()["groups/lrm_all_test.yaml"]
    assert "  - lrm_belebele_khk_test\n" in render_task_files()["groups/lrm_khk_test.yaml"]


def test_benchmarks_declare_their_languages_by_their_own_codes():
    assert len(BENCHMARKS[SIB200].languages) == 205 and len(BENCHMARKS[BELEBELE].languages) == 122
    assert data_code("bod", SIB200) == "bod_Tibt" and data_code("uig", SIB200) == "uig_Arab"
    assert data_code("bod", BELEBELE) == "bod_Tibt" and data_code("uig", BELEBELE) is None
    assert data_code("mvf", SIB200) is None  # SIB-200 has no traditional-script Mongolian
    assert data_code("eng", MLIC) == "en"  # real MLiC-Eval has no English: the zoo's synthetic copy does
    # every language's default suite is data it has, and every target language has a default suite
    for lang in LANGUAGES:
        assert set(benchmarks_of(lang)) <= set(benchmarks_of(lang, "all")) and benchmarks_of(lang)


def test_an_unknown_suite_is_an_error():
    with pytest.raises(TaskError, match="unknown suite 'every'"):
        task_names("bod", "test", "every")


def test_chance_level_is_one_over_the_options_or_zero_for_generation():
    from tasks import suite

    assert suite.chance_level("lrm_sib_tam_test") == pytest.approx(1 / 7)
    assert suite.chance_level("lrm_mlic_tc_uig_dev") == pytest.approx(1 / 7)
    assert suite.chance_level("lrm_belebele_tel_test") == suite.chance_level("lrm_mlic_rs_bod_test") == 0.25
    assert suite.chance_level("lrm_mgsm_ben_test") == suite.chance_level("lrm_cmil_mrc_bod_test") == 0.0
