"""`harness eval` on the real SmolLM2 scores each item as plain lm-eval does (hf backend), and as vLLM does (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.store import ResultStore

# The committed SIB-200 excerpt of Tibetan (21 items). One task of a few items: Tibetan script takes
# hundreds of tokens per item in SmolLM2's vocabulary, and each item is 7 options, scored twice.
TASKS = ("lrm_sib_bod_test",)
LIMIT = 4


def samples(run_dir: Path, task: str) -> dict[int, dict]:
    [path] = Path(run_dir).glob(f"samples_{task}_*.jsonl")
    return {int(s["doc_id"]): s for s in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def option_logliks(sample: dict) -> list[float]:
    return [float(ll) for ll, _greedy in sample["filtered_resps"]]


def harness_eval(harness_cli, real_lm, real_data, tmp_path, backend: str) -> Path:
    """`harness eval --backend BACKEND` of the imported model; returns its run folder."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    registry = tmp_path / "registry.yaml"
    registry.write_text(f"name: real-lm\nmodels:\n  smollm2:\n    kind: base\n    langs: [bod]\n    path: {real_lm.base}\n")
    store = f"sqlite:///{tmp_path / f'{backend}.db'}"
    code, _out, err = harness_cli("eval", "--registry", str(registry), "--model", "smollm2", "--backend", backend,
                                  "--tasks", *TASKS, "--data-dir", str(real_data), "--limit", str(LIMIT),
                                  "--store", store)
    assert code == 0, err
    return Path(ResultStore(store).results()["run_dir"].iloc[0])


def test_harness_eval_equals_plain_lm_eval_per_sample(real_lm, real_data, tmp_path, harness_cli, monkeypatch):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from tasks.suite import TASKS_DIR, data_env

    run_dir = harness_eval(harness_cli, real_lm, real_data, tmp_path, "hf")
    ours = {task: samples(run_dir, task) for task in TASKS}
    for key, value in data_env(real_data).items():
        monkeypatch.setenv(key, value)
    plain = simple_evaluate(model="hf", model_args=f"pretrained={real_lm.base},dtype=float32,device=cpu",
                            tasks=list(TASKS), samples={task: sorted(ours[task]) for task in TASKS},
                            task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False), batch_size=8, log_samples=True)
    for task in TASKS:
        theirs = {int(s["doc_id"]): s for s in plain["samples"][task]}
        assert sorted(theirs) == sorted(ours[task]) and len(theirs) == LIMIT
        for doc_id, sample in ours[task].items():
            assert option_logliks(sample) == pytest.approx(option_logliks(theirs[doc_id]), abs=1e-5), (task, doc_id)


@pytest.mark.slow
def test_vllm_equals_hf_per_sample_on_the_real_model(real_lm, real_data, tmp_path, harness_cli):
    """vLLM (served) and transformers (in process) give the same per-sample log-likelihoods."""
    served = {task: samples(harness_eval(harness_cli, real_lm, real_data, tmp_path / "vllm", "vllm"), task)
              for task in TASKS}
    local = {task: samples(harness_eval(harness_cli, real_lm, real_data, tmp_path / "hf", "hf"), task)
             for task in TASKS}
    for task in TASKS:
        assert served[task].keys() == local[task].keys() and served[task]
        for doc_id in served[task]:
            assert option_logliks(served[task][doc_id]) == pytest.approx(
                option_logliks(local[task][doc_id]), abs=1e-3), (task, doc_id)
