"""The model registry: ids, aliases, recipe references, and the two shipped registry files."""

from pathlib import Path

import pytest
import yaml

from harness import HarnessError
from harness.cli import main
from harness.paths import REGISTRIES_DIR
from harness.registry import load_registry, parse_registry
from tasks.languages import TARGET_LANGUAGES


def registry_from(models: dict, **top) -> object:
    return parse_registry({"name": "t", "models": models, **top}, Path("/tmp/t.yaml"))


def merge_of(*inputs: str, base: str = "base") -> dict:
    return {
        "kind": "merge",
        "recipe": {"merge_method": "ties", "base_model": base, "models": [{"model": m} for m in inputs]},
    }


CHECKPOINTS = {"base": {"kind": "base", "path": "base"}, "sft": {"kind": "sft", "path": "sft"}}


def test_zoo_registry_has_every_paper_id_for_every_language():
    registry = load_registry()
    assert registry.name == "zoo"
    for lang in TARGET_LANGUAGES:
        for model_id in [f"ct-{lang}", f"ctsft-{lang}-flan", f"ctsft-{lang}-mt", f"wavg-{lang}-flan",
                         f"ties-{lang}-flan", f"ties-sv-{lang}-flan"]:
            assert lang in registry.resolve(model_id).langs
    assert registry.resolve("base").kind == "base"
    assert registry.resolve("sft-flan").kind == "sft"
    assert registry.resolve("ties-mvf-uig-flan").langs == ("mvf", "uig")


def test_no_model_is_made_for_the_english_control():
    for name in ("zoo", "paper"):
        models = load_registry(name).models.values()
        assert not [m.id for m in models if "eng" in m.langs or "-eng" in m.id], name


def test_paper_registry_points_at_the_hub_models():
    registry = load_registry("paper")
    assert registry.source == (REGISTRIES_DIR / "paper.yaml").resolve()
    assert registry.resolve("base").hub == "meta-llama/Llama-2-7b-hf"
    assert registry.resolve("sft-flan").hub == "pkupie/Llama-2-7b-FLAN-step884"
    assert registry.resolve("ct-ory").hub == "pkupie/Llama-2-7b-ori"
    assert registry.resolve("ct-mvf").hub == "pkupie/Llama-2-7b-mon"
    recipe = registry.resolve("ties-sv-uig").recipe
    assert recipe["merge_method"] == "ties_sv" and "slack" in recipe["parameters"]
    assert [m["model"] for m in recipe["models"] if m["parameters"].get("protect")] == ["sft-flan"]


def test_alias_resolves_to_the_full_id():
    registry = load_registry()
    assert registry.resolve("ties-uig").id == "ties-uig-flan"
    assert registry.resolve("ties-sv-uig").id == "ties-sv-uig-flan"
    assert [e.id for e in registry.inputs_of("ties-uig")] == ["sft-flan", "ct-uig", "base"]


def test_unknown_id_lists_close_matches():
    with pytest.raises(HarnessError, match=r"unknown model id 'ties-ug'.*did you mean: .*ties-uig"):
        load_registry().resolve("ties-ug")


def test_recipe_reference_to_a_missing_id_is_an_error():
    with pytest.raises(HarnessError, match=r"recipe of 'm' refers to unknown model 'ct-xx'"):
        registry_from({**CHECKPOINTS, "m": merge_of("sft", "ct-xx")})


def test_recipe_cycle_is_an_error():
    models = {**CHECKPOINTS, "a": merge_of("sft", "b"), "b": merge_of("sft", "a")}
    with pytest.raises(HarnessError, match=r"recipe cycle: (a -> b -> a|b -> a -> b)"):
        registry_from(models)


def test_self_reference_is_a_cycle():
    with pytest.raises(HarnessError, match=r"recipe cycle: a -> a"):
        registry_from({**CHECKPOINTS, "a": merge_of("sft", "a")})


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"kind": "wizard", "path": "x"}, "has kind 'wizard'"),
        ({"kind": "ct", "path": "x", "hub": "y/z"}, "exactly one of path, hub, recipe"),
        ({"kind": "ct"}, "exactly one of path, hub, recipe"),
        ({"kind": "merge", "path": "x"}, "kind 'merge' goes with a recipe"),
        ({"kind": "ct", "path": "x", "langs": ["xyz"]}, "unknown language"),
        ({"kind": "ct", "path": "x", "colour": "red"}, "unknown field"),
        ({"kind": "ct", "path": "x", "aliases": "bas"}, "aliases must be a list of names, got 'bas'"),
        ({"kind": "ct", "path": "x", "langs": "uig"}, "langs must be a list of language codes, got 'uig'"),
        ("just a string", "must be a mapping"),
    ],
)
def test_malformed_entries_name_the_model(entry, message):
    with pytest.raises(HarnessError, match=rf"model 'bad'.*{message}|{message}.*"):
        registry_from({**CHECKPOINTS, "bad": entry})


def test_alias_collisions_are_errors():
    models = {**CHECKPOINTS, "x": {"kind": "ct", "path": "x", "aliases": ["base"]}}
    with pytest.raises(HarnessError, match=r"alias 'base' of 'x' is already taken"):
        registry_from(models)


def test_relative_paths_resolve_against_model_root(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path))
    registry = registry_from(CHECKPOINTS, model_root="${HARNESS_HOME}/zoo", data_dir="${HARNESS_HOME}/zoo/data")
    assert registry.resolve("base").path == tmp_path / "zoo" / "base"
    assert registry.data_dir == tmp_path / "zoo" / "data"


def test_bad_registry_files_are_one_line_errors(tmp_path):
    with pytest.raises(HarnessError, match="registry file not found"):
        load_registry(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [unclosed\n")
    with pytest.raises(HarnessError, match="not valid YAML") as info:
        load_registry(broken)
    assert "\n" not in str(info.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text(yaml.safe_dump({"name": "e", "models": {}}))
    with pytest.raises(HarnessError, match="non-empty 'models'"):
        load_registry(empty)


def test_a_model_id_given_twice_is_an_error_naming_it(tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("name: t\nmodels:\n  base: {kind: base, path: a}\n  base: {kind: base, path: b}\n")
    with pytest.raises(HarnessError, match=r"twice\.yaml: not valid YAML: .*duplicate key 'base'.*line 4") as info:
        load_registry(twice)
    assert "\n" not in str(info.value)


def test_models_command_lists_and_filters(capsys):
    assert main(["models", "--lang", "uig"]) == 0
    out = capsys.readouterr().out
    assert "ties-uig-flan" in out and "ties-uig" in out and "ct-uig" in out
    assert "ct-tam" not in out


def test_models_command_accepts_registry_before_or_after(capsys):
    paper_file = str(REGISTRIES_DIR / "paper.yaml")
    assert main(["--registry", paper_file, "models", "--kind", "base"]) == 0
    assert main(["models", "--registry", "paper", "--kind", "base"]) == 0  # a shipped one, by name
    out = capsys.readouterr().out
    assert out.count("meta-llama/Llama-2-7b-hf") == 2


def test_unknown_registry_file_exits_non_zero(capsys, tmp_path):
    assert main(["models", "--registry", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness models: error: registry file not found") and err.count("\n") == 1
