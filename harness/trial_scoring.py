"""Scoring sweep trials: one vLLM server kept up across trials, each trial's weights reloaded into it.

With the vllm backend one server is started for the first trial that needs scoring and kept up;
each later trial's weights are loaded into it in place (`harness.server.reload_weights`, vLLM dev
mode), so a trial costs its merge and its evaluation, not a server start. A trial whose config or
tokenizer differs from the served one gets a fresh server. Trials that are LoRA adapters (merges
written as adapters) are served as adapters instead: one server over their base with LoRA enabled,
each trial's adapter loaded into it at run time under the trial's id (harness.server, "LoRA
adapters"); an adapter of a higher rank than the server takes gets a fresh server. Server mode
`fresh` starts a server per trial (the naive way; bench/sweep_bench.py compares the two). The hf
backend scores in-process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

from harness.environment import patched_environ
from harness.evaluation import EvalReport, EvalSettings, ModelUnderTest

SERVED_NAME = "sweep-trial"


class SweepSettings(EvalSettings):
    """EvalSettings for trials scored on a server the sweep started: stored as backend `vllm`."""

    @property
    def backend_label(self) -> str:
        return "vllm" if self.server_url else self.backend


class TrialEvaluator:
    """Scores models on a vLLM server it keeps up (reload mode), on a fresh server per model
    (fresh mode), or in-process (hf backend). Use as a context manager."""

    def __init__(self, settings: EvalSettings, server_mode: str, log_dir: Path):
        self.settings = settings
        self.server_mode = server_mode  # reload | fresh
        self.log_dir = log_dir
        self.server = None
        self.served_identity: str | None = None
        self.loaded_adapters: set[str] = set()  # trial ids loaded into a LoRA server
        self.lora_rank_limit = 0  # the highest adapter rank the LoRA server takes
        self.server_starts = 0
        self.eval_s = 0.0  # time spent scoring (server starts and merges excluded)

    def __enter__(self) -> TrialEvaluator:
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def evaluate(self, model: ModelUnderTest, tasks: list[str], split: str) -> EvalReport:
        from harness import evaluation  # by module, so a test can stand in for evaluation.evaluate

        settings = dataclasses.replace(self.settings, split=split)
        if settings.backend == "vllm" and evaluation.pending_tasks(model, tasks, settings):  # else: no server needed
            self._serve(model)
            settings = SweepSettings(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(EvalSettings)})
            settings.server_url = self.server.url
        start = time.monotonic()
        report = evaluation.evaluate(model, tasks, settings)
        self.eval_s += time.monotonic() - start
        if self.server_mode == "fresh":
            self._stop()
        return report

    def _serve(self, model: ModelUnderTest) -> None:
        from harness.server import DEV_MODE_ENV, ServerConfig, VLLMServer, reload_weights

        if model.base is not None:
            self._serve_adapter(model)
            return
        identity = _identity_files(model.path)
        if self.server is not None and self.server.is_running() and identity == self.served_identity:
            reload_weights(self.server.url, model.path)
            return
        self._stop()
        config = ServerConfig(model_dir=model.path, served_name=SERVED_NAME, device=self.settings.device,
                              log_path=self.log_dir / f"vllm-server-{self.server_starts}.log",
                              max_model_len=self.settings.max_model_len, extra_args=list(self.settings.vllm_args))
        with patched_environ(DEV_MODE_ENV if self.server_mode == "reload" else {}):
            self.server = VLLMServer(config).start()
        self.server_starts += 1
        self.served_identity = identity

    def _serve_adapter(self, model: ModelUnderTest) -> None:
        """A server over the adapter's base that serves the adapter under the trial's id."""
        from harness.lm_eval_run import adapter_rank
        from harness.server import (RUNTIME_LORA_ENV, ServerConfig, VLLMServer, load_lora_adapter,
                                    lora_server_args, served_lora_rank)

        rank = adapter_rank(model)
        identity = f"lora:{model.base.path.resolve()}"
        if (self.server is not None and self.server.is_running() and identity == self.served_identity
                and rank <= self.lora_rank_limit):
            if model.id not in self.loaded_adapters:
                load_lora_adapter(self.server.url, model.id, model.path)
                self.loaded_adapters.add(model.id)
            return
        self._stop()
        config = ServerConfig(model_dir=model.base.path, served_name=SERVED_NAME, device=self.settings.device,
                              log_path=self.log_dir / f"vllm-server-{self.server_starts}.log",
                              max_model_len=self.settings.max_model_len,
                              extra_args=lora_server_args({model.id: model.path}, rank, self.settings.device)
                              + list(self.settings.vllm_args))
        with patched_environ(RUNTIME_LORA_ENV):
            self.server = VLLMServer(config).start()
        self.server_starts += 1
        self.served_identity = identity
        self.lora_rank_limit = served_lora_rank(rank)
        self.loaded_adapters = {model.id}

    def _stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


def _identity_files(folder: Path) -> str:
    """What must match to serve a checkpoint on a server started from another: config and tokenizer."""
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "generation_config.json"):
        path = Path(folder) / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-") + b"\n")
    return digest.hexdigest()
