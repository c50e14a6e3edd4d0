"""A run folder keeps only finished tasks' files, however its run ends (harness.lm_eval_run.run_folder);
an interrupted run resumes to the stored results of an uninterrupted one; and an eval prints none
of lm-eval's git or aiohttp noise. The model is the tiny random checkpoint of conftest.py, scored
in-process (hf) or against fake_server.py, so no test here starts vLLM.
"""

import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness import HarnessError
from harness.evaluation import EvalSettings, ModelUnderTest, evaluate
from harness.lm_eval_run import run_folder
from harness.paths import results_dir
from harness.server import free_port
from harness.store import ResultStore

from .conftest import GEN_TASK, MC_TASK

FAKE_SERVER = Path(__file__).resolve().parents[1] / "faults" / "fake_server.py"
STORED = ["task", "metric", "filter", "value", "stderr", "n"]


def tiny(model_dir: Path) -> ModelUnderTest:
    return ModelUnderTest("tiny", model_dir, "t" * 64, "ct", ("uig",))


def hf_settings(store: Path, tiny_tasks: Path, **more) -> EvalSettings:
    return EvalSettings(split="dev", backend="hf", store_url=f"sqlite:///{store}", task_dir=tiny_tasks,
                        progress=False, **more)


def left_on_disk() -> list[str]:
    """Everything under the results folder, relative to it."""
    return sorted(str(path.relative_to(results_dir())) for path in results_dir().rglob("*")) if results_dir().exists() else []


def test_a_closed_server_port_leaves_no_run_folder(tiny_model, tiny_tasks, tmp_path):
    settings = EvalSettings(split="dev", server_url=f"http://127.0.0.1:{free_port()}",
                            store_url=f"sqlite:///{tmp_path / 'r.db'}", task_dir=tiny_tasks, progress=False)
    with pytest.raises(HarnessError, match="cannot list the models of the server"):
        evaluate(tiny(tiny_model), [MC_TASK], settings)
    assert left_on_disk() == []


def test_a_checkpoint_that_fails_to_load_leaves_no_run_folder(tiny_model, tiny_tasks, tmp_path):
    broken = tmp_path / "no-weights"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(Exception, match="model.safetensors|weights"):
        evaluate(tiny(broken), [MC_TASK], hf_settings(tmp_path / "r.db", tiny_tasks))
    assert left_on_disk() == []
    assert ResultStore(f"sqlite:///{tmp_path / 'r.db'}").results().empty


@contextmanager
def sigterm_raising(error: type[Exception]):
    def handler(signum, frame):
        raise error(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_terminated_run_keeps_its_finished_task_and_resumes_to_identical_results(
        tiny_model, tiny_tasks, tmp_path, monkeypatch):
    import lm_eval

    tasks = [MC_TASK, GEN_TASK]
    evaluate(tiny(tiny_model), tasks, hf_settings(tmp_path / "whole.db", tiny_tasks))
    shutil.rmtree(results_dir())

    score = lm_eval.simple_evaluate
    calls = []

    def terminated_in_the_second_task(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal's handler raises in here
        return score(*args, **kwargs)

    monkeypatch.setattr(lm_eval, "simple_evaluate", terminated_in_the_second_task)
    with sigterm_raising(RuntimeError) as test_handler:  # what SIGTERM does where the harness handles none
        with pytest.raises(KeyboardInterrupt):
            evaluate(tiny(tiny_model), tasks, hf_settings(tmp_path / "resumed.db", tiny_tasks))
        assert signal.getsignal(signal.SIGTERM) is test_handler  # the run restored it
    [run_dir] = results_dir().glob("tiny/*")
    assert sorted(path.name.split("_2")[0] for path in run_dir.iterdir()) == ["results", f"samples_{MC_TASK}"]

    monkeypatch.setattr(lm_eval, "simple_evaluate", score)
    rerun = evaluate(tiny(tiny_model), tasks, hf_settings(tmp_path / "resumed.db", tiny_tasks))
    assert [(o.task, o.status) for o in rerun.outcomes] == [(MC_TASK, "skipped"), (GEN_TASK, "evaluated")]
    whole = ResultStore(f"sqlite:///{tmp_path / 'whole.db'}").results()[STORED].sort_values(STORED[:3])
    resumed = ResultStore(f"sqlite:///{tmp_path / 'resumed.db'}").results()[STORED].sort_values(STORED[:3])
    assert whole.to_dict("records") == resumed.to_dict("records")


def test_the_next_run_closes_the_folders_of_runs_killed_outright(tmp_path):
    killed = subprocess.Popen([sys.executable, "-c", ""])
    killed.wait()  # its pid is gone, as a harness's is after SIGKILL
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    folders = {name: results_dir() / "m" / name for name in ("unfinished", "finished", "running")}
    for name, pid in (("unfinished", killed.pid), ("finished", killed.pid), ("running", running.pid)):
        (folders[name] / f".partial-{GEN_TASK}").mkdir(parents=True)
        (folders[name] / f".running-{pid}").touch()
        (folders[name] / "vllm-server.log").touch()
    for name in ("results_2026.json", f"samples_{MC_TASK}_2026.jsonl"):
        (folders["finished"] / name).touch()
    try:
        with run_folder(tiny(tmp_path)) as new_run:
            assert new_run.is_dir()
    finally:
        running.kill()
        running.wait()
    assert not new_run.exists()  # it finished no task either
    assert left_on_disk() == [
        "m", "m/finished", f"m/finished/results_2026.json", f"m/finished/samples_{MC_TASK}_2026.jsonl",
        "m/finished/vllm-server.log",
        "m/running", f"m/running/.partial-{GEN_TASK}", f"m/running/.running-{running.pid}", "m/running/vllm-server.log",
    ]


def test_an_hf_run_outside_a_git_checkout_prints_no_git_error(tiny_model, tiny_tasks, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)  # lm-eval looks for the commit of the working directory
    evaluate(tiny(tiny_model), [MC_TASK], hf_settings(tmp_path / "r.db", tiny_tasks, limit=2))
    assert "not a git repository" not in capfd.readouterr().err


def test_a_server_dropping_requests_is_one_error_without_asyncio_tracebacks(tiny_model, tiny_tasks, tmp_path, capfd):
    port = free_port()
    server = subprocess.Popen([sys.executable, str(FAKE_SERVER), "server", str(port), str(tmp_path / "pids")],
                              start_new_session=True)
    try:
        settings = EvalSettings(split="dev", server_url=f"http://127.0.0.1:{port}", store_url=f"sqlite:///{tmp_path / 'r.db'}",
                                task_dir=tiny_tasks, progress=False, max_retries=1, batch_size=1)
        wait_for_port(port)
        with pytest.raises(HarnessError, match=f"task {MC_TASK} failed: .*Disconnected"):
            evaluate(tiny(tiny_model), [MC_TASK], settings)
        gc.collect()  # asyncio reports an unretrieved task exception when the task is collected
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    err = capfd.readouterr().err
    assert "Task exception was never retrieved" not in err and "Traceback" not in err
    assert left_on_disk() == []


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the fake server did not listen on port {port}")
