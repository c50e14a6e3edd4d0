"""The leaderboard and `harness report` on the zoo's own results (issue #19's done-when): the store that
tests/zoo/conftest.py fills with `harness eval`, `curve`, `sweep`, `maintain` and `analyze` on the built
zoo, opened with Streamlit's AppTest, in headless Chromium (a screenshot per view), and written out as a
report whose SVGs name what they draw. The scores are whatever the zoo measures: the tests assert what
each view shows and that it agrees with the store, never a level."""

import json
import re

import pandas as pd
import pytest

from harness.store import ResultStore
from tests.leaderboard.test_app import marks, models_rows, open_app, open_details, show
from tests.leaderboard.test_report import svg_text
from tests.zoo.conftest import MVF_MODELS, UIG_MODELS

FAMILIES = ["base", "CT-X", "sft-flan", "CTSFT-X-flan", "CTSFT-X-mt", "WAVG-X", "TIES-X", "TIES-SV-X"]


def open_zoo_app(zoo_store, monkeypatch):
    """The leaderboard on the zoo's store, on the dev split, with the zoo's home (where the runs' sample
    logs are: the store records their paths relative to it)."""
    import streamlit

    monkeypatch.setenv("HARNESS_HOME", str(zoo_store.home))
    streamlit.cache_data.clear()  # another test's app, in this process, resolved the logs against its own home
    return on_dev(open_app(zoo_store.url, monkeypatch))


def on_dev(app):
    app.sidebar.selectbox(key="split").set_value("dev").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def dev_averages(url: str) -> pd.DataFrame:
    """Model x language: the mean of the dev main-metric scores in %, straight from the store."""
    from tasks.suite import main_metric

    store = ResultStore(url)
    results = store.results(latest_only=True)
    store.engine.dispose()
    dev = results[(results["split"] == "dev") & (results["metric"] == results["task"].map(main_metric))]
    return dev.groupby(["model", "lang"])["value"].mean().unstack() * 100


def test_overview_is_table3_of_the_zoo_with_tie_marks_and_normalised_scores(zoo_store, monkeypatch):
    app = open_zoo_app(zoo_store, monkeypatch)
    table = app.table[0]
    frame = table.value
    assert list(frame.index) == FAMILIES
    expected = dev_averages(zoo_store.url)
    for family, model in (("CT-X", "ct-uig"), ("TIES-X", "ties-uig-flan"), ("TIES-SV-X", "ties-sv-uig-flan"),
                          ("CTSFT-X-mt", "ctsft-uig-mt")):
        assert frame.loc[family, "Uyghur"] == pytest.approx(expected.loc[model, "uig"]), family
    # Every family has both languages, so every row has an Average (the paper's question, answerable).
    assert frame[["Uyghur", "Mongolian (traditional script)", "Average"]].notna().all().all()
    # All measured on the same full dev items: no row flagged "limit N", so all are ranked and marked.
    assert frame["n"].nunique() == 1 and not frame["n"].str.contains("limit").any()
    # The best of each column is bold; the marks come from the paired bootstrap on the real sample logs.
    found = marks(table)
    for column in ("Uyghur", "Average"):
        best = [row for (row, col), mark in found.items() if col == column and mark == "best"]
        assert best and frame.loc[best[0], column] == frame[column].max(), column
    assert any("Holm" in c.value for c in app.caption)
    (normalised,) = [e for e in open_details(app, "normalised").expander if e.label.startswith("Normalised scores")]
    gain = normalised.table[0].value
    assert list(gain.index) == ["WAVG-X", "TIES-X", "TIES-SV-X"]
    better = max(frame.loc["CT-X", "Uyghur"], frame.loc["sft-flan", "Uyghur"])
    assert gain.loc["TIES-X", "Uyghur"] == pytest.approx(frame.loc["TIES-X", "Uyghur"] - better, abs=0.05)


def test_models_table_flags_nothing_and_hides_the_sweeps_trials(zoo_store, monkeypatch):
    app = models_rows(open_zoo_app(zoo_store, monkeypatch))
    models = set(app.table[0].value.index)
    assert set(UIG_MODELS) | set(MVF_MODELS) <= models
    assert not app.table[0].value["n"].str.contains("limit").any()  # the sweep's trials too: full dev
    trials = {m for m in models if "@" in m}
    assert len([m for m in trials if m.startswith("ties-uig-flan@") and "density" in m]) == 4  # the 2x2 sweep
    app.sidebar.checkbox(key="hide-trials").check().run()
    assert not {m for m in app.table[0].value.index if "@" in m}


def test_checkpoint_curves_of_uyghur(zoo_store, monkeypatch):
    app = show(open_zoo_app(zoo_store, monkeypatch), "Checkpoint curves")
    # Uyghur's curve (harness curve) and Mongolian's CT-X points (its checkpoints record their tokens).
    languages = [h.value for h in app.subheader]
    assert "Uyghur" in languages
    charts = app.get("vega_lite_chart")
    assert len(charts) == len(languages)
    chart = charts[languages.index("Uyghur")]
    assert {layer["mark"]["type"] for layer in json.loads(chart.proto.spec)["layer"]} >= {"line"}
    curve = app.table[languages.index("Uyghur")].value
    assert {"CT-X", "TIES-X", "CTSFT-X-flan", "CTSFT-X-mt"} <= set(curve.index)
    # The zoo's CT checkpoints (3) and the CT model itself: four points on CT-X and TIES-X, in token order.
    assert curve.loc[["CT-X", "TIES-X"]].notna().sum(axis=1).tolist() == [4, 4]
    assert list(curve.columns) == sorted(curve.columns)
    expected = dev_averages(zoo_store.url)
    assert curve.loc["TIES-X"].dropna().iloc[-1] == pytest.approx(expected.loc["ties-uig-flan", "uig"], abs=0.05)


def test_model_page_shows_the_merges_own_conflict_statistics(zoo_store, monkeypatch):
    app = show(open_zoo_app(zoo_store, monkeypatch), "Model")
    app.selectbox(key="model").set_value("ties-sv-uig-flan").run()
    recipe, conflicts, scores = (t.value for t in app.table)
    # The merge's own statistics, as the build recorded them in the store, are what the page shows.
    store = ResultStore(zoo_store.url)
    records = store.models()
    store.engine.dispose()
    stats = json.loads(records.loc[records["model"] == "ties-sv-uig-flan", "stats_json"].iloc[-1])["total"]
    shown = conflicts.assign(model=conflicts["model"].str.replace(" (protected)", "")).set_index("model")
    assert set(shown.index) == {"sft-flan", "ct-uig"}
    for model, counts in stats.items():
        assert shown.loc[model, ["parameters", "kept by slack"]].tolist() == [counts["params"], counts["kept_by_slack"]]
    assert shown.loc["ct-uig", "discarded (% of kept)"] > 0 and shown.loc["sft-flan", "kept by slack"] > 0
    assert len(app.get("vega_lite_chart")) >= 2  # by tensor type and by layer
    assert set(scores["Task"]) == {f"lrm_mlic_{t}_uig_dev" for t in ("tc", "mrc", "rs", "math")}
    # The sample browser reads the run's real lm-eval logs (stored relative to the harness home).
    app.selectbox(key="samples-task").set_value("lrm_mlic_tc_uig_dev").run()
    browsed = app.dataframe[-1].value
    n = int(scores.set_index("Task").loc["lrm_mlic_tc_uig_dev", "n"])
    assert len(browsed) == n and browsed["correct"].sum() == round(
        scores.set_index("Task").loc["lrm_mlic_tc_uig_dev", "Score (%)"] * n / 100)


def test_compare_two_merges_on_shared_items_with_a_bootstrap_ci(zoo_store, monkeypatch):
    app = show(open_zoo_app(zoo_store, monkeypatch), "Compare")
    app.selectbox(key="compare-a").set_value("ct-uig").run()
    app.selectbox(key="compare-b").set_value("ties-uig-flan").run()
    table = app.table[0].value
    assert list(table.index)[:4] == [f"lrm_mlic_{t}_uig_dev" for t in ("tc", "mrc", "rs", "math")]
    tc = table.loc["lrm_mlic_tc_uig_dev"]
    assert re.fullmatch(r"\[[-+]\d+\.\d+, [-+]\d+\.\d+\]", tc["95% CI"]), tc["95% CI"]
    assert tc["Δ (points)"] == pytest.approx(tc["B (%)"] - tc["A (%)"], abs=0.05)


def test_multi_language_view_sets_the_two_language_merge_against_the_one_language_ones(zoo_store, monkeypatch):
    app = show(open_zoo_app(zoo_store, monkeypatch), "Multi-language")
    headers = [h.value for h in app.header]
    assert "Multi-language merges: Mongolian (traditional script) + Uyghur (dev)" in headers
    assert "ties-mvf-uig-flan" in set(app.table[0].value.index)
    # Per language, the two-language merge against the one-language merge of the same method, from the store.
    comparison = app.table[-1].value
    expected = dev_averages(zoo_store.url)
    for lang, name, single in (("uig", "Uyghur", "ties-uig-flan"), ("mvf", "Mongolian (traditional script)", "ties-mvf-flan")):
        row = comparison.loc[name]
        assert row["one-language merge"] == single
        assert row["Δ (points)"] == pytest.approx(
            expected.loc["ties-mvf-uig-flan", lang] - expected.loc[single, lang], abs=0.05), name


def test_sweeps_view_draws_the_zoo_sweep_and_its_conflicts(zoo_store, monkeypatch):
    app = show(open_app(zoo_store.url, monkeypatch), "Sweeps")
    trials = app.table[0].value
    assert len(trials) == 4  # the 2x2 grid
    assert any("Chosen:" in m.value for m in app.markdown)
    assert len(app.get("vega_lite_chart")) >= 2  # the grid's heatmap and the conflict analysis


def test_report_of_the_zoo_names_its_models_and_languages(zoo_store, tmp_path):
    from harness import cli

    out = tmp_path / "paper"
    assert cli.main(["report", "--out", str(out), "--store", zoo_store.url, "--split", "dev"]) == 0
    table3 = (out / "tables" / "table3-dev.md").read_text()
    assert all(family in table3 for family in FAMILIES) and "Uyghur" in table3
    drawn = svg_text(out / "figures" / "uig-average-dev.svg")
    assert set(UIG_MODELS) <= drawn and any("Uyghur" in text for text in drawn)
    curve = svg_text(out / "figures" / "uig-curve-dev.svg")
    assert {"CT-X", "TIES-X"} <= curve and any("Uyghur" in text for text in curve)
    density = svg_text(out / "figures" / "conflicts-density.svg")
    assert "Uyghur" in density
    assert (out / "tables" / "table5-mvf-uig-dev.md").exists()
    heatmap = svg_text(out / "figures" / "similarity_base.svg")
    assert {"lora-uig", "lora-comb"} <= heatmap


# ---------------------------------------------------------------- every view in a real browser

def zoo_view_checks(zoo_store, monkeypatch) -> dict[str, tuple[str, int]]:
    """View -> (the header it shows on the zoo's dev results, how many charts AppTest finds in it)."""
    from leaderboard.views import SNAPSHOT_VIEWS, VIEWS

    headers = {"Overview": "Overview (dev)", "Per language": "Uyghur (dev)", "Model": "ties-sv-uig-flan",
               "Compare": "ct-mvf − base (dev)",
               "Multi-language": "Multi-language merges: Mongolian (traditional script) + Uyghur (dev)",
               "Checkpoint curves": "Checkpoint curves (dev)", "Sweeps": "Sweeps (dev)",
               "Language vectors": "Language vectors: cosine similarity",
               "Maintenance": "Maintenance cost (Table 2 of Dmonte et al.)"}
    assert set(headers) == {*VIEWS, *SNAPSHOT_VIEWS}
    app = open_zoo_app(zoo_store, monkeypatch)
    checks = {}
    for view, header in headers.items():
        show(app, view)
        if view == "Model":
            app.selectbox(key="model").set_value("ties-sv-uig-flan").run()
        assert header in [h.value for h in app.header], view
        checks[view] = (header, len(app.get("vega_lite_chart")))
    return checks


def test_every_view_of_the_zoo_renders_in_chromium(zoo_store, monkeypatch, tmp_path):
    from tests.leaderboard.test_browser import CHROMIUM, chromium, render_every_view

    if CHROMIUM is None:
        pytest.skip("no chromium binary (apt-get install chromium chromium-driver)")
    checks = zoo_view_checks(zoo_store, monkeypatch)
    # Each of the six parts draws from the zoo's data: curves, conflicts (model page, sweeps), heatmap.
    assert all(checks[view][1] >= 1 for view in ("Per language", "Checkpoint curves", "Language vectors"))
    assert checks["Model"][1] >= 2 and checks["Sweeps"][1] >= 2
    with chromium(tmp_path / "chromium-profile") as driver:
        shots = render_every_view(zoo_store.url, driver, tmp_path, checks, model="ties-sv-uig-flan", split="dev")
    assert len(shots) == len(checks)
