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
    for trainer in ("train_zoo_model", "train_adapter_into"):  # full models, LoRA adapters
        real = getattr(zoo_build, trainer)

        def recording(model, *args, real=real, **kwargs):
            trained.append(model.id)
            return real(model, *args, **kwargs)

        patch.setattr(zoo_build, trainer, recording)
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


def test_a_ct_model_carries_its_checkpoints_and_the_manifest_their_tokens(first_build, tiny_config):
    from harness.build import folder_hash

    dest, _ = first_build
    stage = tiny_config.continued
    record = json.loads((dest / "zoo.json").read_text())["artifacts"]["ct-uig"]
    assert record["tokens"] == stage.steps * stage.batch_size * stage.seq_len
    assert record["checkpoints"] == [{"label": "step1", "step": 1, "tokens": stage.batch_size * stage.seq_len}]
    checkpoint = dest / "ct-uig" / "checkpoints" / "step1"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in checkpoint.iterdir()}
    assert "checkpoints" not in json.loads((dest / "zoo.json").read_text())["artifacts"]["ctsft-uig-flan"]
    # The model's identity hash covers its own files, not its checkpoints' (harness regress pins it).
    before = folder_hash(dest / "ct-uig")
    shutil.move(checkpoint.parent, dest / "moved-away")
    try:
        assert folder_hash(dest / "ct-uig") == before
    finally:
        shutil.move(dest / "moved-away", checkpoint.parent)


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
    adapters = ["lora-tel", "lora-uig", "lora-comb"]  # over base
    assert [m.id for m in zoo_build.ready_to_train(waiting, [])] == ["sft-flan", "ct-tel", "ct-uig", *adapters]
    waiting.remove(models["ct-tel"])  # ct-tel is training: its children wait for it
    assert [m.id for m in zoo_build.ready_to_train(waiting, [models["ct-tel"]])] == ["sft-flan", "ct-uig", *adapters]


# ---- building only what a command needs ---------------------------------------------------------

def test_only_builds_the_named_models_and_their_ancestors(first_build, tmp_path, tiny_config, spy):
    dest = tmp_path / "zoo"
    zoo_build.build(dest, tiny_config, progress=False, only=["ctsft-uig-mt"])
    assert spy == ["base", "ct-uig", "ctsft-uig-mt"]  # parents first
    built = set(json.loads((dest / "zoo.json").read_text())["artifacts"])
    assert built == {"tokenizer", "data", "base", "ct-uig", "ctsft-uig-mt"}
    assert zoo_build.stale_artifacts(dest, tiny_config, only=["ctsft-uig-mt"]) == []
    # the same bits as the whole zoo's build
    full = first_build[0]
    for name in ("tokenizer/tokenizer.json", "ctsft-uig-mt/model.safetensors"):
        assert (dest / name).read_bytes() == (full / name).read_bytes(), name

    # asking for more trains only what is still missing
    zoo_build.build(dest, tiny_config, progress=False, only=["sft-flan", "ct-uig"])
    assert spy == ["base", "ct-uig", "ctsft-uig-mt", "sft-flan"]


def test_two_builds_at_once_train_each_model_once(tmp_path, tiny_config, spy):
    """Two commands that need zoo models at the same time: the second waits, then finds them built."""
    import threading

    dest, errors = tmp_path / "zoo", []

    def build():
        try:
            zoo_build.build(dest, tiny_config, progress=False, only=["ct-uig"])
        except Exception as err:  # an error in a thread would otherwise go unseen
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert spy == ["base", "ct-uig"]
    assert zoo_build.stale_artifacts(dest, tiny_config, only=["ct-uig"]) == []


def test_only_an_unknown_model_is_an_error(tmp_path, tiny_config):
    with pytest.raises(HarnessError, match=r"unknown zoo model\(s\) \['ct-xyz'\]"):
        zoo_build.build(tmp_path / "zoo", tiny_config, progress=False, only=["ct-xyz"])
    assert not (tmp_path / "zoo").exists()


def test_needed_artifacts_are_the_ancestors_in_build_order(tiny_config):
    assert zoo_build.needed_artifacts(tiny_config, ["ctsft-tel-flan", "sft-flan"]) == [
        "tokenizer", "data", "base", "sft-flan", "ct-tel", "ctsft-tel-flan"]
    assert zoo_build.needed_artifacts(tiny_config, []) == ["tokenizer", "data"]
    assert zoo_build.needed_artifacts(tiny_config) == ["tokenizer", "data", *_ids(tiny_config)]


# ---- held-out losses ------------------------------------------------------------------------------

def test_every_model_records_its_heldout_losses(first_build, tiny_config):
    from harness.zoo.heldout import heldout_losses
    from harness.zoo.tokenizer import load_tokenizer
    from harness.zoo.train import load_model

    dest, _ = first_build
    records = json.loads((dest / "zoo.json").read_text())["artifacts"]
    languages = {model_id: list(records[model_id]["heldout_loss"]) for model_id in _ids(tiny_config)}
    assert languages == {
        "base": ["en", "tel", "uig"], "sft-flan": ["en"],
        "ct-tel": ["en", "tel"], "ctsft-tel-flan": ["en", "tel"], "ctsft-tel-mt": ["en", "tel"],
        "ct-uig": ["en", "uig"], "ctsft-uig-flan": ["en", "uig"], "ctsft-uig-mt": ["en", "uig"],
        "lora-tel": ["en", "tel"], "lora-uig": ["en", "uig"], "lora-comb": ["en", "tel", "uig"]}
    # measured on the saved weights, the same every time
    ct_uig = next(model for model in zoo_models(tiny_config) if model.id == "ct-uig")
    again = heldout_losses(load_model(dest / "ct-uig"), load_tokenizer(dest / "tokenizer"), ct_uig, tiny_config)
    assert again == records["ct-uig"]["heldout_loss"]
    assert all(0 < loss < 20 for loss in again.values())


def test_heldout_rows_are_fixed_per_language_and_differ_between_languages(first_build, tiny_config):
    from harness.zoo.heldout import HELDOUT_ROWS, HELDOUT_TOKENS, heldout_rows
    from harness.zoo.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(first_build[0] / "tokenizer")
    uig = heldout_rows(tokenizer, "uig", tiny_config)
    assert uig.shape == (HELDOUT_ROWS, HELDOUT_TOKENS)
    assert uig.equal(heldout_rows(tokenizer, "uig", tiny_config))
    assert not uig.equal(heldout_rows(tokenizer, "tel", tiny_config))


def test_zoo_info_shows_heldout_losses_beside_bases(first_build, tiny_config):
    from harness.zoo import zoo_info

    dest, _ = first_build
    records = json.loads((dest / "zoo.json").read_text())["artifacts"]
    lines = zoo_info(dest, tiny_config).splitlines()
    header = next(line for line in lines if line.startswith("model"))
    for column in ("loss en", "loss lang", "base on lang"):
        assert column in header
    row = next(line for line in lines if line.startswith("ct-uig "))
    ct, base = records["ct-uig"]["heldout_loss"], records["base"]["heldout_loss"]
    assert f"{ct['en']:.2f} {ct['uig']:>9.2f} {base['uig']:>12.2f}  ok" in row
    assert next(line for line in lines if line.startswith("sft-flan ")).split()[-4:-1] == [
        f"{records['sft-flan']['heldout_loss']['en']:.2f}", "-", "-"]


def test_every_ct_model_knows_its_language(zoo_home):
    """The zoo's ct-<lang> predicts held-out text in its language far better than base does."""
    from harness.zoo.config import ZooConfig

    records = json.loads((zoo_home / "zoo" / "zoo.json").read_text())["artifacts"]
    base = records["base"]["heldout_loss"]
    for lang in ZooConfig().languages:
        ct = records[f"ct-{lang}"]["heldout_loss"]
        assert ct[lang] < 0.5 * base[lang], (lang, ct[lang], base[lang])
