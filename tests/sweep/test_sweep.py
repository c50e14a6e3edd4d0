"""`harness sweep` end to end on the zoo: trials, resume, best on test, tuned registry."""

import json

import pytest

import harness.evaluation
from harness.paths import harness_home
from harness.registry import load_registry
from harness.store import ResultStore, SweepId, sweep_trials

SWEEP = SweepId("ties-uig-flan", "file:grid")


def test_resume_after_interruption_reruns_only_missing_trials(use_zoo_home, harness_cli, grid_2x2, tmp_path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'results.db'}"
    real_evaluate = harness.evaluation.evaluate
    calls = []

    def interrupted_on_third(model, tasks, settings):
        calls.append(model.id)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if Ctrl-C arrived during the third trial
        return real_evaluate(model, tasks, settings)

    monkeypatch.setattr(harness.evaluation, "evaluate", interrupted_on_third)
    argv = ("sweep", "--model", "ties-uig", "--grid-file", str(grid_2x2), "--limit", "2", "--backend", "hf",
            "--no-test", "--store", store)
    code, _, err = harness_cli(*argv)
    assert code == 130 and "interrupted" in err
    assert len(sweep_trials(ResultStore(store), SWEEP)) == 2

    calls.clear()
    monkeypatch.setattr(harness.evaluation, "evaluate", lambda *a: calls.append(a[0].id) or real_evaluate(*a))
    code, out, _ = harness_cli(*argv)
    assert code == 0, out
    assert calls == ["ties-uig-flan@sft-flan.density=0.8,ct-uig.density=0.4",
                     "ties-uig-flan@sft-flan.density=0.8,ct-uig.density=1.0"]
    assert "4 trial(s), 2 evaluated, 2 already stored" in out
    trials = sweep_trials(ResultStore(store), SWEEP)
    assert len(trials) == 4 and trials["model_hash"].nunique() == 4
    assert trials["chosen"].sum() == 1
    assert trials.loc[trials["chosen"], "score"].iloc[0] == trials["score"].max()


@pytest.mark.slow
def test_sweep_2x2_on_vllm_one_server_then_best_on_test(use_zoo_home, harness_cli, grid_2x2, tmp_path):
    store = f"sqlite:///{tmp_path / 'results.db'}"
    argv = ("sweep", "--model", "ties-uig", "--grid-file", str(grid_2x2), "--limit", "2", "--store", store)
    code, out, err = harness_cli(*argv)
    assert code == 0, err
    trials = sweep_trials(ResultStore(store), SWEEP)
    assert len(trials) == 4 and trials["model_hash"].nunique() == 4
    params = [json.loads(p) for p in trials["params_json"]]
    assert {(p["models.sft-flan.density"], p["models.ct-uig.density"]) for p in params} == {
        (0.2, 0.4), (0.2, 1.0), (0.8, 0.4), (0.8, 1.0)}
    assert trials["score"].between(0, 1).all()
    best = trials[trials["chosen"]].iloc[0]
    assert best["score"] == trials["score"].max()
    logs = sorted((harness_home() / "sweeps" / "logs" / "ties-uig-flan").glob("vllm-server-*.log"))
    assert [p.name for p in logs] == ["vllm-server-0.log"]  # one server for all trials and the test run

    results = ResultStore(store).results(latest_only=False)
    dev = results[results["split"] == "dev"]
    assert dev["model_hash"].nunique() == 4 and set(dev["backend"]) == {"vllm"}
    test = results[(results["model"] == "ties-uig-flan@best") & (results["split"] == "test")]
    assert set(test["model_hash"]) == {best["model_hash"]}
    assert set(test["task"]) == {"lrm_mlic_tc_uig_test", "lrm_mlic_mrc_uig_test", "lrm_mlic_rs_uig_test",
                                 "lrm_mlic_math_uig_test"}

    tuned = load_registry(harness_home() / "sweeps" / "tuned-zoo.yaml")
    assert tuned.resolve("ties-uig-flan@best").recipe == json.loads(best["recipe_json"])
    assert tuned.resolve("ct-uig").path == load_registry().resolve("ct-uig").path

    # A second run finds everything stored: no trial, no server.
    code, out, _ = harness_cli(*argv)
    assert code == 0 and "4 trial(s), 0 evaluated, 4 already stored" in out
    assert len(list(logs[0].parent.glob("vllm-server-*.log"))) == 1


def test_optuna_search_on_the_zoo_stores_its_trials_and_a_rerun_reuses_them(use_zoo_home, harness_cli, tmp_path):
    store = f"sqlite:///{tmp_path / 'results.db'}"
    space = tmp_path / "space.yaml"
    space.write_text("models.sft-flan.density: {low: 0.2, high: 1.0}\nmodels.ct-uig.density: {low: 0.2, high: 1.0}\n")
    argv = ("sweep", "--model", "ties-uig", "--grid-file", str(space), "--search", "optuna", "--trials", "3",
            "--limit", "2", "--backend", "hf", "--no-test", "--store", store)
    code, out, err = harness_cli(*argv)
    assert code == 0, err
    assert "3 trial(s), 3 evaluated, 0 already stored" in out
    trials = sweep_trials(ResultStore(store), SweepId("ties-uig-flan", "file:space/optuna-tpe-seed0"))
    assert len(trials) == 3 and trials["model_hash"].nunique() == 3 and set(trials["split"]) == {"dev"}
    assert trials["chosen"].sum() == 1 and trials.loc[trials["chosen"], "score"].iloc[0] == trials["score"].max()

    code, out, _ = harness_cli(*argv)
    assert code == 0 and "3 trial(s), 0 evaluated, 3 already stored" in out
