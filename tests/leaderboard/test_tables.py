"""Table shaping: language averages, the Average column, kinds, and best/second marks."""

import json
import math

import pandas as pd
import pytest

from leaderboard import tables

METRIC = {"lrm_mgsm_tel_test": "exact_match"}


def main_metric(task: str) -> str:
    return METRIC.get(task, "acc")


def rows(*entries, filters=None) -> pd.DataFrame:
    """(model, task, lang, metric, value) tuples as store rows of the test split, unfiltered unless
    `filters` gives each row's lm-eval filter."""
    frame = pd.DataFrame(entries, columns=["model", "task", "lang", "metric", "value"])
    return frame.assign(split="test", model_hash=frame["model"] + "-hash", stderr=0.01, n=100, run_dir=None,
                        filter=filters or "none")


RESULTS = rows(
    ("a", "lrm_sib_tel_test", "tel", "acc", 0.50),
    ("a", "lrm_sib_tel_test", "tel", "acc_norm", 0.99),
    ("a", "lrm_mgsm_tel_test", "tel", "exact_match", 0.10),
    ("a", "lrm_mgsm_tel_test", "tel", "acc", 0.95),  # not the main metric of a math task
    ("a", "lrm_mlic_tc_uig_test", "uig", "acc", 0.40),
    ("b", "lrm_sib_tel_test", "tel", "acc", 0.70),
    ("b", "lrm_mlic_tc_uig_test", "uig", "acc", 0.40),
    ("c", "lrm_mlic_tc_uig_test", "uig", "acc", 0.2004),
    ("c", "lrm_mlic_tc_uig_test", "uig", "acc", 0.2004),
)
MODELS = pd.DataFrame(
    {
        "model_hash": ["a-hash", "b-hash", "c-hash"],
        "model": ["a", "b", "c"],
        "kind": ["merge", "sft", "base"],
        "langs": ["uig", "", ""],
        "recipe_json": [json.dumps({"merge_method": "ties_sv"}), None, None],
    }
)


def score_table(values: pd.DataFrame, limit: pd.DataFrame | None = None) -> tables.ScoreTable:
    """A table of base models with these scores, 100 items per cell, `limit` marking limited cells."""
    limit = limit if limit is not None else values * float("nan")
    cells = tables.Cells(values, values * 0 + 1.0, values * 0 + 100, limit)
    frame = values.copy()
    frame.insert(0, "n", "100")
    frame.insert(0, "Kind", "Base")
    return tables.ScoreTable(frame=frame, score_columns=list(values.columns), title="t", name="t", cells=cells,
                             kind_codes=pd.Series("base", index=values.index))


def overview(shown=None) -> tables.ScoreTable:
    scores = tables.main_scores(RESULTS, "test", main_metric)
    return tables.overview_table(scores, tables.model_kinds(scores, MODELS), shown)


def test_main_scores_keep_one_main_metric_row_per_task():
    scores = tables.main_scores(RESULTS, "test", main_metric).set_index(["model", "task"])
    assert scores.loc[("a", "lrm_sib_tel_test"), "value"] == 0.50
    assert scores.loc[("a", "lrm_mgsm_tel_test"), "value"] == 0.10
    assert len(scores) == 6
    assert tables.main_scores(RESULTS, "dev", main_metric).empty


def test_language_average_is_missing_when_a_task_is_missing():
    table = overview().frame
    assert table.loc["a", "Telugu"] == pytest.approx(30.0)  # mean of 50 and 10
    assert math.isnan(table.loc["b", "Telugu"])  # b lacks MGSM: 70 would not be comparable
    assert math.isnan(table.loc["c", "Telugu"])


def test_average_needs_every_shown_language():
    table = overview().frame
    assert list(table.columns) == ["Kind", "n", "Telugu", "Uyghur", "Average"]
    assert table.loc["a", "Average"] == pytest.approx(35.0)
    assert math.isnan(table.loc["b", "Average"]) and math.isnan(table.loc["c", "Average"])


def test_the_english_control_comes_after_the_average_and_is_not_in_it():
    with_english = pd.concat([RESULTS, rows(("a", "lrm_sib_eng_test", "eng", "acc", 0.90),
                                            ("b", "lrm_sib_eng_test", "eng", "acc", 0.80))])
    scores = tables.main_scores(with_english, "test", main_metric)
    table = tables.overview_table(scores, tables.model_kinds(scores, MODELS)).frame
    assert list(table.columns) == ["Kind", "n", "Telugu", "Uyghur", "Average", "English"]
    assert table.loc["a", "Average"] == pytest.approx(35.0)  # Telugu and Uyghur only, as without English
    assert table.loc["a", "English"] == pytest.approx(90.0)
    assert math.isnan(table.loc["c", "English"]) and math.isnan(table.loc["c", "Average"])


def test_tasks_outside_a_languages_default_suite_are_shown_but_not_averaged():
    """`harness eval --suite all` stores SIB-200 for Uyghur for one model: no average changes, and the
    Uyghur table shows it beside the MLiC-Eval task; Khalkha Mongolian (extra) stays out of the Average."""
    more = pd.concat([RESULTS, rows(("a", "lrm_sib_uig_test", "uig", "acc", 0.90),
                                    ("a", "lrm_sib_khk_test", "khk", "acc", 0.60),
                                    ("b", "lrm_sib_bod_test", "bod", "acc", 0.30))])
    scores = tables.main_scores(more, "test", main_metric)
    kinds = tables.model_kinds(scores, MODELS)
    table = tables.overview_table(scores, kinds).frame
    assert list(table.columns) == ["Kind", "n", "Telugu", "Uyghur", "Average", "Khalkha Mongolian"]  # no Tibetan average
    assert table.loc["a", "Uyghur"] == pytest.approx(40.0) and table.loc["b", "Uyghur"] == pytest.approx(40.0)
    assert table.loc["a", "Average"] == pytest.approx(35.0) and table.loc["a", "Khalkha Mongolian"] == pytest.approx(60.0)
    uyghur = tables.language_table(scores, "uig", kinds)
    assert uyghur.score_columns == ["SIB-200", "TC", "Average"]
    assert uyghur.frame.loc["a", "SIB-200"] == pytest.approx(90.0) and uyghur.frame.loc["a", "Average"] == pytest.approx(40.0)
    assert tables.language_table(scores, "bod", kinds).score_columns == ["SIB-200"]  # nothing to average


def test_rows_in_kind_order_with_method_labels():
    table = overview().frame
    assert list(table.index) == ["c", "b", "a"]  # base, sft, merge
    assert table["Kind"].tolist() == ["Base", "SFT", "Merge (TIES-SV)"]
    assert list(overview(["merge", "sft"]).frame.index) == ["b", "a"]


def test_model_missing_from_models_table_is_unknown_kind():
    scores = tables.main_scores(RESULTS, "test", main_metric)
    kinds = tables.model_kinds(scores, MODELS[MODELS["model"] != "b"])
    assert kinds.loc["b", "label"] == "unknown"


def test_marks_compare_displayed_values_and_skip_missing():
    values = pd.DataFrame({"X": [40.04, 39.96, 38.0, float("nan")], "Y": [1.0, float("nan"), float("nan"), float("nan")]},
                          index=["m1", "m2", "m3", "m4"])
    table = score_table(values)
    marks = tables.rank_marks(table)
    assert marks["X"].tolist() == ["best", "best", "second", ""]  # 40.04 and 39.96 both read 40.0
    assert marks["Y"].tolist() == ["best", "", "", ""]


def test_language_table_orders_task_families_like_the_paper():
    scores = tables.main_scores(RESULTS, "test", main_metric)
    table = tables.language_table(scores, "tel", tables.model_kinds(scores, MODELS))
    assert table.score_columns == ["SIB-200", "MGSM", "Average"]
    assert table.frame.loc["a", "MGSM"] == pytest.approx(10.0)
    assert tables.task_label("my_custom_task") == "my_custom_task"


def test_metric_stored_per_filter_is_found():
    """evaluate stores each (metric, filter) a task reports; the first filter by name, or none, is shown."""
    results = rows(
        ("a", "lrm_mgsm_tel_test", "tel", "exact_match", 0.05),
        ("a", "lrm_mgsm_tel_test", "tel", "exact_match", 0.25),
        ("b", "lrm_mgsm_tel_test", "tel", "exact_match", 0.30),
        ("b", "lrm_mgsm_tel_test", "tel", "exact_match", 0.35),
        filters=["strict-match", "flexible-extract", "flexible-extract", "none"],
    )
    scores = tables.main_scores(results, "test", main_metric).set_index("model")
    assert (scores.loc["a", "metric"], scores.loc["a", "filter"]) == ("exact_match", "flexible-extract")
    assert scores.loc["a", "value"] == 0.25
    assert scores.loc["b", "value"] == 0.35  # the unfiltered value wins
    shown = tables.task_scores_table(scores.reset_index(), "a")
    assert shown["Metric"].tolist() == ["exact_match (flexible-extract)"]


def test_partial_averages_name_the_default_suite_tasks_no_model_has():
    from leaderboard.tables import partial_averages

    scores = pd.DataFrame({
        "model": ["a", "a", "b", "a", "a"],
        "task": ["lrm_sib_tel_dev", "lrm_mgsm_tel_dev", "lrm_belebele_tel_dev", "lrm_sib_tam_dev", "lrm_belebele_tam_dev"],
        "lang": ["tel", "tel", "tel", "tam", "tam"],
        "value": [0.1, 0.2, 0.3, 0.4, 0.5],
    })
    assert partial_averages(scores) == {}
    assert partial_averages(scores[scores["model"] == "a"]) == {"tel": ["lrm_belebele_tel_dev"]}


FAMILY_RESULTS = rows(
    ("base", "lrm_mlic_tc_uig_test", "uig", "acc", 0.30), ("base", "lrm_mlic_tc_bod_test", "bod", "acc", 0.20),
    ("ct-uig", "lrm_mlic_tc_uig_test", "uig", "acc", 0.50), ("ct-bod", "lrm_mlic_tc_bod_test", "bod", "acc", 0.40),
    ("ties-uig-flan", "lrm_mlic_tc_uig_test", "uig", "acc", 0.70), ("ties-bod-flan", "lrm_mlic_tc_bod_test", "bod", "acc", 0.60),
    ("wavg-uig-flan", "lrm_mlic_tc_uig_test", "uig", "acc", 0.65), ("wavg-bod-flan", "lrm_mlic_tc_bod_test", "bod", "acc", 0.55),
    ("ctsft-uig-mt", "lrm_mlic_tc_uig_test", "uig", "acc", 0.90),
    ("ties-uig-flan@best", "lrm_mlic_tc_uig_test", "uig", "acc", 0.95),
)
FAMILY_MODELS = pd.DataFrame({
    "model_hash": [f"{m}-hash" for m in ("base", "ct-uig", "ct-bod", "ties-uig-flan", "ties-bod-flan", "wavg-uig-flan",
                                          "wavg-bod-flan", "ctsft-uig-mt", "ties-uig-flan@best")],
    "model": ["base", "ct-uig", "ct-bod", "ties-uig-flan", "ties-bod-flan", "wavg-uig-flan", "wavg-bod-flan", "ctsft-uig-mt",
              "ties-uig-flan@best"],
    "kind": ["base", "ct", "ct", "merge", "merge", "merge", "merge", "ctsft", "merge"],
    "langs": ["", "uig", "bod", "uig", "bod", "uig", "bod", "uig", "uig"],
    "recipe_json": [None, None, None] + [json.dumps({"merge_method": m}) for m in ("ties", "ties", "linear", "linear")]
                   + [None, json.dumps({"merge_method": "ties"})],
})


def test_table3_rows_are_recipe_families_averaged_over_languages():
    scores = tables.main_scores(FAMILY_RESULTS, "test", main_metric)
    table = tables.family_table(scores, tables.model_kinds(scores, FAMILY_MODELS))
    # Kind order, merges WAVG before TIES; the CT-then-SFT family keeps its data suffix; no sweep trial.
    assert list(table.frame.index) == ["base", "CT-X", "CTSFT-X-mt", "WAVG-X", "TIES-X"]
    assert table.frame.loc["TIES-X", ["Tibetan", "Uyghur", "Average"]].tolist() == pytest.approx([60.0, 70.0, 65.0])
    assert table.frame.loc["CT-X", "Average"] == pytest.approx(45.0)
    assert math.isnan(table.frame.loc["CTSFT-X-mt", "Average"])  # no Tibetan member
    assert table.frame.loc["TIES-X", "n"] == "200"
    assert "test split" in table.title
    assert tables.rank_marks(table).loc["TIES-X", "Average"] == "best"


def test_a_row_scored_on_fewer_items_is_flagged_last_and_never_ranked():
    limited = pd.concat([RESULTS, rows(("d", "lrm_mlic_tc_uig_test", "uig", "acc", 0.95))])
    limited.loc[limited["model"] == "d", "n"] = 5
    scores = tables.main_scores(limited, "test", main_metric)
    table = tables.overview_table(scores, tables.model_kinds(scores, MODELS))
    assert list(table.frame.index)[-1] == "d"
    assert table.frame.loc["d", "n"] == "limit 5"
    assert table.frame.loc["a", "n"] == "300"  # SIB, MGSM and TC: 100 items each
    marks = tables.rank_marks(table)
    assert marks.at["d", "Uyghur"] == "" and marks.at["a", "Uyghur"] == "best"  # 95 on 5 items outranks nothing
    assert table.cells.stderr.at["a", "Telugu"] == pytest.approx(100 * (2 * 0.01**2) ** 0.5 / 2)


def test_markdown_cells_show_ids_as_typed():
    assert tables.markdown_text("ties-uig-flan@sft-flan.density=0.2") == r"ties\-uig\-flan\@sft\-flan\.density\=0\.2"
    html = tables.styled(score_table(pd.DataFrame({"X": [1.0]}, index=["a@b.c"]))).to_html()
    assert r"a\@b\.c" in html


def test_normalised_scores_against_the_ingredients_and_the_upper_bound():
    from leaderboard.tables import normalised_scores

    values = pd.DataFrame({"Tamil": [20.0, 30.0, 40.0, 60.0, 25.0], "Uyghur": [50.0, 20.0, 45.0, 50.0, None]},
                          index=["CT-X", "sft-flan", "TIES-X", "CTSFT-X-mt", "WAVG-X"])
    kinds = pd.Series({"CT-X": "ct", "sft-flan": "sft", "TIES-X": "merge", "CTSFT-X-mt": "ctsft", "WAVG-X": "merge"})
    normalised = normalised_scores(values, kinds)
    assert list(normalised.gain.index) == ["TIES-X", "WAVG-X"]
    # Tamil: better ingredient 30 (sft), upper bound 60. Uyghur: better 50 (CT), upper bound 50: no room.
    assert normalised.gain.loc["TIES-X"].tolist()[:2] == [10.0, -5.0]
    assert normalised.gain.loc["TIES-X", "Average"] == 2.5
    assert normalised.gap_closed.loc["TIES-X", "Tamil"] == pytest.approx(100 * 10 / 30)
    assert math.isnan(normalised.gap_closed.loc["TIES-X", "Uyghur"])
    assert normalised.gain.loc["WAVG-X", "Tamil"] == -5.0 and math.isnan(normalised.gain.loc["WAVG-X", "Average"])
