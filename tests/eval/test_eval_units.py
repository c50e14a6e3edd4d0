"""`harness eval` without a model server: server command, result rows, skipping, report, CLI errors."""

import io
import json
from pathlib import Path

import pytest

from harness import HarnessError
from harness.cli import main
from harness.evaluate import choose_tasks, print_report
from harness.evaluation import EvalSettings, ModelUnderTest, evaluate
from harness.lm_eval_run import load_tasks
from harness.results import result_key, result_rows, scored_items
from harness.server import (ServerConfig, VLLMServer, api_root, log_tail, model_context_length, root_cause,
                            server_command)
from harness.store import ResultKey, ResultRow, ResultStore

MC_TASK, GEN_TASK = "lrm_mlic_tc_uig_dev", "lrm_mlic_math_uig_dev"  # the tiny tasks of conftest.py


@pytest.fixture
def model_config_only(tmp_path) -> Path:
    """A checkpoint folder as far as the server command looks: its config.json (no weights to build)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 512}))
    return folder


def test_server_command_cpu_is_float32_eager_on_localhost(model_config_only, tmp_path):
    command = server_command(ServerConfig(model_config_only, "tiny", tmp_path / "log"), port=8123)
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(command, command[1:]))
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "8123"
    assert flags["--model"] == str(model_config_only) and flags["--served-model-name"] == "tiny"
    assert flags["--dtype"] == "float32" and "--enforce-eager" in command
    assert flags["--max-model-len"] == "512"  # the model's max_position_embeddings
    assert flags["--load-format"] == "safetensors"  # never a pickled pytorch_model.bin


def test_server_command_cuda_is_the_same_command_with_model_dtype_and_graphs(model_config_only, tmp_path):
    cpu = server_command(ServerConfig(model_config_only, "tiny", tmp_path / "log"), port=1)
    cuda = server_command(ServerConfig(model_config_only, "tiny", tmp_path / "log", device="cuda"), port=1)
    assert "--enforce-eager" not in cuda
    assert dict(zip(cuda, cuda[1:]))["--dtype"] == "auto"
    assert [a for a in cpu if a not in ("--enforce-eager", "float32")] == [a for a in cuda if a != "auto"]


def test_context_length_is_capped_and_unreadable_config_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 1000000}')
    assert model_context_length(tmp_path) == 2048
    with pytest.raises(HarnessError, match="cannot read model config"):
        model_context_length(tmp_path / "nowhere")


def test_api_root_accepts_server_urls_with_or_without_v1():
    for url in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/completions"):
        assert api_root(url) == "http://h:1"


def test_log_tail_is_one_line_of_the_last_lines(tmp_path):
    log = tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(40)) + "\n")
    assert log_tail(log, lines=3) == "line 37 | line 38 | line 39"
    assert log_tail(tmp_path / "missing") == "(no server log)"


ENGINE_FAILURE_LOG = """\
(APIServer pid=70) INFO 12-01 10:58:55 [api_utils.py:286] non-default args: {'host': '127.0.0.1'}
(APIServer pid=70) WARNING 12-01 10:58:55 [system_utils.py:255] This can cause fd limit errors like `OSError: [Errno 24]`
(EngineCore_DP0 pid=71) ERROR 12-01 10:59:02 [core.py:1510] EngineCore failed to start.\r
(EngineCore_DP0 pid=71) ERROR 12-01 10:59:02 [core.py:1510] Traceback (most recent call last):\r
(EngineCore_DP0 pid=71) ERROR 12-01 10:59:02 [core.py:1510]   File "vllm/v1/engine/core.py", line 1500, in run_engine_core\r
(EngineCore_DP0 pid=71) ERROR 12-01 10:59:02 [core.py:1510] ValueError: 2.0 GiB KV cache is needed, which is larger than the available 1.0 GiB
(EngineCore_DP0 pid=71) Process EngineCore_DP0:
Traceback (most recent call last):
  File "vllm/entrypoints/openai/api_server.py", line 59, in <module>
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore_DP0': 1}
"""


def test_a_server_failure_quotes_the_root_cause_not_the_last_exception(tmp_path):
    log = tmp_path / "vllm-server.log"
    log.write_text(ENGINE_FAILURE_LOG)
    assert root_cause(log) == "ValueError: 2.0 GiB KV cache is needed, which is larger than the available 1.0 GiB"
    failure = VLLMServer(ServerConfig(tmp_path, "tiny", log)).failure("vLLM server for /m exited during start-up")
    assert str(failure).startswith("vLLM server for /m exited during start-up; root cause: ValueError: 2.0 GiB KV cache")
    assert failure.log_path == log and "\n" not in str(failure)

    log.write_text("pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
                   "  Value error, Model architectures ['NoSuchModelForCausalLM'] are not supported\n"
                   "Traceback (most recent call last):\n")
    assert root_cause(log) == ("pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig "
                               "Value error, Model architectures ['NoSuchModelForCausalLM'] are not supported")
    log.write_text("INFO starting\n")
    assert root_cause(log) is None and root_cause(tmp_path / "missing") is None


MODEL = ModelUnderTest("tiny", Path("/m"), "f" * 64, "ct", ("uig",))


def test_result_rows_name_metrics_by_lm_eval_keys():
    results = {
        "results": {GEN_TASK: {
            "alias": GEN_TASK,
            "exact_match,none": 0.25, "exact_match_stderr,none": 0.1,
            "acc,strict": 0.5, "acc_stderr,strict": "N/A",
            "acc,flexible": 0.75, "acc_stderr,flexible": 0.2,
        }},
        "versions": {GEN_TASK: 2.0},
        "n-samples": {GEN_TASK: {"original": 20, "effective": 8}},
    }
    key = ResultKey(MODEL.model_hash, GEN_TASK, "dev", "2.0", "d" * 64, 0, "server")
    rows = result_rows(results, key, 8, MODEL, Path("/run"))
    by_metric = {(r.metric, r.filter): r for r in rows}
    assert set(by_metric) == {("exact_match", "none"), ("acc", "strict"), ("acc", "flexible")}
    assert by_metric["exact_match", "none"].stderr == 0.1 and by_metric["acc", "strict"].stderr is None
    assert by_metric["acc", "flexible"].stderr == 0.2
    assert {(r.n, r.lang, r.split, r.task_version, r.backend, r.run_dir) for r in rows} == {(8, "uig", "dev", "2.0", "server", "/run")}
    assert {r.model_hash for r in rows} == {MODEL.model_hash}
    assert {r.key for r in rows} == {key}  # stored under the key the skip check looked up
    with pytest.raises(HarnessError, match=f"lm-eval scored 8 items of task {GEN_TASK}, the run asked for 5"):
        result_rows(results, key, 5, MODEL, Path("/run"))  # never stored under a key naming other items


def stored_row(settings, task, metric, value, version=None, n=None):
    """A row as a run with `settings` on the tiny task would store it (`version`: another task version,
    `n`: another item count than the run's)."""
    lm_eval_task = load_tasks([task], settings.task_dir)[task]
    items = scored_items(lm_eval_task, settings.limit)
    key = result_key(MODEL.model_hash, task, lm_eval_task, items, settings)
    n = len(items) if n is None else n
    return ResultRow(model="tiny", model_hash=MODEL.model_hash, task=task, lang="uig", split="dev",
                     task_version=version or key.task_version, metric=metric, value=value, stderr=None, n=n,
                     backend=key.backend, harness_version="t", lm_eval_version="t", data_hash=key.data_hash,
                     num_fewshot=key.num_fewshot)


def test_stored_tasks_are_skipped_without_starting_a_backend(tiny_tasks, tmp_path, monkeypatch):
    store_url = f"sqlite:///{tmp_path / 'r.db'}"
    store = ResultStore(store_url)
    settings = EvalSettings(split="dev", store_url=store_url, task_dir=tiny_tasks, backend="hf")
    store.write_task_results([stored_row(settings, MC_TASK, "acc", 0.4, "1.0")])  # the task YAMLs' versions
    store.write_task_results([stored_row(settings, GEN_TASK, "exact_match", 0.2, "2.0")])

    def no_backend(*args, **kwargs):
        raise AssertionError("a backend was opened although every task is stored")

    monkeypatch.setattr("harness.lm_eval_run.open_backend", no_backend)
    report = evaluate(MODEL, [MC_TASK, GEN_TASK], settings)
    assert [(o.task, o.status) for o in report.outcomes] == [(MC_TASK, "skipped"), (GEN_TASK, "skipped")]
    assert report.run_dir is None

    out = io.StringIO()
    print_report(report, out=out)
    text = out.getvalue()
    assert "0.4000" in text and "0.2000" in text
    assert ("average uig (main metric per task): none (the run has 2 of its 4 dev tasks, "
            "not lrm_mlic_mrc_uig_dev, lrm_mlic_rs_uig_dev)") in text  # no average over 2 of 4 tasks
    assert "0.3000" not in text
    assert "missing when any of those tasks has no score" in text  # the rule, tasks.averages.RULE
    assert "0 task(s) evaluated, 2 already stored" in text


def test_report_names_the_task_a_missing_language_average_lacks(tiny_tasks, tmp_path):
    store_url = f"sqlite:///{tmp_path / 'r.db'}"
    store = ResultStore(store_url)
    settings = EvalSettings(split="dev", store_url=store_url, task_dir=tiny_tasks)
    store.write_task_results([stored_row(settings, MC_TASK, "acc", 0.4, "1.0")])
    store.write_task_results([stored_row(settings, GEN_TASK, "acc", 0.2, "2.0")])  # not the math task's main metric
    report = evaluate(MODEL, [MC_TASK, GEN_TASK], settings)
    out = io.StringIO()
    print_report(report, out=out)
    assert f"average uig (main metric per task): none (the run has 2 of its 4 dev tasks, " in out.getvalue()
    assert f"; no score for {GEN_TASK})" in out.getvalue()


@pytest.mark.parametrize("stored_version, stored_limit, stored_n, limit, evaluated", [
    ("0.9", None, None, None, True),  # an older task version is re-evaluated
    ("1.0", None, None, None, False),  # the same items: stored already
    ("1.0", 3, None, 3, False),  # the same --limit 3 sample: stored already
    ("1.0", 3, None, 5, True),  # a --limit 3 result does not stand in for a --limit 5 run ...
    ("1.0", 3, None, None, True),  # ... nor for the full 12 items
    ("1.0", None, None, 5, True),  # and a full result not for a --limit 5 run: other items
    ("1.0", None, 3, None, True),  # a first-3 --limit row of an older harness (whole split's fingerprint)
    ("1.0", 12, None, None, False),  # a limit of at least the split's size is the full run
])
def test_what_counts_as_already_stored(stored_version, stored_limit, stored_n, limit, evaluated, tiny_tasks, tmp_path,
                                       monkeypatch):
    store_url = f"sqlite:///{tmp_path / 'r.db'}"
    stored_by = EvalSettings(split="dev", store_url=store_url, task_dir=tiny_tasks, limit=stored_limit)
    ResultStore(store_url).write_task_results([stored_row(stored_by, MC_TASK, "acc", 0.4, stored_version, n=stored_n)])
    settings = EvalSettings(split="dev", store_url=store_url, task_dir=tiny_tasks, limit=limit)

    def stop_at_backend(*args, **kwargs):
        raise HarnessError("backend opened")

    monkeypatch.setattr("harness.lm_eval_run.open_backend", stop_at_backend)
    if evaluated:
        with pytest.raises(HarnessError, match="backend opened"):
            evaluate(MODEL, [MC_TASK], settings)
    else:
        assert [o.status for o in evaluate(MODEL, [MC_TASK], settings).outcomes] == ["skipped"]


def test_unknown_task_is_a_clear_error(tiny_tasks, tmp_path):
    settings = EvalSettings(split="dev", store_url=f"sqlite:///{tmp_path / 'r.db'}", task_dir=tiny_tasks)
    with pytest.raises(HarnessError, match="unknown task.*lrm_nope_uig_dev"):
        evaluate(MODEL, [MC_TASK, "lrm_nope_uig_dev"], settings)


@pytest.mark.parametrize("argv, message", [
    (["--model", "no-such-model"], "unknown model id 'no-such-model'"),
    (["--model", "ct-uig", "--limit", "0"], "--limit must be a positive"),
    (["--model", "ct-uig", "--server", "http://127.0.0.1:9", "--backend", "hf"], "cannot go with --backend hf"),
    (["--model", "ct-uig", "--lang", "xx"], "unknown language"),
    (["--model", "ct-uig", "--data-dir", "/no/such/folder"], "is not a folder"),
    (["--model", "ct-uig", "--tasks", "lrm_mlic_tc_uig_test"], "is not a dev task"),
    (["--model", "ct-uig", "--tasks", "tinyArc"], "not a task of this harness: 'tinyArc'"),
])
def test_cli_input_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(["eval", "--split", "dev", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness eval: error: ") and message in err and "\n" not in err


ENGLISH_TASKS = ["lrm_sib_eng_test", "lrm_belebele_eng_test", "lrm_mgsm_eng_test", "lrm_mlic_tc_eng_test",
                 "lrm_mlic_mrc_eng_test", "lrm_mlic_rs_eng_test", "lrm_mlic_math_eng_test"]


def test_the_english_control_is_chosen_for_any_model_with_the_zoo_data(tmp_path):
    from harness.zoo.config import EvalSizes, ZooConfig
    from harness.zoo.evaldata import write_eval_data

    # No target language: the zoo writes the English control's files only.
    write_eval_data(tmp_path, ZooConfig(languages=(), eval_sizes=EvalSizes(
        sib={"train": 2, "dev": 2, "test": 2}, belebele=4, mgsm=5, mlic={k: (3, 2) for k in ("tc", "mrc", "rs", "math")})))
    assert choose_tasks((), ["eng"], None, "test", "sft-flan", tmp_path) == ENGLISH_TASKS
    assert choose_tasks(("uig",), ["eng"], None, "test", "ct-uig", tmp_path) == ENGLISH_TASKS


def test_english_tasks_without_real_data_are_left_out_with_a_note(real_data, capsys):
    """MLiC-Eval has no English: from the hub, or a real data folder, those four tasks are skipped."""
    for data_dir in (None, real_data):
        assert choose_tasks((), ["eng"], None, "test", "base", data_dir) == ENGLISH_TASKS[:3]
        notes = capsys.readouterr().err.splitlines()
        assert [note.split(":")[0] for note in notes] == [f"left out {task}" for task in ENGLISH_TASKS[3:]]
    # Asked for by name, such a task is not dropped: evaluating it fails with the loader's one line.
    assert choose_tasks((), None, ["lrm_mlic_tc_eng_test"], "test", "base", None) == ["lrm_mlic_tc_eng_test"]
