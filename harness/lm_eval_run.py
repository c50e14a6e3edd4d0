"""Running lm-eval: loading the project's tasks, the model backends, and each task's raw output files.

Backends and what they are for:
- `vllm` (default): serves the model with vLLM and scores it through lm-eval's `local-completions`
  API client, with token-id requests so both sides share one tokenization.
- a server URL: the same client against a server someone already started.
- `hf`: lm-eval's in-process transformers backend (the paper's setup; the parity reference).

A LoRA adapter model (`kind: adapter`, or a merge written as an adapter) is never merged into its
base for evaluation: vLLM serves the base with LoRA enabled and each request names the adapter
(harness.server, "LoRA adapters"); the adapters of one base share one server, each loaded into it at
run time (AdapterServers, for `harness eval` with several --model). The hf backend loads the base and
applies the adapter with PEFT (lm-eval's `peft=` argument). Tokenizer and context length are the base's.

With `--apply-chat-template` lm-eval renders each prompt with the tokenizer's chat template on the
harness side for both backends (`local-completions` with token-id requests renders through the
same Hugging Face tokenizer as `hf`), so the vLLM server still scores token ids and the two
backends see identical prompts; `local-chat-completions` would let the server render them and
cannot score log-likelihoods at all.

lm-eval, transformers and vLLM are imported inside the functions: `harness --help` stays fast.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from harness import HarnessError, one_line
from harness.paths import results_dir
from harness.processes import process_exists
from harness.server import ServerFailure, VLLMServer, raise_on_sigterm, restore_sigterm
from tasks.errors import TaskError

if TYPE_CHECKING:  # the types only; harness.evaluation imports this module
    from harness.evaluation import EvalSettings, ModelUnderTest

BACKENDS = ("vllm", "hf")
DEFAULT_BATCH_SIZE = 8  # every result stored before the batch size was an option was scored with it


# ---- tasks -------------------------------------------------------------------------------------

def not_custom_kwargs_hint(record: logging.LogRecord) -> bool:
    # lm-eval warns, once per task load, that a task with a `custom_dataset` function can take
    # `--metadata`; every task here loads its local files that way, so the hint is noise.
    return "Custom kwargs can be passed to `--metadata`" not in record.getMessage()


logging.getLogger("lm_eval.api.task").addFilter(not_custom_kwargs_hint)


def not_a_lost_request(record: logging.LogRecord) -> bool:
    # When the server dies mid-task, lm-eval's API client fails the task with the first request's
    # error (the harness reports it in one line) and leaves the other requests' identical errors
    # unretrieved, so asyncio prints a traceback for each: "Task exception was never retrieved".
    # Requests sent after the client closed its session fail with aiohttp's "Session is closed".
    aiohttp = sys.modules.get("aiohttp")
    error = record.exc_info[1] if record.exc_info else None
    lost = aiohttp is not None and isinstance(error, aiohttp.ClientError)
    return not (lost or (isinstance(error, RuntimeError) and str(error) == "Session is closed"))


logging.getLogger("asyncio").addFilter(not_a_lost_request)


def load_tasks(names: list[str], task_dir: Path) -> dict:
    """lm-eval Task objects by name, from the project's task folder; unknown names are an error."""
    manager = task_manager(task_dir)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        raise HarnessError(f"unknown task(s) {', '.join(unknown)} (task folder {task_dir}); `harness tasks` lists them")
    try:
        loaded = manager.load(names)["tasks"]
    except Exception as err:  # a dataset that cannot be read: name the tasks and the reason
        raise HarnessError(f"cannot load task(s) {', '.join(names)}: {one_line(err)}") from None
    return {name: loaded[name] for name in names}


@functools.lru_cache(maxsize=4)
def task_manager(task_dir: Path):
    """lm-eval's task index over `task_dir` only: the harness runs its own tasks, and indexing
    lm-eval's thousands of built-in ones took 15 s (0.1 s without them)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(task_dir), include_defaults=False)


# ---- one task through lm-eval ------------------------------------------------------------------

class Backend:
    """An lm-eval model plus what it takes to evaluate one task and keep lm-eval's files of it."""

    def __init__(self, lm, model: ModelUnderTest, settings: EvalSettings, run_dir: Path, server=None):
        self.lm = lm
        self.model = model
        self.settings = settings
        self.run_dir = run_dir
        self.server = server  # the VLLMServer this run started, if any
        record_commit_without_git()  # once per backend: lm-eval looks the commit up for every task

    def evaluate_task(self, name: str, task, items: list[int]) -> dict:
        """lm-eval's results of one task on the items at these indices (harness.results.scored_items:
        all, or the `--limit` sample); its results and samples files are then in run_dir."""
        from lm_eval import simple_evaluate
        from lm_eval.loggers import EvaluationTracker

        staging = self.run_dir / f"{STAGING_PREFIX}{name}"
        shutil.rmtree(staging, ignore_errors=True)
        tracker = EvaluationTracker(output_path=str(staging))
        try:
            results = simple_evaluate(
                model=self.lm,
                tasks=[task],
                num_fewshot=self.settings.num_fewshot,
                # lm-eval's own `limit` takes the first N items; `samples` scores exactly these.
                samples={name: items} if len(items) < len(task.eval_docs) else None,
                log_samples=True,
                apply_chat_template=self.settings.apply_chat_template,
                system_instruction=self.settings.system_instruction,
                fewshot_as_multiturn=self.settings.multiturn_fewshot,
                evaluation_tracker=tracker,
                verbosity="WARNING",
                # Without one, lm-eval indexes its thousands of built-in tasks on every call (10 s).
                task_manager=task_manager(self.settings.task_dir),
            )
        except Exception as err:
            shutil.rmtree(staging, ignore_errors=True)
            raise err if isinstance(err, (HarnessError, TaskError)) else self.task_failure(name, err) from None
        except BaseException:  # Ctrl-C: leave no half-written task files behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if results is None:  # only on non-zero ranks of a distributed run, which the harness never starts
            raise HarnessError(f"lm-eval returned no results for task {name}")
        samples = results.pop("samples")
        tracker.save_results_aggregated(results=results, samples=samples)
        tracker.save_results_samples(task_name=name, samples=samples[name])
        publish_run_files(staging, self.run_dir, name)
        return results

    def task_failure(self, name: str, err: Exception) -> HarnessError:
        if self.server is not None and not self.server.is_running():
            return self.server.failure(
                f"the vLLM server died during task {name} (exit code {self.server.process.returncode}); "
                "tasks finished before it are stored, rerun the same command to resume"
            )
        return HarnessError(f"task {name} failed: {one_line(err)}")


def record_commit_without_git() -> None:
    """lm-eval records the working directory's commit in each results file by running `git
    describe`, which prints "fatal: not a git repository" on every task outside a checkout. Its
    own fallback (for a machine without git) reads the same commit from .git/HEAD silently."""
    from lm_eval import evaluator
    from lm_eval.loggers.utils import get_commit_from_path

    evaluator.get_git_commit_hash = lambda: get_commit_from_path(os.getcwd())


# ---- run folders -------------------------------------------------------------------------------
# A run folder holds lm-eval's results and samples files of each task its run finished (stored
# rows point to them) and the vLLM server's log. While the run lasts, a marker file names the
# process that owns it, so the next run recognises a folder whose process was killed outright.

OWNER_MARKER = ".running-"  # + pid
STAGING_PREFIX = ".partial-"  # + task: lm-eval's files of a task not finished yet
SERVER_LOG = "vllm-server.log"


@contextmanager
def run_folder(model: ModelUnderTest) -> Iterator[Path]:
    """A new run folder for `model`. When the run ends, however it ends, the folder keeps only the
    files of finished tasks, and after a server failure the log its error names; a folder left
    with neither is removed (a --server on a closed port, a checkpoint that fails to load, Ctrl-C,
    SIGTERM). Before that, closes the folders of runs killed outright (SIGKILL, a power cut)."""
    remove_abandoned_run_folders()
    run_dir = new_run_dir(model)
    (run_dir / f"{OWNER_MARKER}{os.getpid()}").touch()
    previous_sigterm = raise_on_sigterm()  # SIGTERM ends the run like Ctrl-C: through `finally`
    keep_log = False
    try:
        yield run_dir
    except ServerFailure as failure:
        keep_log = failure.log_path == run_dir / SERVER_LOG
        raise
    finally:
        close_run_folder(run_dir, keep_log)
        restore_sigterm(previous_sigterm)


def new_run_dir(model: ModelUnderTest) -> Path:
    """A fresh folder for this run's raw lm-eval output and server log."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    run_dir = results_dir() / model.id / f"{stamp}-{model.model_hash[:12]}"
    run_dir.mkdir(parents=True)
    return run_dir


def close_run_folder(run_dir: Path, keep_log: bool = False) -> None:
    """Remove unfinished tasks' files and the owner marker; then the folder itself (and its model's
    folder, if that is left empty) unless it holds a finished task's files or a log to keep."""
    for staging in run_dir.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(staging, ignore_errors=True)
    for marker in run_dir.glob(f"{OWNER_MARKER}*"):
        marker.unlink(missing_ok=True)
    if any(run_dir.glob("results_*")) or (keep_log and (run_dir / SERVER_LOG).is_file()):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        run_dir.parent.rmdir()
    except OSError:  # other runs of the model are there
        pass


def remove_abandoned_run_folders() -> None:
    """Close the run folders, of any model, whose owner process is gone without closing them."""
    for marker in results_dir().glob(f"*/*/{OWNER_MARKER}*"):
        pid = marker.name.removeprefix(OWNER_MARKER)
        if pid.isdigit() and int(pid) != os.getpid() and not process_exists(int(pid)):
            close_run_folder(marker.parent)


def publish_run_files(staging: Path, run_dir: Path, task: str) -> None:
    """Move lm-eval's files for one task out of its staging folder; samples first, results last."""
    written = sorted(staging.rglob("*.json*"))
    samples = [path for path in written if path.name.startswith(f"samples_{task}_")]
    results = [path for path in written if path.name.startswith("results_")]
    if len(samples) != 1 or len(results) != 1:
        raise HarnessError(f"lm-eval did not write results and samples for task {task} under {staging}")
    for path in samples + results:
        os.replace(path, run_dir / path.name)
    shutil.rmtree(staging)


# ---- backends ----------------------------------------------------------------------------------

@contextmanager
def open_backend(model: ModelUnderTest, settings: EvalSettings, run_dir: Path):
    if settings.apply_chat_template:
        check_chat_template(model, settings.system_instruction)  # before a server starts
    if settings.backend == "hf":
        yield Backend(hf_model(model, settings), model, settings, run_dir)
    elif settings.server_url:
        from harness.server import api_root

        root = api_root(settings.server_url)
        lm = completions_model(model, settings, f"{root}/v1/completions", request_model_name(model, root))
        yield Backend(lm, model, settings, run_dir)
    elif model.base is not None:
        with adapter_servers_for(model, settings) as servers:
            server = servers.serve(model, run_dir / SERVER_LOG)
            lm = completions_model(model, settings, server.completions_url, model.id)
            yield Backend(lm, model, settings, run_dir, server=server)
    else:
        from harness.server import ServerConfig

        config = ServerConfig(model_dir=model.path, served_name=model.id, log_path=run_dir / SERVER_LOG,
                              device=settings.device, max_model_len=settings.max_model_len,
                              extra_args=list(settings.vllm_args))
        with VLLMServer(config) as server:
            lm = completions_model(model, settings, server.completions_url, model.id)
            yield Backend(lm, model, settings, run_dir, server=server)


def request_model_name(model: ModelUnderTest, server_url: str) -> str:
    """The `model` of requests to a server someone else started: an adapter's id, which the server
    must list (`--enable-lora --lora-modules ID=DIR`); for a full model, the model it serves."""
    from harness.server import served_models

    served = served_models(server_url)
    if model.base is None:
        return served[0]
    if model.id not in served:
        raise HarnessError(f"the server at {server_url} does not serve adapter {model.id!r} (it serves: "
                           f"{', '.join(served)}); start it over {model.base.path} with --enable-lora "
                           f"--lora-modules {model.id}={model.path}")
    return model.id


# ---- LoRA adapters on one vLLM server per base ---------------------------------------------------

class AdapterServers:
    """vLLM servers for adapter models: one per base, started for the first adapter of that base
    with it preloaded, and kept up for the others, each loaded into it at run time. The rank limit
    covers every adapter the set is made for; `close()` stops them all."""

    def __init__(self, adapters: list[ModelUnderTest], settings: EvalSettings):
        self.settings = settings
        self.max_rank: dict[Path, int] = {}  # per base folder
        for model in adapters:
            self.max_rank[model.base.path] = max(adapter_rank(model), self.max_rank.get(model.base.path, 0))
        self.servers: dict[Path, tuple[VLLMServer, set[str]]] = {}

    def serve(self, model: ModelUnderTest, log_path: Path) -> VLLMServer:
        """A running server over the adapter's base that serves the adapter under its id."""
        from harness.server import load_lora_adapter

        base = model.base.path
        if base in self.servers and self.servers[base][0].is_running():
            server, loaded = self.servers[base]
            if model.id not in loaded:
                load_lora_adapter(server.url, model.id, model.path)
                loaded.add(model.id)
            return server
        if base in self.servers:  # it died (the task that saw it die said so): what is left of it goes
            self.servers[base][0].stop()
        server = self._start(model, log_path)
        self.servers[base] = (server, {model.id})
        return server

    def _start(self, model: ModelUnderTest, log_path: Path) -> VLLMServer:
        from harness.environment import patched_environ
        from harness.server import RUNTIME_LORA_ENV, ServerConfig, lora_server_args

        rank = max(adapter_rank(model), self.max_rank.get(model.base.path, 0))
        config = ServerConfig(model_dir=model.base.path, served_name=model.base.id, log_path=log_path,
                              device=self.settings.device, max_model_len=self.settings.max_model_len,
                              extra_args=lora_server_args({model.id: model.path}, rank, self.settings.device)
                              + list(self.settings.vllm_args))
        with patched_environ(RUNTIME_LORA_ENV):
            return VLLMServer(config).start()

    def close(self) -> None:
        for server, _ in self.servers.values():
            server.stop()
        self.servers.clear()


def adapter_rank(model: ModelUnderTest) -> int:
    """The largest LoRA rank among the adapter's modules (what vLLM's --max-lora-rank must cover)."""
    from merges.lora import LoraAdapter

    return max(module.rank for module in LoraAdapter(model.id, model.path).modules.values())


_ADAPTER_SERVERS: ContextVar[AdapterServers | None] = ContextVar("adapter_servers", default=None)


@contextmanager
def shared_adapter_servers(adapters: list[ModelUnderTest], settings: EvalSettings):
    """Within this block, evaluating any of these adapters (through `evaluate`) reuses one server per
    base; the servers stop when it ends, however it ends."""
    servers = AdapterServers(adapters, settings)
    token = _ADAPTER_SERVERS.set(servers)
    previous_sigterm = raise_on_sigterm()
    try:
        yield servers
    finally:
        _ADAPTER_SERVERS.reset(token)
        servers.close()
        restore_sigterm(previous_sigterm)


@contextmanager
def adapter_servers_for(model: ModelUnderTest, settings: EvalSettings):
    """The shared servers of an enclosing `shared_adapter_servers` block, else a server for this model only."""
    shared = _ADAPTER_SERVERS.get()
    if shared is not None:
        yield shared
    else:
        with shared_adapter_servers([model], settings) as own:
            yield own


def completions_model(model: ModelUnderTest, settings: EvalSettings, completions_url: str, served_name: str):
    """lm-eval's `local-completions` client; token-id requests so the harness tokenizes, as hf does.
    A chat template that writes BOS itself gets no second one: lm-eval's hf backend adds none to a
    prompt that starts with BOS, the client would."""
    from lm_eval.api.registry import get_model

    from harness.server import model_context_length

    checkpoint = model.checkpoint_dir
    template_bos = settings.apply_chat_template and chat_template_writes_bos(checkpoint)
    return get_model("local-completions")(
        model=served_name,
        base_url=completions_url,
        tokenizer_backend="huggingface",
        tokenizer=str(checkpoint),
        tokenized_requests=True,
        add_bos_token=tokenizer_adds_bos(checkpoint) and not template_bos,
        max_length=settings.max_model_len or model_context_length(checkpoint),
        num_concurrent=settings.num_concurrent,
        batch_size=settings.batch_size,
        max_retries=settings.max_retries,
        timeout=600,
    )


def hf_model(model: ModelUnderTest, settings: EvalSettings):
    """lm-eval's in-process transformers model (float32 on the CPU, the model's dtype on a GPU);
    an adapter is applied to its base by PEFT (lm-eval's `peft=`), not merged into the weights."""
    from lm_eval.api.registry import get_model

    adapter = {"peft": str(model.path)} if model.base is not None else {}
    return get_model("hf")(
        pretrained=str(model.checkpoint_dir),
        dtype="float32" if settings.device == "cpu" else "auto",
        device=settings.device,
        batch_size=settings.batch_size,
        add_bos_token=tokenizer_adds_bos(model.checkpoint_dir),
        trust_remote_code=False,
        **adapter,
    )


def tokenizer_adds_bos(model_dir: Path) -> bool:
    """Whether the tokenizer puts BOS before a text by default (Llama's does); both backends follow it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenizer("x").input_ids
    return tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]


def check_chat_template(model: ModelUnderTest, system_instruction: str | None) -> None:
    """One line naming the model when its tokenizer has no chat template, or when the template
    refuses the system message asked for (lm-eval's hf backend would drop it silently, its
    completions client would fail the task: both backends refuse it here)."""
    from jinja2.exceptions import TemplateError
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model.checkpoint_dir))
    if not tokenizer.chat_template:
        raise HarnessError(f"model {model.id} has no chat template in its tokenizer ({model.checkpoint_dir}); "
                           "leave out --apply-chat-template")
    if system_instruction:
        try:
            tokenizer.apply_chat_template([{"role": "system", "content": system_instruction},
                                           {"role": "user", "content": "x"}], tokenize=False)
        except TemplateError as err:
            raise HarnessError(f"the chat template of model {model.id} takes no system message ({one_line(err)}); "
                               "leave out --system-instruction") from None


def chat_template_writes_bos(model_dir: Path) -> bool:
    """Whether the tokenizer's chat template starts a prompt with the BOS text (Llama 3's does)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    return tokenizer.bos_token is not None and prompt.startswith(tokenizer.bos_token)
