"""Sweep trials that are LoRA adapters (merges written as adapters) share one vLLM server over their
base: each trial's adapter is loaded into it at run time, not served by a server of its own."""

from pathlib import Path

from harness import evaluation, server
from harness.evaluation import EvalSettings, ModelUnderTest
from harness.server import VLLMServer
from harness.trial_scoring import SERVED_NAME, TrialEvaluator
from tests.merges.conftest import llama_config, random_weights, save_checkpoint
from tests.merges.test_lora import peft_adapter


def test_adapter_trials_are_loaded_into_one_lora_server(tmp_path, monkeypatch):
    base_dir = save_checkpoint(tmp_path / "base", random_weights(0), llama_config())
    base = ModelUnderTest("base", base_dir, "b" * 64, "base")
    trials = {rank: ModelUnderTest(f"m@r{rank}", peft_adapter(base_dir, tmp_path / f"r{rank}", seed=rank, rank=rank),
                                   f"{rank}" * 64, "merge", ("uig",), base=base) for rank in (4, 8, 16)}
    started, loaded, scored = [], [], []
    monkeypatch.setattr(VLLMServer, "start", lambda self: started.append(self.config) or self)
    monkeypatch.setattr(VLLMServer, "is_running", lambda self: True)
    monkeypatch.setattr(VLLMServer, "stop", lambda self: None)
    monkeypatch.setattr(server, "load_lora_adapter", lambda url, name, folder: loaded.append((name, folder)))
    monkeypatch.setattr(evaluation, "pending_tasks", lambda model, tasks, settings: tasks)
    monkeypatch.setattr(evaluation, "evaluate", lambda model, tasks, settings: scored.append(model.id))

    with TrialEvaluator(EvalSettings(), "reload", tmp_path) as evaluator:
        for rank in (4, 8, 4, 16):
            evaluator.evaluate(trials[rank], ["t"], "dev")
    assert scored == ["m@r4", "m@r8", "m@r4", "m@r16"]
    first, second = started  # rank 4 and 8 share a server taking rank 8; rank 16 needs one taking 16
    assert first.model_dir == base_dir and first.served_name == SERVED_NAME
    assert first.extra_args[:3] == ["--enable-lora", "--max-lora-rank", "8"]
    assert f"m@r4={(tmp_path / 'r4').resolve()}" in first.extra_args
    assert loaded == [("m@r8", tmp_path / "r8")]  # loaded once, reused when m@r4 came again
    assert second.extra_args[:3] == ["--enable-lora", "--max-lora-rank", "16"]
    assert evaluator.server_starts == 2
