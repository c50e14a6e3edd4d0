"""Commands build the zoo models they need, and only those, instead of failing on a missing zoo."""

from pathlib import Path

import pytest
import yaml

import harness.zoo
from harness import HarnessError
from harness.build import materialize, zoo_models_read_by
from harness.paths import harness_home
from harness.registry import load_registry
from tasks.languages import MLIC, data_code
from tests.tasks.conftest import _write_mlic


class Stop(Exception):
    """Ends a command at its first zoo model build, once the models it asked for are recorded."""


@pytest.fixture
def zoo_builds(monkeypatch) -> list[list[str]]:
    """Records the `only` list of every zoo build; a build of models stops the command there."""
    asked: list[list[str]] = []

    def recording(dest, progress=True, force=False, only=None):
        asked.append(list(only))
        if only:
            raise Stop
        _write_mlic(Path(dest) / "data", data_code("uig", MLIC))  # the data a sweep reads before its trials
        return dest

    monkeypatch.setattr(harness.zoo, "build_zoo", recording)
    return asked


def test_the_zoo_registry_names_its_zoo_folder():
    registry = load_registry()
    assert registry.zoo == harness_home() / "zoo"
    assert registry.data_dir == registry.zoo / "data"


def test_a_merge_reads_its_inputs_from_the_zoo():
    registry = load_registry()
    assert zoo_models_read_by(registry, "ties-uig") == ["sft-flan", "ct-uig", "base"]
    assert zoo_models_read_by(registry, "ct-tam") == ["ct-tam"]


@pytest.mark.parametrize("command", [
    ["merge", "ties-uig"],
    ["eval", "--model", "ties-uig", "--backend", "hf", "--split", "dev"],
    ["sweep", "--model", "ties-uig", "--backend", "hf", "--grid", "densities"],
], ids=lambda command: command[0])
def test_a_command_builds_the_zoo_models_it_needs(command, harness_cli, zoo_builds):
    with pytest.raises(Stop):
        harness_cli(*command)
    assert [sorted(only) for only in zoo_builds if only] == [["base", "ct-uig", "sft-flan"]]


def test_regress_builds_the_inputs_of_its_merges_at_once(harness_cli, zoo_builds):
    from harness.regress import input_models

    with pytest.raises(Stop):
        harness_cli("regress", "--no-scores")
    assert zoo_builds == [input_models()]


def test_eval_on_a_missing_zoo_builds_it_then_evaluates(harness_cli, monkeypatch, tiny_config):
    """With a tiny zoo definition: tokenizer, data and the merge's three models, then the evaluation."""
    import harness.evaluate
    import harness.evaluation

    monkeypatch.setattr(harness.zoo, "ZooConfig", lambda: tiny_config)  # the zoo that commands build
    evaluated = []
    monkeypatch.setattr(harness.evaluation, "evaluate", lambda model, tasks, settings: evaluated.append(
        (model, tasks, settings)))
    monkeypatch.setattr(harness.evaluate, "print_report", lambda report: None)

    code, _, err = harness_cli("eval", "--model", "ties-uig", "--backend", "hf", "--split", "dev")
    assert code == 0
    assert "building zoo models: base, sft-flan, ct-uig" in err
    zoo = harness_home() / "zoo"
    assert sorted(p.name for p in zoo.iterdir() if not p.name.startswith(".")) == [
        "base", "ct-uig", "data", "sft-flan", "tokenizer", "zoo.json"]
    [(model, tasks, settings)] = evaluated
    assert settings.data_dir == zoo / "data" and (zoo / "data").is_dir()
    assert model.path.parent == harness_home() / "merges" and tasks

    # a second run finds everything built
    code, _, err = harness_cli("eval", "--model", "ties-uig", "--backend", "hf", "--split", "dev")
    assert code == 0 and "building" not in err


def test_a_user_registry_with_a_missing_folder_is_an_error(tmp_path, zoo_builds):
    document = {"name": "mine", "model_root": str(tmp_path / "models"), "data_dir": str(tmp_path / "zoo" / "data"),
                "models": {"base": {"kind": "base", "path": str(tmp_path / "zoo" / "base")}}}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(HarnessError, match=r"model 'base': no checkpoint at .*zoo/base \(no config.json there\)"):
        materialize(load_registry(path), "base", progress=False)
    assert zoo_builds == []  # no `zoo:` key: nothing is built, even in a folder named zoo


def test_a_tuned_registry_keeps_the_zoo(tmp_path):
    from harness.tuned import new_tuned_registry

    registry = load_registry()
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(new_tuned_registry(registry)))
    tuned = load_registry(path)
    assert tuned.zoo == registry.zoo
    assert zoo_models_read_by(tuned, "ties-uig") == ["sft-flan", "ct-uig", "base"]
