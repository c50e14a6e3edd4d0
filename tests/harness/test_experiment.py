"""`harness experiment`: which models it runs, how TIES-SV follows TIES, and the table it prints."""

import math
from types import SimpleNamespace

import pytest

from harness import experiment
from harness.experiment import Cell, average_cell, format_table
from harness.grids import SLACKS
from harness.registry import load_registry


def test_a_cell_prints_percent_with_its_interval_and_a_dash_when_missing():
    assert Cell(0.4123, 0.0312).text() == "41.2 ± 3.1"
    assert Cell(0.5).text() == "50.0"
    assert Cell(None).text() == "–"


def test_the_average_of_languages_combines_their_intervals_as_independent():
    cell = average_cell([Cell(0.2, 0.03), Cell(0.4, 0.04)])
    assert cell.value == pytest.approx(0.3)
    assert cell.half_width == pytest.approx(math.sqrt(0.03 ** 2 + 0.04 ** 2) / 2)
    assert average_cell([Cell(0.2, 0.03), Cell(None)]).value is None  # no average over fewer languages


def test_the_table_has_a_row_per_family_and_a_column_per_language_plus_the_average():
    table = {("Base", "uig"): Cell(0.25, 0.02), ("Base", "bod"): Cell(0.27, 0.02), ("TIES-X", "uig"): Cell(0.3, 0.03)}
    lines = format_table(table, ["uig", "bod"], "T").splitlines()
    assert lines[2] == "| model | uig | bod | average |"
    assert lines[4].startswith("| Base | 25.0 ± 2.0 | 27.0 ± 2.0 | 26.0 ± 1.4")
    assert lines[5] == "| TIES-X | 30.0 ± 3.0 | – | – |"  # a missing language leaves the average missing


def test_base_and_sft_are_evaluated_once_for_all_languages_and_missing_ids_are_named(capsys):
    registry = load_registry("paper")  # has no CTSFT checkpoints
    rows = [row for row in experiment.ROWS if row.grid is None]
    plan = experiment._models_and_languages(registry, rows, ["uig", "bod"])
    assert plan["base"] == ["uig", "bod"] and plan["sft-flan"] == ["uig", "bod"]
    assert plan["ct-uig"] == ["uig"] and "ctsft-uig-mt" not in plan
    assert "the registry has no 'ctsft-uig-mt'" in capsys.readouterr().out


def test_ties_sv_is_tuned_over_the_slack_at_the_densities_ties_chose(monkeypatch):
    registry = load_registry("zoo")
    grids = {}

    def fake_sweep(registry, model_id, grid, settings, evaluate_test):
        grids[model_id] = grid
        point = grid.points()[len(grid.points()) // 2]
        return SimpleNamespace(best=SimpleNamespace(point=point), test_report=None)

    monkeypatch.setattr("harness.trials.run_sweep", fake_sweep)
    monkeypatch.setattr(experiment, "language_cells", lambda report: {"uig": Cell(0.5)})
    from harness.evaluation import EvalSettings

    cells = experiment.tune_merges(registry, "uig", EvalSettings())

    assert [row.label for row in cells] == ["WAVG-X", "TIES-X", "TIES-SV-X"]
    ties_choice = grids["ties-uig-flan"].points()[len(grids["ties-uig-flan"].points()) // 2]
    slack_points = grids["ties-sv-uig-flan"].points()
    assert [p["parameters.slack"] for p in slack_points] == SLACKS
    assert all({k: v for k, v in p.items() if k != "parameters.slack"} == ties_choice for p in slack_points)
