"""Evaluating LoRA adapter models without merging them: vLLM's LoRA serving (one server for the
adapters of a base) and PEFT on the hf backend score as base + ΔW merged into the weights
(merges.lora.materialise), per sample, within the backends' parity tolerance."""

import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file

from harness.build import materialize
from harness.evaluation import EvalSettings, ModelUnderTest, evaluate
from harness.lm_eval_run import shared_adapter_servers
from harness.registry import load_registry
from harness.server import VLLMServer
from merges.lora import LoraAdapter, materialise
from tests.eval.test_eval_vllm import LL_TOLERANCE, MC_TASK, assert_backends_agree, option_logliks, samples
from tests.merges.test_lora import peft_adapter

LIMIT = 6  # items per task: a handful keeps each run to seconds


def adapter_models(base_dir: Path, folder: Path, ranks: dict[str, int]) -> list[ModelUnderTest]:
    """Adapters (id -> rank) over `base_dir` in a registry, built as `harness eval` builds them."""
    models = {"base": {"kind": "base", "path": str(base_dir)}}
    for seed, (name, rank) in enumerate(ranks.items(), start=1):
        peft_adapter(base_dir, folder / name, seed=seed, rank=rank, alpha=2 * rank)
        models[name] = {"kind": "adapter", "base": "base", "path": name, "langs": ["uig"]}
    (folder / "r.yaml").write_text(yaml.safe_dump({"name": "t", "model_root": str(folder), "models": models}))
    registry = load_registry(folder / "r.yaml")
    return [ModelUnderTest.from_built(materialize(registry, name)) for name in ranks]


def merged_model(adapter: ModelUnderTest, out: Path) -> ModelUnderTest:
    """base + ΔW in the weights, saved as a model folder (the base's config and tokenizer files)."""
    shutil.copytree(adapter.base.path, out)
    [weights_file] = out.glob("*.safetensors")
    weights = load_file(str(weights_file))
    lora = LoraAdapter(adapter.id, adapter.path)
    for target in lora.modules:
        weights[target] = materialise(weights[target], lora.delta(target))
    save_file(weights, str(weights_file))
    return ModelUnderTest(f"{adapter.id}-merged", out, "m" * 64, "ct", ("uig",))


def scores(settings: EvalSettings, model: ModelUnderTest, store: Path) -> Path:
    """The run folder of `model` scored on MC_TASK under `settings`, into its own store."""
    settings.store_url = f"sqlite:///{store}"
    return evaluate(model, [MC_TASK], settings).run_dir


def test_adapters_on_one_vllm_server_score_as_their_merged_weights(zoo_home, tiny_tasks, tmp_path, monkeypatch):
    models = adapter_models(zoo_home / "zoo" / "base", tmp_path, {"lora-a": 4, "lora-b": 16})
    starts = []
    start = VLLMServer.start
    monkeypatch.setattr(VLLMServer, "start", lambda self: starts.append(self.config) or start(self))
    options = dict(split="dev", limit=LIMIT, task_dir=tiny_tasks)
    with shared_adapter_servers(models, EvalSettings(**options)):
        served = {m.id: scores(EvalSettings(**options), m, tmp_path / f"{m.id}.db") for m in models}
    [config] = starts  # one server for both adapters: lora-b (rank 16) was loaded into it at run time
    assert config.model_dir == zoo_home / "zoo" / "base" and config.served_name == "base"
    assert config.extra_args[:5] == ["--enable-lora", "--max-lora-rank", "16", "--max-num-seqs", "1"]
    for model in models:
        reference = merged_model(model, tmp_path / f"{model.id}-merged")
        local = scores(EvalSettings(backend="hf", **options), reference, tmp_path / f"{model.id}-merged.db")
        assert_backends_agree(served[model.id], local, [MC_TASK], [])
    # Each request was scored with its own adapter: the two adapters' scores differ.
    a, b = (samples(served[name], MC_TASK) for name in ("lora-a", "lora-b"))
    assert max(abs(x - y) for doc in a for x, y in zip(option_logliks(a[doc]), option_logliks(b[doc]))) > 100 * LL_TOLERANCE


def test_hf_backend_applies_the_adapter_with_peft_as_the_merged_weights(tiny_model, tiny_tasks, tmp_path):
    [model] = adapter_models(tiny_model, tmp_path, {"lora-a": 4})
    options = dict(split="dev", limit=LIMIT, task_dir=tiny_tasks, backend="hf")
    with_peft = scores(EvalSettings(**options), model, tmp_path / "peft.db")
    merged = scores(EvalSettings(**options), merged_model(model, tmp_path / "merged"), tmp_path / "merged.db")
    assert_backends_agree(with_peft, merged, [MC_TASK], [])
    bare = scores(EvalSettings(**options), model.base, tmp_path / "base.db")
    a, b = samples(with_peft, MC_TASK), samples(bare, MC_TASK)
    assert max(abs(x - y) for doc in a for x, y in zip(option_logliks(a[doc]), option_logliks(b[doc]))) > 100 * LL_TOLERANCE


def test_stored_rows_name_the_adapter_model(tiny_model, tiny_tasks, tmp_path):
    from harness.store import ResultStore

    [model] = adapter_models(tiny_model, tmp_path, {"lora-a": 4})
    scores(EvalSettings(split="dev", limit=LIMIT, task_dir=tiny_tasks, backend="hf"), model, tmp_path / "r.db")
    record = ResultStore(f"sqlite:///{tmp_path / 'r.db'}").models()
    assert record[["model", "kind"]].values.tolist() == [["lora-a", "adapter"]]
    assert record["model_hash"].tolist() == [model.model_hash]


def test_eval_command_scores_several_adapters_within_one_set_of_servers(tiny_model, tmp_path, monkeypatch, capsys):
    """`harness eval --model A --model B`: each model in turn, inside one AdapterServers whose rank
    limit covers both (so the second adapter loads into the first one's server)."""
    from harness import evaluate as eval_command, evaluation, lm_eval_run
    from harness.cli import main

    adapter_models(tiny_model, tmp_path, {"lora-a": 4, "lora-b": 16})
    seen = []
    monkeypatch.setattr(evaluation, "evaluate",
                        lambda model, tasks, settings: seen.append((model.id, tasks, lm_eval_run._ADAPTER_SERVERS.get())))
    monkeypatch.setattr(eval_command, "print_report", lambda report: None)
    task = "lrm_mlic_tc_uig_test"
    assert main(["eval", "--registry", str(tmp_path / "r.yaml"), "--model", "lora-a", "--model", "lora-b",
                 "--tasks", task, "--store", f"sqlite:///{tmp_path / 'r.db'}"]) == 0
    assert [(model_id, tasks) for model_id, tasks, _ in seen] == [("lora-a", [task]), ("lora-b", [task])]
    servers = {id(servers) for _, _, servers in seen}
    assert len(servers) == 1 and seen[0][2].max_rank == {tiny_model: 16}
    assert lm_eval_run._ADAPTER_SERVERS.get() is None  # the block ended with the command
