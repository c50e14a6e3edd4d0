"""`harness sweep --executor ray`: a grid's trials on Ray workers (harness.ray_trials).

The zoo tests start a local Ray instance of 2 workers, one core each, scoring with the hf backend on
2 items per task: the same trials and best as the local executor, a rerun that resumes, and a worker
killed by its pid mid-sweep whose trial another worker takes over.
"""

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil
import pytest

from harness import HarnessError
from harness.evaluation import EvalSettings
from harness.store import ResultStore, SweepId, sweep_trials
from harness.trials import Trial
from tests.conftest import PROJECT_ROOT

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


def test_ray_options_need_the_ray_executor_and_a_grid(harness_cli, grid_2x2, tmp_path):
    store = f"sqlite:///{tmp_path / 'r.db'}"
    code, _, err = harness_cli(*sweep_argv(grid_2x2, store, "--address", "auto", "--workers", "2"))
    assert code == 2 and "--address, --workers only apply with --executor ray" in err
    pytest.importorskip("ray")
    code, _, err = harness_cli(*sweep_argv(grid_2x2, store, "--executor", "ray", "--workers", "0"))
    assert code == 2 and "--workers must be a positive number, got 0" in err
    code, _, err = harness_cli("sweep", "--model", "ties-uig", "--grid", "densities", "--search", "optuna",
                               "--trials", "3", "--store", store, "--executor", "ray")
    assert code == 2 and "--executor ray scores a grid's trials" in err


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

    def reread_store(self) -> None:
        pass

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
        with pytest.raises(HarnessError, match="every Ray worker died; 1 trial\\(s\\) not scored"):
            score_on_ray([Trial({"x": "poison"}, "m@x=poison", {})], job, settings, progress=False)
    finally:
        ray.shutdown()


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
