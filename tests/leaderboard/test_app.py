"""The leaderboard's views, run with Streamlit's AppTest on the store described in conftest.py."""

import json
import math
import re

import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from harness.paths import PROJECT_ROOT
from leaderboard.data import STORE_ENV

APP = str(PROJECT_ROOT / "leaderboard" / "app.py")


def open_app(url: str, monkeypatch) -> AppTest:
    monkeypatch.setenv(STORE_ENV, url)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def show(app: AppTest, view: str) -> AppTest:
    app.sidebar.radio(key="view").set_value(view).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def open_details(app: AppTest, key: str) -> AppTest:
    """Open one of the page's lazy expanders (views._details), as a click on its label does."""
    app.session_state[key] = True
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def models_rows(app: AppTest) -> AppTest:
    """The overview's per-model table (the default is Table 3's recipe families)."""
    app.radio(key="overview-rows").set_value("Models").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def marks(table) -> dict[tuple[str, str], str]:
    """(model, column) -> "best" | "second", read from the Styler CSS the table carries."""
    frame = table.value
    found = {}
    for selectors, props in re.findall(r"([^{}]+)\{([^}]*)\}", table.proto.arrow_data.styler.styles):
        mark = "best" if "font-weight: bold" in props else "second" if "underline" in props else None
        for row, col in re.findall(r"_row(\d+)_col(\d+)", selectors):
            found[(frame.index[int(row)], frame.columns[int(col)])] = mark
    return found


def shown_text(table):
    """What the browser draws in each cell (the Styler's display values)."""
    return convert_arrow_bytes_to_pandas_df(table.proto.arrow_data.styler.display_values)


def test_overview_per_model_on_test_by_default(store_url, monkeypatch):
    app = models_rows(open_app(store_url, monkeypatch))
    assert app.sidebar.selectbox(key="split").value == "test"
    table = app.table[0].value
    assert list(table.columns) == ["Kind", "n", "Tamil", "Telugu", "Uyghur", "Average"]
    assert list(table.index) == ["base", "ct-uig", "sft-flan", "ties-uig-flan", "ties-sv-uig-flan"]  # merges: TIES, then TIES-SV
    assert table.loc["base", ["Tamil", "Telugu", "Uyghur", "Average"]].tolist() == pytest.approx([35.0, 10.0, 30.0, 25.0])
    assert table.loc["sft-flan", "Average"] == pytest.approx(125 / 3)
    # The acc_norm row (not the main metric) and the old build of ties-sv (TC 10%) are not used.
    assert table.loc["ties-sv-uig-flan", "Uyghur"] == pytest.approx(61.0)
    assert table.loc["ties-sv-uig-flan", "Kind"] == "Merge (TIES-SV)"
    assert table.loc["ct-uig", "Kind"] == "CT"


def test_overview_shows_each_merge_against_its_ingredients(store_url, monkeypatch):
    app = open_app(store_url, monkeypatch)
    (expander,) = [e for e in app.expander if e.label.startswith("Normalised scores")]
    assert not expander.table  # closed: its tables are neither computed nor sent (the page's first paint)
    app = open_details(app, "normalised")
    (expander,) = [e for e in app.expander if e.label.startswith("Normalised scores")]
    gain = expander.table[0].value
    # Uyghur: TIES-X 60 (TC 80, math 40) against the better of CT-X 50 and sft-flan 40.
    assert gain.loc["TIES-X", "Uyghur"] == pytest.approx(10.0)
    assert list(gain.index) == ["TIES-X", "TIES-SV-X"]


def test_overview_states_partial_averages(store_url, monkeypatch):
    # The store has no Belebele for Telugu and no MRC/RS for Uyghur: their columns average what is there, and say so.
    app = open_app(store_url, monkeypatch)
    warning = " ".join(w.value for w in app.warning)
    assert "Telugu lacks lrm_belebele_tel_test" in warning
    assert "Uyghur lacks lrm_mlic_mrc_uig_test, lrm_mlic_rs_uig_test" in warning
    assert "Tamil" not in warning  # SIB-200 and Belebele: all of its default suite


def test_overview_marks_best_bold_and_second_underlined(store_url, monkeypatch):
    found = marks(models_rows(open_app(store_url, monkeypatch)).table[0])
    assert {cell for cell, mark in found.items() if mark == "best"} == {
        ("sft-flan", "Tamil"),
        ("sft-flan", "Telugu"),
        ("ties-sv-uig-flan", "Uyghur"),
        ("sft-flan", "Average"),
    }
    assert {cell for cell, mark in found.items() if mark == "second"} == {
        ("base", "Tamil"),
        ("base", "Telugu"),
        ("ties-uig-flan", "Uyghur"),
        ("base", "Average"),
    }


def test_missing_cells_show_a_dash_never_zero(store_url, monkeypatch):
    table = models_rows(open_app(store_url, monkeypatch)).table[0]
    # ties-uig-flan has Tamil SIB but not Belebele: its Tamil average is missing, not 50 or 25.
    assert math.isnan(table.value.loc["ties-uig-flan", "Tamil"])
    text = shown_text(table)
    assert text.loc["ties-uig-flan", "Tamil"] == "–"
    assert text.loc["ct-uig", "Average"] == "–"
    assert text.loc["ct-uig", "Uyghur"] == "50.0"
    assert "0.0" not in set(text.loc["ct-uig"])


def test_kind_filter_keeps_chosen_kinds_and_ranks_among_them(store_url, monkeypatch):
    app = models_rows(open_app(store_url, monkeypatch))
    app.sidebar.multiselect(key="kinds").set_value(["base", "merge"]).run()
    table = app.table[0]
    assert list(table.value.index) == ["base", "ties-uig-flan", "ties-sv-uig-flan"]
    found = marks(table)
    assert found[("base", "Tamil")] == "best"  # sft-flan filtered out
    assert found[("ties-sv-uig-flan", "Uyghur")] == "best"
    assert found[("ties-uig-flan", "Uyghur")] == "second"


def test_split_selector_shows_dev_results(store_url, monkeypatch):
    app = models_rows(open_app(store_url, monkeypatch))
    app.sidebar.selectbox(key="split").set_value("dev").run()
    table = app.table[0].value
    assert list(table.index) == ["base"]
    assert table.loc["base", "Tamil"] == pytest.approx(90.0)
    assert list(table.columns) == ["Kind", "n", "Tamil", "Average"]


def test_per_language_breakdown_with_bar_chart(store_url, monkeypatch):
    app = show(open_app(store_url, monkeypatch), "Per language")
    app.selectbox(key="language").set_value("uig").run()
    table = app.table[0].value
    assert list(table.columns) == ["Kind", "n", "TC", "Math", "Average"]
    assert table.loc["ties-sv-uig-flan", ["TC", "Math", "Average"]].tolist() == pytest.approx([82.0, 40.0, 61.0])
    assert marks(app.table[0])[("ties-sv-uig-flan", "TC")] == "best"
    (chart,) = app.get("vega_lite_chart")
    bars, rule = json.loads(chart.proto.spec)["layer"]
    assert bars["mark"]["type"] == "bar" and rule["mark"]["type"] == "rule"
    # Chance level of Uyghur's average here: TC (7 topics) and math (0), in %.
    assert any("chance level, 7.1%" in c.value for c in app.caption)
    # The table's downloads, then the chart's: PNG and SVG rendered on click, and the data it draws.
    assert [b.label for b in app.get("download_button")] == ["CSV", "Markdown", "LaTeX", "PNG", "SVG", "Chart data (CSV)"]


def test_model_page_recipe_conflicts_scores_and_samples(store_url, monkeypatch):
    app = show(open_app(store_url, monkeypatch), "Model")
    app.selectbox(key="model").set_value("ties-sv-uig-flan").run()
    text = " ".join(m.value for m in app.markdown)
    assert "TIES-SV" in text and "slack = 0.2" in text and "`base`" in text
    recipe, conflicts, scores = (t.value for t in app.table)
    assert recipe.set_index("model").loc["ct-uig", "density"] == 0.6
    assert conflicts.set_index("model").loc["ct-uig", "discarded (% of kept)"] == 25.0
    assert conflicts.set_index("model").loc["sft-flan (protected)", "kept by slack"] == 12
    scores = scores.set_index("Task")
    assert scores.loc["lrm_mlic_tc_uig_test", ["Score (%)", "Stderr (%)", "n"]].tolist() == [82.0, 5.0, 50]
    assert scores.loc["lrm_mlic_math_uig_test", "Metric"] == "exact_match"
    # The per-tensor table is sent only once its expander is opened.
    (closed,) = [e for e in app.expander if e.label == "Per tensor"]
    assert not closed.dataframe
    (opened,) = [e for e in open_details(app, "per-tensor").expander if e.label == "Per tensor"]
    per_tensor = opened.dataframe[0].value
    assert set(per_tensor["model"]) == {"sft-flan", "ct-uig"} and per_tensor["discarded"].sum() > 0
    # The sample browser: the TC log holds 50 documents, 41 right.
    app.selectbox(key="samples-task").set_value("lrm_mlic_tc_uig_test").run()
    browsed = app.dataframe[-1].value
    assert len(browsed) == 50 and browsed["correct"].sum() == 41
    first = browsed.set_index("doc_id").loc[0]
    assert (first["model answer"], first["target"], first["options / generation"]) == ("animals", "animals", "business | animals")
    app.checkbox(key="samples-wrong").check().run()
    assert list(app.dataframe[-1].value["doc_id"]) == list(range(41, 50))


def test_sample_browser_shows_generations(store_url, monkeypatch):
    app = show(open_app(store_url, monkeypatch), "Model")
    app.selectbox(key="model").set_value("ties-sv-uig-flan").run()
    app.selectbox(key="samples-task").set_value("lrm_mlic_math_uig_test").run()
    browsed = app.dataframe[-1].value.set_index("doc_id")
    assert browsed.loc[3, ["options / generation", "model answer", "target", "correct"]].tolist() == [" The answer is 5", "5", "5", True]
    assert browsed.loc[9, ["model answer", "target", "correct"]].tolist() == ["7", "11", False]


def test_model_without_recipe_or_logs_says_so(store_url, monkeypatch):
    app = show(open_app(store_url, monkeypatch), "Model")
    app.selectbox(key="model").set_value("base").run()
    assert len(app.table) == 1  # scores only: no recipe, no conflict statistics
    assert any("No per-sample logs" in i.value for i in app.info)


def test_compare_has_paired_bootstrap_ci(store_url, monkeypatch):
    app = show(open_app(store_url, monkeypatch), "Compare")
    app.selectbox(key="compare-a").set_value("ties-uig-flan").run()
    app.selectbox(key="compare-b").set_value("ties-sv-uig-flan").run()
    table = app.table[0].value
    tc = table.loc["lrm_mlic_tc_uig_test"]
    assert tc["Δ (points)"] == pytest.approx(2.0) and tc["n shared"] == "50"
    low, high = (float(x) for x in re.findall(r"[-+]\d+\.\d+", tc["95% CI"]))
    assert low <= 0.0 <= 2.0 <= high  # one item of 50 is no evidence
    assert tc["CI excludes 0"] == "no"
    math_row = table.loc["lrm_mlic_math_uig_test"]  # ties-uig-flan logged no math samples
    assert math_row["Δ (points)"] == pytest.approx(0.0) and math_row["95% CI"] == "–"


def test_empty_store_gets_a_message(empty_store_url, monkeypatch):
    app = open_app(empty_store_url, monkeypatch)
    assert not app.table
    assert "holds no results yet" in app.info[0].value and "harness eval" in app.info[0].value


def test_absent_store_gets_a_message_not_a_traceback(tmp_path, monkeypatch):
    app = open_app(f"sqlite:///{tmp_path / 'nothing-here.db'}", monkeypatch)
    assert "no results store at" in app.error[0].value
    assert not (tmp_path / "nothing-here.db").exists()  # reading never creates the file


def test_overview_defaults_to_table3_recipe_families_with_n(store_url, monkeypatch):
    app = open_app(store_url, monkeypatch)
    assert app.radio(key="overview-rows").value == "Recipe families (Table 3)"
    table = app.table[0].value
    assert list(table.index) == ["base", "CT-X", "sft-flan", "TIES-X", "TIES-SV-X"]
    assert table.loc["TIES-SV-X", "Uyghur"] == pytest.approx(61.0)
    assert table.loc["TIES-X", "n"] == "70"  # TC 50 + Math 20 items
    assert [b.label for b in app.get("download_button")] == ["CSV", "Markdown", "LaTeX"]


def test_kinds_filter_survives_a_split_change_and_sweep_trials_can_be_hidden(store_url, monkeypatch):
    from harness.store import ResultStore
    from tests.leaderboard.conftest import result_row

    store = ResultStore(store_url)
    store.write_task_results([result_row("ties-uig-flan@best", "hash-trial", "mlic_tc_uig", 0.95, n=5)])
    store.engine.dispose()
    app = models_rows(open_app(store_url, monkeypatch))
    table = app.table[0]
    assert list(table.value.index)[-1] == "ties-uig-flan@best"  # scored on 5 items: last, flagged, unranked
    assert table.value.loc["ties-uig-flan@best", "n"] == "limit 5"
    assert shown_text(table).loc["ties-uig-flan@best", "n"] == "⚠ limit 5"
    assert ("ties-uig-flan@best", "Uyghur") not in marks(table)
    app.sidebar.multiselect(key="kinds").set_value(["base", "merge"]).run()
    app.sidebar.selectbox(key="split").set_value("dev").run()
    assert app.sidebar.multiselect(key="kinds").value == ["base", "merge"]
    app.sidebar.selectbox(key="split").set_value("test").run()
    app.sidebar.checkbox(key="hide-trials").check().run()
    assert list(app.table[0].value.index) == ["base", "ties-uig-flan", "ties-sv-uig-flan"]


def test_compare_scores_a_and_b_on_the_shared_items_with_language_and_average_rows(store_url, monkeypatch, tmp_path, log_writers):
    app = show(open_app(store_url, monkeypatch), "Compare")
    app.selectbox(key="compare-a").set_value("ties-uig-flan").run()
    app.selectbox(key="compare-b").set_value("ties-sv-uig-flan").run()
    table = app.table[0].value
    assert list(table.index) == ["lrm_mlic_tc_uig_test", "lrm_mlic_math_uig_test", "Uyghur (mean of 2 tasks)",
                                 "Average (1 languages)"]  # the paper's task order: TC before Math
    tc = table.loc["lrm_mlic_tc_uig_test"]
    assert [tc["A (%)"], tc["B (%)"], tc["Δ (points)"]] == pytest.approx([80.0, 82.0, 2.0])  # 40 and 41 of 50 shared
    uyghur = table.loc["Uyghur (mean of 2 tasks)"]
    assert [uyghur["A (%)"], uyghur["B (%)"], uyghur["Δ (points)"]] == pytest.approx([60.0, 61.0, 1.0])
    assert table.loc["Average (1 languages)", "Δ (points)"] == pytest.approx(1.0)


def test_tie_marks_agree_with_the_compare_views_bootstrap(store_url, monkeypatch, tmp_path, log_writers):
    from harness.store import ModelRecord, ResultStore
    from tests.leaderboard.conftest import result_row, task_name

    # A third merge, right on 10 of the 50 TC documents: clearly below the best (TIES-SV, 41 of 50).
    run = tmp_path / "runs" / "wavg"
    log_writers.mc(run, task_name("mlic_tc_uig"), set(range(10)), 50)
    store = ResultStore(store_url)
    store.record_model(ModelRecord(model_hash="hash-wavg", model="wavg-uig-flan", kind="merge", langs=("uig",),
                                   recipe={"merge_method": "linear"}, stats=None))
    store.write_task_results([result_row("wavg-uig-flan", "hash-wavg", "mlic_tc_uig", 0.20, run_dir=run)])
    store.engine.dispose()
    app = show(open_app(store_url, monkeypatch), "Per language")
    app.selectbox(key="language").set_value("uig").run()
    table = app.table[0]
    tied = {model for model, text in shown_text(table)["TC"].items() if "†" in text}
    assert shown_text(table).loc["ties-uig-flan", "TC"] == "80.0 †"
    assert any("Holm" in c.value for c in app.caption)
    app.checkbox(key="intervals-uig-test").check().run()  # intervals on demand: each cell ± 1.96 stderr
    assert shown_text(app.table[0]).loc["ties-uig-flan", "TC"] == "80.0 ± 9.8 †"
    assert len(app.table) == 1  # the tie tests wait in their closed expander
    tests = open_details(app, "tie-tests-uig-test").table[1].value  # the tie tests, under the table
    tc_verdicts = dict(zip(tests.loc[tests["Column"] == "TC", "Model"], tests.loc[tests["Column"] == "TC", "Verdict"]))
    assert tc_verdicts == {"ties-uig-flan": "tie", "wavg-uig-flan": "different", "ct-uig": "not tested (no sample logs)",
                           "sft-flan": "not tested (no sample logs)", "base": "not tested (no sample logs)"}
    # The Compare view, A = the column's best, B = each other model with logs: CI excludes 0 <=> no tie mark.
    show(app, "Compare")
    app.selectbox(key="compare-a").set_value("ties-sv-uig-flan").run()
    for model in ("ties-uig-flan", "wavg-uig-flan"):
        app.selectbox(key="compare-b").set_value(model).run()
        excludes_zero = app.table[0].value.loc["lrm_mlic_tc_uig_test", "CI excludes 0"]
        assert excludes_zero == ("no" if model in tied else "yes"), model
    assert tied == {"ties-uig-flan"}
