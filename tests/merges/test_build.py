"""`materialize`: registry models as local folders; merges cached by content hash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import merges
from harness import HarnessError
from harness.build import BuiltModel, folder_hash, materialize
from harness.paths import merges_dir
from harness.registry import load_registry

from .conftest import finetuned, load_folder, random_weights, save_checkpoint


def ties_recipe(*models: str) -> dict:
    return {"merge_method": "ties", "base_model": "base",
            "models": [{"model": m, "parameters": {"weight": 1.0, "density": 0.6}} for m in models],
            "dtype": "float32"}


@pytest.fixture
def registry_file(tmp_path):
    root = tmp_path / "models"
    base = random_weights(0)
    for seed, name in enumerate(["sft", "ct-a", "ct-b"], start=1):
        save_checkpoint(root / name, finetuned(base, seed))
    save_checkpoint(root / "base", base)
    document = {
        "name": "test", "model_root": str(root),
        "models": {
            "base": {"kind": "base", "path": "base"},
            "sft": {"kind": "sft", "path": "sft"},
            "ct-a": {"kind": "ct", "langs": ["tam"], "path": "ct-a"},
            "ct-b": {"kind": "ct", "langs": ["uig"], "path": "ct-b"},
            "ties-a": {"kind": "merge", "langs": ["tam"], "recipe": ties_recipe("sft", "ct-a"), "aliases": ["ta"]},
            "ties-b": {"kind": "merge", "langs": ["uig"], "recipe": ties_recipe("sft", "ct-b")},
            # A merge of a merge: depends on ct-a through ties-a.
            "wavg-nested": {"kind": "merge", "langs": ["tam"], "recipe": {
                "merge_method": "linear", "models": [{"model": "ties-a", "parameters": {"weight": 0.5}},
                                                     {"model": "ct-b", "parameters": {"weight": 0.5}}]}},
        },
    }
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def merge_calls(monkeypatch):
    """Records which output folders `merges.run_merge` builds."""
    calls = []
    real = merges.run_merge

    def recording(recipe, resolve, out_dir, **kwargs):
        calls.append(out_dir.name)
        return real(recipe, resolve, out_dir, **kwargs)

    monkeypatch.setattr(merges, "run_merge", recording)
    return calls


def test_checkpoints_are_used_in_place(registry_file):
    registry = load_registry(registry_file)
    built = materialize(registry, "ct-a", progress=False)
    assert isinstance(built, BuiltModel)
    assert built.path == registry.resolve("ct-a").path and built.stats is None
    assert built.model_hash == folder_hash(built.path) != folder_hash(registry.resolve("ct-b").path)


def test_merges_are_cached_and_only_dependents_rebuilt(registry_file, merge_calls):
    registry = load_registry(registry_file)
    first = {m: materialize(registry, m, progress=False) for m in ("ties-a", "ties-b", "wavg-nested")}
    assert len(merge_calls) == 3
    assert first["ties-a"].path.parent == merges_dir()
    assert first["ties-a"].path.name == f"ties-a-{first['ties-a'].model_hash[:12]}"
    assert first["ties-a"].stats["models"] == ["sft", "ct-a"]
    assert first["wavg-nested"].stats is None

    # Asking again (by alias too) builds nothing and returns the same folders and statistics.
    again = materialize(registry, "ta", progress=False)
    assert (again.path, again.model_hash, again.stats) == (first["ties-a"].path, first["ties-a"].model_hash,
                                                           first["ties-a"].stats)
    assert len(merge_calls) == 3

    # Edit ct-a: ties-a and the nested merge are rebuilt, ties-b is reused.
    ct_a = registry.resolve("ct-a").path
    save_checkpoint(ct_a, finetuned(random_weights(0), 99))
    second = {m: materialize(registry, m, progress=False) for m in ("ties-a", "ties-b", "wavg-nested")}
    assert second["ties-b"].path == first["ties-b"].path
    assert second["ties-a"].path != first["ties-a"].path
    assert second["wavg-nested"].path != first["wavg-nested"].path
    assert sorted(merge_calls[3:]) == sorted([second["ties-a"].path.name, second["wavg-nested"].path.name])
    old, new = load_folder(first["ties-a"].path), load_folder(second["ties-a"].path)
    assert any(not torch.equal(old[k], new[k]) for k in old)


def test_recipe_change_changes_the_key(registry_file, tmp_path):
    registry = load_registry(registry_file)
    before = materialize(registry, "ties-a", progress=False)
    text = registry_file.read_text().replace("density: 0.6", "density: 0.5")
    registry_file.write_text(text)
    after = materialize(load_registry(registry_file), "ties-a", progress=False)
    assert after.model_hash != before.model_hash


def test_missing_checkpoint_names_the_model_and_its_folder(registry_file):
    registry = load_registry(registry_file)
    import shutil

    shutil.rmtree(registry.resolve("ct-b").path)
    with pytest.raises(HarnessError, match=r"model 'ct-b': no checkpoint at .*ct-b \(no config.json there\)$"):
        materialize(registry, "ties-b", progress=False)


def test_two_processes_building_one_merge_both_succeed_with_one_folder(registry_file, tmp_path):
    """The second waits on the cache entry's lock, then reuses what the first published."""
    env = {**os.environ, "HARNESS_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "harness.cli", "merge", "ties-a", "--registry", str(registry_file)]
    runs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert [code for code, _ in results] == [0, 0], results
    cache = tmp_path / "home" / "merges"
    assert [p.name.startswith("ties-a-") for p in cache.iterdir() if not p.name.startswith(".")] == [True]
    assert not list(cache.glob(".*.partial-*"))


def test_a_merge_removes_partial_folders_left_by_killed_merges(tiny_models, tmp_path):
    out = tmp_path / "merged"
    stale = tmp_path / ".merged.partial-999999999"  # no such process
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half written")
    recipe = {"merge_method": "linear", "models": [{"model": str(tiny_models["sft"])}, {"model": str(tiny_models["ct-a"])}]}
    merges.run_merge(recipe, Path, out, progress=False)
    assert out.is_dir() and not stale.exists()


def test_pickled_weights_are_refused_not_loaded(registry_file):
    registry = load_registry(registry_file)
    folder = registry.resolve("ct-b").path
    weights = load_folder(folder)
    for file in folder.glob("*.safetensors"):
        file.unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    with pytest.raises(HarnessError, match=r"model 'ct-b': .* has no safetensors weights \(found pytorch_model\.bin\); "
                                           r"the harness loads safetensors only"):
        materialize(registry, "ties-b", progress=False)


def test_hub_models_are_downloaded_and_keyed_by_commit(tmp_path, monkeypatch):
    import huggingface_hub

    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = save_checkpoint(tmp_path / "hub" / commit, random_weights(0))
    seen = {}

    def fake_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        seen.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"name": "hubtest", "models": {
        "base": {"kind": "base", "hub": "org/base-model", "revision": "main"}}}))
    built = materialize(load_registry(path), "base", progress=False)
    assert built.path == snapshot
    assert seen["repo_id"] == "org/base-model" and "*.safetensors" in seen["allow_patterns"]
    assert not any(p.endswith((".bin", ".pt", ".pth")) for p in seen["allow_patterns"])
    assert len(built.model_hash) == 64


@pytest.mark.slow
def test_zoo_ties_sv_merge_builds(use_zoo_home):
    built = materialize(load_registry(), "ties-sv-tam-flan", progress=False)
    assert built.stats["method"] == "ties_sv" and built.stats["protected"] == "sft-flan"
    assert (built.path / "config.json").is_file()


def test_cli_builds_registry_ids_and_recipe_files_naming_ids(registry_file, tmp_path, capsys):
    from .test_engine import main

    assert main(["--registry", str(registry_file), "merge", "ties-a"]) == 0
    cached = materialize(load_registry(registry_file), "ties-a", progress=False).path
    assert f"merged model: {cached}" in capsys.readouterr().out
    assert main(["--registry", str(registry_file), "merge", "ties-a", str(tmp_path / "copy")]) == 0
    assert all(torch.equal(a, b) for a, b in zip(load_folder(cached).values(), load_folder(tmp_path / "copy").values()))
    recipe = tmp_path / "ids.yaml"
    recipe.write_text(yaml.safe_dump(ties_recipe("sft", "ct-b")))
    assert main(["--registry", str(registry_file), "merge", str(recipe), str(tmp_path / "from-ids")]) == 0
    assert main(["--registry", str(registry_file), "merge", "ct-a"]) == 2
    assert "is a checkpoint" in capsys.readouterr().err
