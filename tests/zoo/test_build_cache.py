"""The zoo's manifest and cache: built once, rebuilt only where missing or stale, never half-written."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from harness import HarnessError
from harness.zoo import build as zoo_build
from harness.zoo.config import zoo_models


def record_training(patch: pytest.MonkeyPatch) -> list[str]:
    """Record which models get trained (and still train them); returns the growing list of ids."""
    trained: list[str] = []
    real = zoo_build.train_zoo_model

    def recording(model, *args, **kwargs):
        trained.append(model.id)
        return real(model, *args, **kwargs)

    patch.setattr(zoo_build, "train_zoo_model", recording)
    return trained


@pytest.fixture
def spy(monkeypatch):
    return record_training(monkeypatch)


@pytest.fixture(scope="module")
def first_build(tmp_path_factory, tiny_config):
    """One build of the tiny zoo from nothing for this module: (its folder, the models it trained).

    A build trains every tiny model (2-20 s on 2 busy cores), so the tests below start from copies.
    """
    dest = tmp_path_factory.mktemp("first-build") / "zoo"
    with pytest.MonkeyPatch.context() as patch:
        trained = record_training(patch)
        zoo_build.build(dest, tiny_config, progress=False)
    return dest, trained


@pytest.fixture
def built_zoo(first_build, tmp_path) -> Path:
    """A copy of the first build (files and modification times) for one test to change."""
    dest = tmp_path / "zoo"
    shutil.copytree(first_build[0], dest)  # copy2: keeps the modification times
    return dest


def _ids(config):
    return [model.id for model in zoo_models(config)]


def _mtimes(dest):
    return {path: path.stat().st_mtime_ns for path in dest.rglob("*") if path.is_file()}


def test_build_then_cache_hit(first_build, built_zoo, tiny_config, spy):
    dest, trained = first_build
    assert trained == _ids(tiny_config)
    assert zoo_build.stale_artifacts(dest, tiny_config) == []
    manifest = json.loads((dest / "zoo.json").read_text())
    assert manifest["definition"] == zoo_build.definition_hash(tiny_config)
    assert set(manifest["artifacts"]) == {"tokenizer", "data", *_ids(tiny_config)}
    assert not [p for p in dest.iterdir() if p.name.startswith(".")], "temporary folders left behind"

    before = _mtimes(built_zoo)
    zoo_build.build(built_zoo, tiny_config, progress=False)
    assert spy == []
    assert _mtimes(built_zoo) == before


def test_missing_model_rebuilds_only_that_model(built_zoo, tiny_config, spy):
    (built_zoo / "ctsft-uig-mt" / "model.safetensors").unlink()
    untouched = (built_zoo / "ct-uig" / "model.safetensors").stat().st_mtime_ns
    zoo_build.build(built_zoo, tiny_config, progress=False)
    assert spy == ["ctsft-uig-mt"]  # its parent ct-uig is read back from disk, not retrained
    assert (built_zoo / "ct-uig" / "model.safetensors").stat().st_mtime_ns == untouched


def test_definition_change_rebuilds_everything(built_zoo, tiny_config, spy, monkeypatch):
    monkeypatch.setattr(zoo_build, "definition_hash", lambda config: "a-changed-definition")
    assert zoo_build.stale_artifacts(built_zoo, tiny_config) == ["tokenizer", "data", *_ids(tiny_config)]
    zoo_build.build(built_zoo, tiny_config, progress=False)
    assert spy == _ids(tiny_config)
    assert json.loads((built_zoo / "zoo.json").read_text())["definition"] == "a-changed-definition"


def test_definition_hash_covers_config():
    from harness.zoo.config import ZooConfig

    config = ZooConfig()
    assert zoo_build.definition_hash(config) == zoo_build.definition_hash(ZooConfig())
    assert zoo_build.definition_hash(config) != zoo_build.definition_hash(replace(config, seed=7))
    assert zoo_build.definition_hash(config) != zoo_build.definition_hash(
        replace(config, sft=replace(config.sft, steps=config.sft.steps + 1)))


def test_interrupted_build_leaves_no_partial_model_and_resumes(tmp_path, tiny_config, monkeypatch):
    dest = tmp_path / "zoo"
    real = zoo_build.train_zoo_model

    def failing_on_ct(model, *args, **kwargs):
        if model.id == "ct-tel":
            raise KeyboardInterrupt
        return real(model, *args, **kwargs)

    monkeypatch.setattr(zoo_build, "train_zoo_model", failing_on_ct)
    with pytest.raises(KeyboardInterrupt):
        zoo_build.build(dest, tiny_config, progress=False)
    assert not (dest / "ct-tel").exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]
    assert set(json.loads((dest / "zoo.json").read_text())["artifacts"]) == {"tokenizer", "data", "base", "sft-flan"}

    monkeypatch.setattr(zoo_build, "train_zoo_model", real)
    assert zoo_build.stale_artifacts(dest, tiny_config) == [m for m in _ids(tiny_config) if m not in ("base", "sft-flan")]
    zoo_build.build(dest, tiny_config, progress=False)
    assert zoo_build.stale_artifacts(dest, tiny_config) == []


def test_destination_that_is_a_file_is_an_error(tmp_path, tiny_config):
    target = tmp_path / "zoo"
    target.write_text("not a folder")
    with pytest.raises(HarnessError, match="not a folder"):
        zoo_build.build(target, tiny_config, progress=False)


def test_model_ids_match_the_registry():
    from harness.registry import load_registry
    from harness.zoo.config import ZooConfig

    registry = load_registry()
    checkpoints = {entry.id for entry in registry.models.values() if entry.recipe is None}
    assert set(_ids(ZooConfig())) == checkpoints
    for model in zoo_models(ZooConfig()):
        assert registry.resolve(model.id).path.name == model.id


def test_a_model_trains_once_its_parent_is_in_place(tiny_config):
    models = {model.id: model for model in zoo_models(tiny_config)}
    waiting = list(models.values())
    assert [m.id for m in zoo_build.ready_to_train(waiting, [])] == ["base"]
    waiting.remove(models["base"])  # base is in place: its children may start
    assert [m.id for m in zoo_build.ready_to_train(waiting, [])] == ["sft-flan", "ct-tel", "ct-uig"]
    waiting.remove(models["ct-tel"])  # ct-tel is training: its children wait for it
    assert [m.id for m in zoo_build.ready_to_train(waiting, [models["ct-tel"]])] == ["sft-flan", "ct-uig"]
