"""`harness sweep --executor ray` and `harness eval --executor ray`: a grid's trials, a search's points
and a list of models on Ray workers (harness.ray_trials).

The zoo tests start a local Ray instance of 1 or 2 workers, one core each, scoring with the hf
backend on 2 items per task: the same trials and best as the local executor, a rerun that resumes,
a worker killed by its pid mid-sweep whose trial another worker takes over, a search on one worker
that draws and stores what the local executor does, and models evaluated into the same results as
the local executor's. A stand-in search (no zoo) checks the study's trials in flight on 2 workers.
"""

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
import psutil
import pytest

from harness import HarnessError
from harness.evaluation import EvalSettings
from harness.registry import load_registry
from harness.search import Search, SearchSettings, load_space_file, point_of
from harness.store import ResultStore, SweepId, sweep_trials
from harness.trials import Trial, TrialPlanner, TrialScorer, study_name
from tests.conftest import PROJECT_ROOT
from tests.sweep.test_search import CT, SCORING, SFT, FakeBackend, search_once

SWEEP = SweepId("ties-uig-flan", "file:grid")


def sweep_argv(grid, store, *extra):
    return ("sweep", "--model", "ties-uig", "--grid-file", str(grid), "--limit", "2", "--backend", "hf",
            "--no-test", "--store", store, *extra)


def by_hash(store: str) -> pd.DataFrame:
    trials = sweep_trials(ResultStore(store), SWEEP)
    return trials.set_index("model_hash")[["trial_model", "params_json", "score", "lang_scores_json", "chosen"]]


# ---- without Ray or a zoo ------------------------------------------------------------------------

def test_the_local_executor_imports_no_ray():
    code = "import sys, harness.cli, harness.sweep, harness.trials; assert 'ray' not in sys.modules, 'ray imported'"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_executor_ray_without_ray_installed_says_how_to_install_it(harness_cli, grid_2x2, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    code, _, err = harness_cli(*sweep_argv(grid_2x2, f"sqlite:///{tmp_path / 'r.db'}", "--executor", "ray"))
    assert code == 2 and err.strip() == "harness sweep: error: --executor ray needs Ray: pip install .[ray]"
    assert not (tmp_path / "r.db").exists()  # refused before anything is built or stored


def test_ray_options_need_the_ray_executor(harness_cli, grid_2x2, tmp_path):
    store = f"sqlite:///{tmp_path / 'r.db'}"
    code, _, err = harness_cli(*sweep_argv(grid_2x2, store, "--address", "auto", "--workers", "2"))
    assert code == 2 and "--address, --workers only apply with --executor ray" in err
    code, _, err = harness_cli("eval", "--model", "ties-uig", "--model", "sft-flan", "--workers", "2", "--store", store)
    assert code == 2 and "--workers only apply with --executor ray" in err
    pytest.importorskip("ray")
    code, _, err = harness_cli(*sweep_argv(grid_2x2, store, "--executor", "ray", "--workers", "0"))
    assert code == 2 and "--workers must be a positive number, got 0" in err
    code, _, err = harness_cli("eval", "--model", "ties-uig", "--server", "http://127.0.0.1:8000", "--store", store,
                               "--executor", "ray")
    assert code == 2 and "--server cannot go with --executor ray: each Ray worker starts its own server" in err
    assert not (tmp_path / "r.db").exists()  # refused before anything is stored


@dataclass
class StandInJob:
    """A SweepJob whose workers score with StandInScorer (imported by the workers from this module)."""

    log_dir: Path
    settings: EvalSettings = field(default_factory=lambda: EvalSettings(backend="hf"))
    server_mode: str = "reload"

    def scorer(self, evaluator):
        return StandInScorer()


class StandInScorer:
    """Scores 0.5; the point `bad` fails as a bad recipe would, the point `poison` kills its worker."""

    def score(self, trial: Trial) -> Trial:
        if trial.point["x"] == "bad":
            raise HarnessError("grid point x=bad: not a density")
        if trial.point["x"] == "poison":
            os._exit(1)  # as a worker killed mid-trial
        trial.score, trial.status = 0.5, "evaluated"
        return trial


@pytest.mark.slow  # starts a Ray instance: about 20 s of both cores
def test_a_workers_error_is_one_line_and_a_trial_that_kills_every_worker_fails_the_sweep(tmp_path):
    ray = pytest.importorskip("ray")
    from harness.ray_trials import RaySettings, score_on_ray

    trials = [Trial({"x": x}, f"m@x={x}", {}) for x in ("a", "b", "c")]
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    try:
        job, settings = StandInJob(tmp_path), RaySettings(workers=2)
        scored = score_on_ray(trials, job, settings, progress=False)
        assert [t.point["x"] for t in scored] == ["a", "b", "c"] and {t.score for t in scored} == {0.5}
        with pytest.raises(HarnessError) as failed:
            score_on_ray([*trials, Trial({"x": "bad"}, "m@x=bad", {})], job, settings, progress=False)
        assert str(failed.value) == "grid point x=bad: not a density"  # the worker's error, not Ray's traceback
        with pytest.raises(HarnessError, match="every Ray worker died; the trials left are not scored"):
            score_on_ray([Trial({"x": "poison"}, "m@x=poison", {})], job, settings, progress=False)
    finally:
        ray.shutdown()


class SlowFakeBackend(FakeBackend):
    """FakeBackend (tests/sweep/test_search.py) whose evaluation takes a while, so trials overlap."""

    def evaluate(self, trial):
        time.sleep(0.5)
        return super().evaluate(trial)


@dataclass
class StandInSearchJob:
    """A SweepJob of a ties-uig search whose workers score with SlowFakeBackend into `store_url`."""

    store_url: str
    sweep: SweepId
    log_dir: Path
    scoring: str = SCORING
    server_mode: str = "reload"

    @property
    def settings(self) -> EvalSettings:
        return EvalSettings(backend="hf", store_url=self.store_url)

    def scorer(self, evaluator):
        return TrialScorer(ResultStore(self.store_url), self.sweep, SCORING, "dev", 2, SlowFakeBackend())


def most_trials_at_once(study) -> int:
    """The most trials of the study that ran at the same time (from their start and end times)."""
    events = sorted([(t.datetime_start, 1) for t in study.trials] + [(t.datetime_complete, -1) for t in study.trials],
                    key=lambda event: (event[0], event[1]))  # an end before a start at the same instant
    running, most = 0, 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


@pytest.mark.slow  # starts a Ray instance: about 30 s of both cores
def test_a_search_on_one_worker_draws_the_local_points_and_on_two_keeps_two_trials_in_flight(tmp_path):
    ray = pytest.importorskip("ray")
    from harness.ray_trials import RaySettings, search_on_ray

    space = tmp_path / "space.yaml"
    space.write_text(f"{SFT}: {{low: 0.1, high: 1.0}}\n{CT}: {{low: 0.1, high: 1.0}}\n")
    search = Search(load_space_file(space), SearchSettings(trials=6, seed=3))
    local = search_once(f"sqlite:///{tmp_path / 'local.db'}", search, FakeBackend())
    planner = TrialPlanner(load_registry(), "ties-uig")
    sweep = SweepId(planner.entry.id, search.name)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    try:
        one = StandInSearchJob(f"sqlite:///{tmp_path / 'one.db'}", sweep, tmp_path)
        on_one = search_on_ray(planner, search, one, RaySettings(workers=1), progress=False)
        assert [(t.point, t.score) for t in on_one] == [(t.point, t.score) for t in local]  # reproducible
        rerun = search_on_ray(planner, search, one, RaySettings(workers=1), progress=False)
        assert [t.status for t in rerun] == ["stored"] * 6 and [t.point for t in rerun] == [t.point for t in local]

        two = StandInSearchJob(f"sqlite:///{tmp_path / 'two.db'}", sweep, tmp_path)
        on_two = search_on_ray(planner, search, two, RaySettings(workers=2), progress=False)
    finally:
        ray.shutdown()
    study = optuna.load_study(study_name=study_name(sweep, SCORING), storage=two.store_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6  # none asked beyond --trials, none left running
    assert most_trials_at_once(study) == 2  # a trial per worker in flight, never more
    assert [t.point for t in on_two] == [point_of(t.params, search.space) for t in study.trials]  # study order
    rows = sweep_trials(ResultStore(two.store_url), sweep)
    assert len(rows) == len({t.model_hash for t in on_two}) and rows["model_hash"].is_unique


# ---- on the zoo, on a local Ray instance ---------------------------------------------------------

def test_ray_sweep_stores_the_same_trials_and_best_as_the_local_one_and_resumes(use_zoo_home, harness_cli,
                                                                                grid_2x2, tmp_path):
    pytest.importorskip("ray")
    local, on_ray = f"sqlite:///{tmp_path / 'local.db'}", f"sqlite:///{tmp_path / 'ray.db'}"
    code, _, err = harness_cli(*sweep_argv(grid_2x2, local))
    assert code == 0, err
    code, out, err = harness_cli(*sweep_argv(grid_2x2, on_ray, "--executor", "ray", "--workers", "2"))
    assert code == 0, err
    assert "4 trial(s), 4 evaluated, 0 already stored" in out
    expected, got = by_hash(local), by_hash(on_ray)
    assert len(got) == 4 and got.index.is_unique
    pd.testing.assert_frame_equal(got.sort_index(), expected.sort_index())  # same trials, scores and best
    assert got["chosen"].sum() == 1

    results = ResultStore(on_ray).results(latest_only=False)
    assert results["model_hash"].nunique() == 4 and set(results["backend"]) == {"hf"}
    assert not results.duplicated(["model_hash", "task", "metric", "filter"]).any()

    code, out, err = harness_cli(*sweep_argv(grid_2x2, on_ray, "--executor", "ray", "--workers", "2"))
    assert code == 0, err
    assert "4 trial(s), 0 evaluated, 4 already stored" in out
    assert len(sweep_trials(ResultStore(on_ray), SWEEP)) == 4


def test_a_worker_killed_mid_trial_hands_its_trial_to_another(use_zoo_home, grid_2x2, tmp_path):
    pytest.importorskip("ray")
    store = f"sqlite:///{tmp_path / 'ray.db'}"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "harness.cli", *sweep_argv(grid_2x2, store, "--executor", "ray", "--workers", "2")]
    sweep = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        kill_a_busy_worker(sweep, store)
        out, err = sweep.communicate(timeout=600)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, err
    assert "Ray worker died during trial" in err and "handing the trial to another worker" in err
    trials = sweep_trials(ResultStore(store), SWEEP)
    assert len(trials) == 4 and trials["model_hash"].is_unique  # every trial, each once
    assert "4 trial(s)" in out and trials["chosen"].sum() == 1
    results = ResultStore(store).results(latest_only=False)
    assert not results.duplicated(["model_hash", "task", "metric", "filter"]).any()


def kill_a_busy_worker(sweep: subprocess.Popen, store: str, patience_s: float = 300) -> int:
    """Once a first trial is stored, SIGKILL a worker busy with another (its process title is
    `ray::TrialWorker.score`); its pid."""
    deadline = time.monotonic() + patience_s
    while time.monotonic() < deadline and sweep.poll() is None:
        if len(sweep_trials(ResultStore(store, readonly=True), SWEEP)) >= 1:
            for process in psutil.Process(sweep.pid).children(recursive=True):
                try:
                    if " ".join(process.cmdline()).startswith("ray::TrialWorker.score"):
                        process.kill()
                        return process.pid
                except psutil.NoSuchProcess:
                    pass
        time.sleep(0.2)
    raise AssertionError(f"no busy worker to kill (sweep exit code {sweep.poll()})")


def test_a_search_on_one_ray_worker_stores_what_the_local_executor_does(use_zoo_home, harness_cli, tmp_path):
    pytest.importorskip("ray")
    space = tmp_path / "space.yaml"
    space.write_text(f"{SFT}: {{low: 0.1, high: 1.0}}\n{CT}: {{low: 0.1, high: 1.0}}\n")
    search = ("--search", "optuna", "--trials", "2", "--seed", "0")
    local, on_ray = f"sqlite:///{tmp_path / 'local.db'}", f"sqlite:///{tmp_path / 'ray.db'}"
    code, _, err = harness_cli(*sweep_argv(space, local, *search))
    assert code == 0, err
    code, out, err = harness_cli(*sweep_argv(space, on_ray, *search, "--executor", "ray", "--workers", "1"))
    assert code == 0, err
    assert "2 trial(s), 2 evaluated, 0 already stored" in out
    sweep = SweepId("ties-uig-flan", "file:space/optuna-tpe-seed0")
    expected, got = sweep_trials(ResultStore(local), sweep), sweep_trials(ResultStore(on_ray), sweep)
    columns = ["trial_model", "model_hash", "params_json", "score", "lang_scores_json", "chosen", "scoring_hash"]
    pd.testing.assert_frame_equal(got[columns].reset_index(drop=True), expected[columns].reset_index(drop=True))


def test_models_evaluated_on_ray_store_the_results_of_the_local_executor(use_zoo_home, harness_cli, tmp_path):
    pytest.importorskip("ray")
    models = ("--model", "ties-uig", "--model", "wavg-uig", "--model", "ct-uig")
    argv = ("eval", *models, "--split", "dev", "--limit", "2", "--backend", "hf")
    local, on_ray = f"sqlite:///{tmp_path / 'local.db'}", f"sqlite:///{tmp_path / 'ray.db'}"
    code, local_out, err = harness_cli(*argv, "--store", local)
    assert code == 0, err
    code, out, err = harness_cli(*argv, "--store", on_ray, "--executor", "ray", "--workers", "2")
    assert code == 0, err
    assert out.count("task(s) evaluated, 0 already stored") == 3
    assert report_heads(out) == report_heads(local_out)  # each model's report, in the order given

    key = ["model", "model_hash", "task", "metric", "filter"]
    same = ["value", "stderr", "n", "backend", "data_hash", "num_fewshot", "split"]
    expected = ResultStore(local).results(latest_only=False).sort_values(key).reset_index(drop=True)
    got = ResultStore(on_ray).results(latest_only=False).sort_values(key).reset_index(drop=True)
    assert got["model"].nunique() == 3 and not got.duplicated(key).any()
    pd.testing.assert_frame_equal(got[key + same], expected[key + same])

    code, out, err = harness_cli(*argv, "--store", on_ray, "--executor", "ray", "--workers", "2")
    assert code == 0, err
    assert out.count("0 task(s) evaluated") == 3  # a rerun reads every task back from the store


def report_heads(out: str) -> list[str]:
    """The first line of each model's report: `<id> (<hash>), split dev, backend hf`."""
    return [line for line in out.splitlines() if ", split dev, backend " in line]
