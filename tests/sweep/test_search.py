"""`harness sweep --search optuna`: seeded, resumable studies over ranges, and the guard against
selecting on test. Trials are built and scored by a stand-in backend (no zoo, no model): a model
hash from the recipe, a score from a smooth function of the densities."""

import hashlib
import json
import math

import optuna
import pytest

import harness.trials
from harness import HarnessError
from harness.grids import Grid, load_grid_file
from harness.registry import load_registry
from harness.search import Search, SearchSettings, load_space_file, space_of_grid
from harness.store import ResultStore, SweepId, sweep_trials
from harness.trials import TrialPlanner, TrialScorer, run_sweep, score_search, study_name

SFT, CT = "models.sft-flan.density", "models.ct-uig.density"
SCORING = "f" * 64  # the scoring identity every stand-in trial is scored under


class FakeBackend:
    """Builds nothing: the model hash is the recipe's; the score peaks at sft 0.7, ct 0.3."""

    def __init__(self, interrupt_on: int | None = None):
        self.evaluated = []  # trial model ids, in order
        self.interrupt_on = interrupt_on  # the n-th evaluation (1-based) raises KeyboardInterrupt

    def build(self, trial) -> str:
        return hashlib.sha256(json.dumps(trial.recipe, sort_keys=True).encode()).hexdigest()

    def evaluate(self, trial) -> tuple[dict[str, float], float]:
        self.evaluated.append(trial.model_id)
        if len(self.evaluated) == self.interrupt_on:
            raise KeyboardInterrupt  # as if Ctrl-C arrived during this trial
        p = trial.point
        return {"uig": 1 - (p[SFT] - 0.7) ** 2 - (p[CT] - 0.3) ** 2}, 0.0


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(f"{SFT}: {{low: 0.1, high: 1.0}}\n{CT}: {{low: 0.1, high: 1.0}}\n")
    return path


def search_once(store_url, search, backend):
    """One run of a search of ties-uig, as `run_sweep` scores it; the trials in study order."""
    planner = TrialPlanner(load_registry(), "ties-uig")
    sweep = SweepId(planner.entry.id, search.name)
    scorer = TrialScorer(ResultStore(store_url), sweep, SCORING, "dev", 2, backend)
    return score_search(planner, search, scorer, progress=False)


def seeded_points(tmp_path, space_file, seed, sampler, store):
    search = Search(load_space_file(space_file), SearchSettings(trials=7, sampler=sampler, seed=seed))
    return [t.point for t in search_once(f"sqlite:///{tmp_path / store}", search, FakeBackend())]


def test_a_seeded_search_draws_the_same_points_twice_and_another_seed_others(tmp_path, space_file):
    first = seeded_points(tmp_path, space_file, 0, "tpe", "a.db")
    assert len(first) == 7 and len({json.dumps(p) for p in first}) == 7
    assert all(0.1 <= value <= 1.0 for point in first for value in point.values())
    assert seeded_points(tmp_path, space_file, 0, "tpe", "b.db") == first
    assert seeded_points(tmp_path, space_file, 1, "tpe", "c.db") != first


def test_a_seeded_cmaes_search_draws_the_same_points_twice(tmp_path, space_file):
    first = seeded_points(tmp_path, space_file, 0, "cmaes", "a.db")
    assert len({json.dumps(p) for p in first}) == 7
    assert seeded_points(tmp_path, space_file, 0, "cmaes", "b.db") == first


def test_an_interrupted_search_resumes_its_study_without_rerunning_stored_trials(tmp_path, space_file):
    search = Search(load_space_file(space_file), SearchSettings(trials=6))
    uninterrupted = search_once(f"sqlite:///{tmp_path / 'whole.db'}", search, FakeBackend())

    store = f"sqlite:///{tmp_path / 'results.db'}"
    with pytest.raises(KeyboardInterrupt):
        search_once(store, search, FakeBackend(interrupt_on=3))
    sweep = SweepId("ties-uig-flan", "file:space/optuna-tpe-seed0")
    assert len(sweep_trials(ResultStore(store), sweep)) == 2

    backend = FakeBackend()
    resumed = search_once(store, search, backend)
    assert [t.point for t in resumed] == [t.point for t in uninterrupted]  # the points it would have drawn
    assert backend.evaluated == [t.model_id for t in resumed[2:]]  # the two stored trials are not scored again
    assert [t.status for t in resumed] == ["stored"] * 2 + ["evaluated"] * 4
    assert [t.score for t in resumed] == [t.score for t in uninterrupted]
    rows = sweep_trials(ResultStore(store), sweep)
    assert len(rows) == 6 and rows["model_hash"].nunique() == 6 and set(rows["split"]) == {"dev"}

    study = optuna.load_study(study_name=study_name(sweep, SCORING), storage=store)
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 6 and states.count("FAIL") == 1  # the interrupted trial

    backend = FakeBackend()
    assert [t.status for t in search_once(store, search, backend)] == ["stored"] * 6 and backend.evaluated == []


def test_a_trial_left_running_by_a_dead_process_is_asked_again(tmp_path, space_file):
    search = Search(load_space_file(space_file), SearchSettings(trials=4))
    uninterrupted = search_once(f"sqlite:///{tmp_path / 'whole.db'}", search, FakeBackend())
    store = f"sqlite:///{tmp_path / 'results.db'}"
    search_once(store, Search(search.space, SearchSettings(trials=2)), FakeBackend())
    study = optuna.load_study(study_name=study_name(SweepId("ties-uig-flan", search.name), SCORING), storage=store)
    study.ask()  # as a process killed mid-trial leaves it: running, never told

    backend = FakeBackend()
    resumed = search_once(store, search, backend)
    assert [t.point for t in resumed] == [t.point for t in uninterrupted]
    assert backend.evaluated == [t.model_id for t in resumed[2:]]
    assert [t.state.name for t in study.trials].count("RUNNING") == 0


def test_a_study_over_other_ranges_is_not_continued(tmp_path, space_file):
    store = f"sqlite:///{tmp_path / 'results.db'}"
    search_once(store, Search(load_space_file(space_file), SearchSettings(trials=1)), FakeBackend())
    space_file.write_text(f"{SFT}: {{low: 0.2, high: 1.0}}\n{CT}: {{low: 0.1, high: 1.0}}\n")
    with pytest.raises(HarnessError, match="searched other ranges"):
        search_once(store, Search(load_space_file(space_file), SearchSettings(trials=2)), FakeBackend())


@pytest.mark.parametrize(("text", "message"), [
    (f"{SFT}: {{low: 0.8, high: 0.2}}", f"{SFT} needs low < high, got low 0.8, high 0.2"),
    (f"{SFT}: {{low: 0.5, high: 0.5}}", f"{SFT} needs low < high"),
    (f"{SFT}: {{low: .nan, high: 0.5}}", f"{SFT} low must be a finite number, got nan"),
    (f"{SFT}: {{low: 0.1, high: .inf}}", f"{SFT} high must be a finite number, got inf"),
    (f"{SFT}: {{low: true, high: 0.5}}", f"{SFT} low must be a finite number, got True"),
    (f"{SFT}: {{low: 0.1}}", f"{SFT} must be a range {{low: ..., high: ...}}"),
    (f"{SFT}: [0.2, 0.4]", f"{SFT} must be a range"),
])
def test_bad_ranges_are_refused_naming_the_parameter(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text + "\n")
    with pytest.raises(HarnessError, match=f"^{path}: " + message.replace("[", r"\[").replace("{", r"\{")):
        load_space_file(path)


def test_ranges_must_lie_within_the_parameters_bounds_from_the_method_spec(tmp_path):
    planner = TrialPlanner(load_registry(), "ties-uig")

    def check(ranges):
        path = tmp_path / "space.yaml"
        path.write_text("".join(f"{key}: {{low: {low}, high: {high}}}\n" for key, (low, high) in ranges.items()))
        planner.check_space(Search(load_space_file(path), SearchSettings(trials=1)))

    check({SFT: (0.0, 1.0), "parameters.lambda": (0.5, 2.0)})  # the bounds are inclusive; lambda has none
    with pytest.raises(HarnessError, match=r"^search range sft-flan.density=1.5: .*density must be in \[0.0, 1.0\]"):
        check({SFT: (0.1, 1.5)})
    with pytest.raises(HarnessError, match=r"^search range ct-uig.density=-0.1: .*must be in \[0.0, 1.0\]"):
        check({CT: (-0.1, 0.5)})
    with pytest.raises(HarnessError, match=r"^search range seed=0.0: .*seed must be an integer"):
        check({"parameters.seed": (0, 9)})  # numbers only: a seed is no range
    with pytest.raises(HarnessError, match="the recipe has no model 'ct-tam'"):
        check({"models.ct-tam.density": (0.1, 0.5)})


def test_a_built_grid_becomes_the_ranges_spanning_it_and_a_grid_file_refuses_ranges(tmp_path, space_file):
    space = space_of_grid(Grid("densities", {SFT: [0.01, 0.2, 1.0], CT: [0.6, 0.4]}))
    assert {path: (r.low, r.high) for path, r in space.ranges.items()} == {SFT: (0.01, 1.0), CT: (0.4, 0.6)}
    with pytest.raises(HarnessError, match=f"{SFT} is a range, not a list of values: ranges need --search optuna"):
        load_grid_file(space_file)


def test_selecting_on_test_is_refused_without_the_flag(harness_cli):
    code, _, err = harness_cli("sweep", "--model", "ties-uig", "--grid", "densities", "--select-on", "test")
    assert code == 2
    assert err.strip().splitlines()[-1].endswith(
        "refusing to select on the test split: a model tuned on test has no held-out score left to report; "
        "select on dev (the default), or pass --i-know-this-is-test")
    with pytest.raises(HarnessError, match="refusing to select on the test split"):
        run_sweep(load_registry(), "ties-uig", Grid("g", {SFT: [0.2]}), None, select_split="test")


def test_search_options_need_search_and_search_needs_trials(harness_cli, space_file):
    code, _, err = harness_cli("sweep", "--model", "ties-uig", "--grid", "densities", "--trials", "5")
    assert code == 2 and "--trials only apply with --search optuna" in err
    code, _, err = harness_cli("sweep", "--model", "ties-uig", "--grid-file", str(space_file), "--search", "optuna")
    assert code == 2 and "--search optuna needs --trials N" in err
    code, _, err = harness_cli("sweep", "--model", "ties-uig", "--grid", "densities", "--search", "optuna",
                               "--trials", "0")
    assert code == 2 and "--trials must be a positive number of trials, got 0" in err


@pytest.mark.parametrize("select_split", ["dev", "test"])
def test_the_stored_trials_record_the_split_that_chose_the_best(tmp_path, monkeypatch, space_file, select_split):
    """With --i-know-this-is-test a sweep selects on test, under a name of its own."""
    monkeypatch.setattr(harness.trials, "scoring_identity", lambda tasks, settings: SCORING)
    monkeypatch.setattr(harness.trials, "MergedTrials", lambda *args: FakeBackend())
    store = f"sqlite:///{tmp_path / 'results.db'}"
    settings = harness.trials.EvalSettings(split=select_split, limit=2, backend="hf", store_url=store)
    search = Search(load_space_file(space_file), SearchSettings(trials=3))
    result = run_sweep(load_registry(), "ties-uig", search, settings, evaluate_test=False, progress=False,
                       select_split=select_split, allow_test_selection=True)
    name = "file:space/optuna-tpe-seed0" + ("" if select_split == "dev" else "/select-on-test")
    assert result.sweep == SweepId("ties-uig-flan", name) and result.select_split == select_split
    rows = sweep_trials(ResultStore(store), result.sweep)
    assert len(rows) == 3 and set(rows["split"]) == {select_split}
    chosen = rows[rows["chosen"]]
    assert len(chosen) == 1 and chosen["score"].iloc[0] == rows["score"].max() == result.best.score
    assert math.isclose(result.best.score, max(t.score for t in result.trials))
