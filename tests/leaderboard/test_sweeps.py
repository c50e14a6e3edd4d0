"""The Sweeps view: a heatmap of dev score over the grid, the chosen point marked."""

import json

import pytest
from streamlit.testing.v1 import AppTest

from harness.paths import PROJECT_ROOT
from harness.store import ResultStore, SweepId, TrialRow, mark_sweep_choice, sweep_trials, write_sweep_trial
from leaderboard import sweeps
from leaderboard.data import STORE_ENV

APP = str(PROJECT_ROOT / "leaderboard" / "app.py")
SWEEP = SweepId("ties-uig-flan", "densities")
SCORES = {(0.2, 0.4): 0.30, (0.2, 1.0): 0.45, (0.8, 0.4): 0.50, (0.8, 1.0): 0.35}


def store_trials(url: str, scores: dict, limit: int | None = 10, sweep: SweepId = SWEEP) -> None:
    store = ResultStore(url)
    for (sft, ct), score in scores.items():
        point = {"models.sft-flan.density": sft, "models.ct-uig.density": ct}
        write_sweep_trial(store, TrialRow(
            sweep=sweep, trial_model=f"ties-uig-flan@{sft},{ct}", model_hash=f"h{sft}-{ct}-{limit}", params=point,
            recipe={}, split="dev", limit=limit, score=score, lang_scores={"uig": score},
            scoring_hash=f"scoring-{limit}"))
    best = max(scores, key=scores.get)
    mark_sweep_choice(store, sweep, f"h{best[0]}-{best[1]}-{limit}")


@pytest.fixture
def sweep_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    store_trials(url, {(0.2, 0.4): 0.9}, limit=2)  # an older quick run: other item count, not drawn
    store_trials(url, SCORES)
    return url


def test_grid_keeps_the_newest_limit_and_marks_the_choice(sweep_store):
    trials = ResultStore(sweep_store, readonly=True)

    grid = sweeps.sweep_grid(sweep_trials(trials), SWEEP)
    assert grid.axes == ["models.sft-flan.density", "models.ct-uig.density"]
    assert len(grid.trials) == 4
    chosen = grid.trials[grid.trials[sweeps.CHOSEN]]
    assert chosen[grid.axes].values.tolist() == [[0.8, 0.4]] and chosen[sweeps.SCORE].iloc[0] == 50.0
    assert sweeps.axis_label("models.sft-flan.density") == "sft-flan density"
    assert sweeps.axis_label("parameters.slack") == "slack"


def test_sweeps_view_draws_a_heatmap_and_names_the_chosen_point(sweep_store, monkeypatch):
    monkeypatch.setenv(STORE_ENV, sweep_store)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.sidebar.radio(key="view").set_value("Sweeps").run()
    assert not app.exception, [e.value for e in app.exception]
    assert "sft-flan density = 0.8, ct-uig density = 0.4 (dev 50.0)" in app.markdown[0].value
    table = app.table[0].value
    assert len(table) == 4 and table["chosen"].sum() == 1
    chart = json.loads(app.get("vega_lite_chart")[0].proto.spec)
    marks = {layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in chart["layer"]}
    assert marks == {"rect", "text"}


def test_sweeps_view_without_sweeps_says_how_to_run_one(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    ResultStore(url)  # an empty store
    monkeypatch.setenv(STORE_ENV, url)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.sidebar.radio(key="view").set_value("Sweeps").run()
    assert not app.exception
    assert "harness sweep --model ties-uig --grid densities" in app.info[0].value


def test_a_search_shows_its_best_score_so_far(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    search = SweepId("ties-uig-flan", "densities/optuna-tpe-seed0")
    store_trials(url, {(0.31, 0.52): 0.30, (0.77, 0.12): 0.45, (0.55, 0.93): 0.40}, sweep=search)
    grid = sweeps.sweep_grid(sweep_trials(ResultStore(url, readonly=True)), search)
    assert sweeps.is_search(search) and not sweeps.is_search(SWEEP)
    assert sweeps.best_so_far(grid)[sweeps.BEST_SO_FAR].tolist() == [30.0, 45.0, 45.0]

    monkeypatch.setenv(STORE_ENV, url)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.sidebar.radio(key="view").set_value("Sweeps").run()
    assert not app.exception, [e.value for e in app.exception]
    points, line = json.loads(app.get("vega_lite_chart")[0].proto.spec)["layer"]
    assert points["mark"]["type"] == "point" and line["mark"]["type"] == "line"
    assert not app.warning


def test_a_sweep_that_selected_on_test_is_flagged(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    store_trials(url, SCORES, sweep=SweepId("ties-uig-flan", "densities/select-on-test"))
    monkeypatch.setenv(STORE_ENV, url)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.sidebar.radio(key="view").set_value("Sweeps").run()
    assert "TEST split" in app.warning[0].value
