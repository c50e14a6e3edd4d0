"""An Optuna search keeps its study in the results store, SQLite or PostgreSQL, beside its trials."""

import optuna
import pytest

from harness.search import Search, SearchSettings, load_space_file
from harness.store import ResultStore, SweepId, sweep_trials
from harness.trials import study_name
from tests.sweep.test_search import SCORING, FakeBackend, search_once


def test_a_search_study_lives_in_the_store_and_resumes_there(store_url, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("models.sft-flan.density: {low: 0.1, high: 1.0}\nmodels.ct-uig.density: {low: 0.1, high: 1.0}\n")
    search = Search(load_space_file(space), SearchSettings(trials=4))
    with pytest.raises(KeyboardInterrupt):
        search_once(store_url, search, FakeBackend(interrupt_on=3))
    backend = FakeBackend()
    trials = search_once(store_url, search, backend)
    assert [t.status for t in trials] == ["stored"] * 2 + ["evaluated"] * 2 and len(backend.evaluated) == 2

    sweep = SweepId("ties-uig-flan", "file:space/optuna-tpe-seed0")
    study = optuna.load_study(study_name=study_name(sweep, SCORING), storage=store_url)
    assert [t.state.name for t in study.trials].count("COMPLETE") == 4
    assert sorted(t.value for t in study.trials if t.value is not None) == sorted(t.score for t in trials)
    assert len(sweep_trials(ResultStore(store_url), sweep)) == 4
