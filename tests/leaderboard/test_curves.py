"""Checkpoint curves (the paper's Figure 2): the points, the chart, the page and the report's figure.

On conftest.py's `curve_store_url`: its store plus a Uyghur series, as `harness curve --model ties-uig` stores it:

    series         tokens 100     200              300 (the models of conftest.py)
    ct-uig         @step100 40.0  @step200 45.0    ct-uig         50.0 (TC 70, Math 30)
    ties-uig-flan  @step100 55.0  @step200 57.5    ties-uig-flan  60.0 (TC 80, Math 40)

Each checkpoint is scored on TC and Math (stderr 0.05 each: the language average's stderr is
100 * sqrt(2 * 0.05²) / 2 = 3.54 points). base and sft-flan record no tokens: no point.
"""

import json
import math

import pytest

from harness import cli
from leaderboard import curves, figures, tables
from leaderboard.data import main_metric_lookup, read_store
from tests.leaderboard.test_app import open_app, show
from tests.leaderboard.test_report import svg_text

STDERR_OF_AVERAGE = 100 * math.sqrt(2 * 0.05**2) / 2


def test_each_series_point_is_its_language_average_with_a_95_percent_interval(curve_store_url):
    snapshot = read_store(curve_store_url)
    scores = tables.main_scores(snapshot.results, "test", main_metric_lookup())
    points = curves.curve_points(scores, tables.model_kinds(scores, snapshot.models), snapshot.models)
    assert list(zip(points["line"], points["tokens"], points["score"])) == [
        ("CT-X", 100, 40.0), ("CT-X", 200, 45.0), ("CT-X", 300, 50.0),
        ("TIES-X", 100, 55.0), ("TIES-X", 200, 57.5), ("TIES-X", 300, 60.0)]
    assert set(points["lang"]) == {"uig"} and "base" not in set(points["model"])  # no tokens recorded: no point
    assert points["stderr"].tolist() == pytest.approx([round(STDERR_OF_AVERAGE, 2)] * 6)
    assert (points["high"] - points["score"]).tolist() == pytest.approx([1.96 * STDERR_OF_AVERAGE] * 6, abs=0.02)
    assert points.loc[points["model"] == "ct-uig@step100", "n"].item() == 70  # 50 TC + 20 Math items
    table = curves.curve_table(points)
    assert list(table.index) == ["CT-X", "TIES-X"] and list(table.columns) == [100, 200, 300]


def test_a_store_without_series_has_no_points(store_url):
    snapshot = read_store(store_url)
    scores = tables.main_scores(snapshot.results, "test", main_metric_lookup())
    assert curves.curve_points(scores, tables.model_kinds(scores, snapshot.models), snapshot.models).empty


def test_the_page_draws_a_curve_per_language_with_its_table(curve_store_url, monkeypatch):
    app = show(open_app(curve_store_url, monkeypatch), "Checkpoint curves")
    assert [h.value for h in app.subheader] == ["Uyghur"]
    (chart,) = app.get("vega_lite_chart")
    assert {layer["mark"]["type"] for layer in json.loads(chart.proto.spec)["layer"]} == {"rule", "line"}
    table = app.table[0].value
    assert list(table.index) == ["CT-X", "TIES-X"]
    assert table.loc["TIES-X"].tolist() == pytest.approx([55.0, 57.5, 60.0])
    assert {b.label for b in app.get("download_button")} >= {"PNG", "SVG", "Chart data (CSV)"}
    # Sweep trials hidden elsewhere: checkpoints (ids with '@') still make the curve.
    app.sidebar.checkbox(key="hide-trials").check().run()
    assert len(app.table) == 1 and not app.exception


def test_the_page_says_how_to_make_a_curve_when_there_is_none(store_url, monkeypatch):
    app = show(open_app(store_url, monkeypatch), "Checkpoint curves")
    assert any("harness curve --model ties-uig" in i.value for i in app.info)


def test_the_report_writes_each_languages_curve_naming_its_series(curve_store_url, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"report": cli.SUBCOMMANDS["report"]})
    out = tmp_path / "paper"
    assert cli.main(["report", "--out", str(out), "--store", curve_store_url, "--split", "test"]) == 0
    drawn = svg_text(out / "figures" / "uig-curve-test.svg")
    assert {"CT-X", "TIES-X", "CT tokens seen"} <= drawn
    assert any("Uyghur" in text and "test" in text for text in drawn)
    assert (out / "figures" / "uig-curve-test.csv").read_text().splitlines()[0] == ",".join(
        c for c in curves.COLUMNS if c != "lang")


def test_the_chart_colours_lines_by_kind_as_every_chart_does(curve_store_url):
    snapshot = read_store(curve_store_url)
    scores = tables.main_scores(snapshot.results, "test", main_metric_lookup())
    points = curves.curve_points(scores, tables.model_kinds(scores, snapshot.models), snapshot.models)
    spec = figures.checkpoint_curve(points, "Uyghur", "test", "uig-curve-test").chart.to_dict()
    lines = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "line")
    assert lines["encoding"]["color"]["scale"]["domain"] == figures.KIND_COLOURS.domain
    assert set(points["kind"]) == {"CT", "Merge (TIES)"}
