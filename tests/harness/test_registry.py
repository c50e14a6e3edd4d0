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


# ---- checkpoint series ------------------------------------------------------------------------

def series_registry(**ct_fields) -> object:
    ct = {"kind": "ct", "langs": ["uig"], "path": "ct-uig", "tokens": 300,
          "checkpoints": [{"label": "step200", "tokens": 200, "path": "ct-uig/checkpoints/step200"},
                          {"label": "step100", "tokens": 100, "path": "ct-uig/checkpoints/step100"}]}
    merge = merge_of("sft", "ct-uig") | {"langs": ["uig"], "aliases": ["ties-uig"]}
    merge["recipe"]["tokenizer_source"] = "ct-uig"
    return registry_from({**CHECKPOINTS, "ct-uig": ct | ct_fields, "ties-uig-flan": merge,
                          "ct-mvf": {"kind": "ct", "langs": ["mvf"], "path": "ct-mvf"},
                          "ties-mvf-uig": merge_of("sft", "ct-mvf", "ct-uig")}, model_root="/zoo")


def test_a_checkpoint_is_a_model_of_its_own_addressed_as_id_at_label():
    registry = series_registry()
    step = registry.resolve("ct-uig@step100")
    assert (step.kind, step.langs, step.tokens, step.series) == ("ct", ("uig",), 100, "ct-uig")
    assert step.path == Path("/zoo/ct-uig/checkpoints/step100")
    assert [e.id for e in registry.series("ct-uig")] == ["ct-uig@step100", "ct-uig@step200", "ct-uig"]
    assert [e.tokens for e in registry.series("ct-uig@step200")] == [100, 200, 300]
    assert "ct-uig@step100" not in registry.models  # `harness models` lists series heads only


def test_a_merge_over_a_series_expands_to_one_merge_per_checkpoint():
    registry = series_registry()
    step = registry.resolve("ties-uig@step200")  # an alias works before the label too
    assert (step.id, step.tokens, step.series) == ("ties-uig-flan@step200", 200, "ties-uig-flan")
    assert [m["model"] for m in step.recipe["models"]] == ["sft", "ct-uig@step200"]
    assert step.recipe["tokenizer_source"] == "ct-uig@step200"
    assert registry.resolve("ties-uig-flan").recipe["tokenizer_source"] == "ct-uig"  # the original is untouched
    assert [(e.id, e.tokens) for e in registry.series("ties-uig")] == [
        ("ties-uig-flan@step100", 100), ("ties-uig-flan@step200", 200), ("ties-uig-flan", 300)]
    assert [e.id for e in registry.inputs_of("ties-uig@step100")] == ["sft", "ct-uig@step100", "base"]
    # ct-mvf has no checkpoints: the multi-language merge reads one series, ct-uig's, and expands over it.
    assert registry.series_input("ties-mvf-uig").id == "ct-uig"
    assert registry.resolve("ties-mvf-uig@step100").tokens == 100
    assert registry.series_input("ct-uig") is None


def test_a_merge_over_several_series_does_not_expand():
    two = registry_from({**CHECKPOINTS, "ct-uig": {"kind": "ct", "path": "a", "tokens": 2,
                                                   "checkpoints": [{"label": "s1", "tokens": 1, "path": "a1"}]},
                         "ct-mvf": {"kind": "ct", "path": "b", "tokens": 2,
                                    "checkpoints": [{"label": "s1", "tokens": 1, "path": "b1"}]},
                         "m": merge_of("sft", "ct-mvf", "ct-uig")})
    assert sorted(two.checkpoints) == ["ct-mvf@s1", "ct-uig@s1"] and two.resolve("m").tokens is None


def test_an_unknown_checkpoint_names_the_ones_there_are():
    with pytest.raises(HarnessError, match=r"'ct-uig' has no checkpoint 'step7'.*its checkpoints: step100, step200"):
        series_registry().resolve("ct-uig@step7")


@pytest.mark.parametrize("fields, message", [
    ({"tokens": None}, r"needs tokens: the tokens it has seen itself"),
    ({"tokens": -1}, r"tokens must be a whole number"),
    ({"tokens": "many"}, r"tokens must be a whole number"),
    ({"checkpoints": []}, r"checkpoints must be a non-empty list"),
    ({"checkpoints": ["step1"]}, r"each checkpoint is a mapping"),
    ({"checkpoints": [{"label": "a@b", "tokens": 1, "path": "p"}]}, r"label 'a@b' must be a word"),
    ({"checkpoints": [{"label": "s", "path": "p"}]}, r"checkpoint 's' needs tokens"),
    ({"checkpoints": [{"label": "s", "tokens": 1}]}, r"checkpoint 's' needs a path \(the model is a path entry\)"),
    ({"checkpoints": [{"label": "s", "tokens": 1, "revision": "abc"}]}, r"needs a path .* and no revision"),
    ({"checkpoints": [{"label": "s", "tokens": 1, "path": "p", "step": 3}]}, r"unknown field\(s\) \['step'\]"),
    ({"checkpoints": [{"label": "s", "tokens": 1, "path": "p"}, {"label": "s", "tokens": 2, "path": "q"}]},
     r"checkpoint label given twice: s"),
    ({"checkpoints": [{"label": "a", "tokens": 1, "path": "p"}, {"label": "b", "tokens": 1, "path": "q"}]},
     r"checkpoint tokens given twice: 1"),
    ({"checkpoints": [{"label": "late", "tokens": 300, "path": "p"}]}, r"checkpoint\(s\) late have as many tokens"),
])
def test_malformed_series_are_one_line_errors_naming_the_model(fields, message):
    with pytest.raises(HarnessError, match=r"model 'ct-uig'.*" + message):
        series_registry(**fields)


def test_hub_checkpoints_are_revisions_and_merges_or_adapters_have_none():
    hub = registry_from({"ct": {"kind": "ct", "hub": "org/ct", "tokens": 9,
                                "checkpoints": [{"label": "early", "tokens": 3, "revision": "abc123"}]}})
    early = hub.resolve("ct@early")
    assert (early.hub, early.revision, early.path) == ("org/ct", "abc123", None)
    with pytest.raises(HarnessError, match=r"needs a revision \(the model is a hub entry\) and no path"):
        registry_from({"ct": {"kind": "ct", "hub": "org/ct", "tokens": 9,
                              "checkpoints": [{"label": "early", "tokens": 3, "path": "x"}]}})
    with pytest.raises(HarnessError, match=r"'m': a merge has no tokens of its own"):
        registry_from({**CHECKPOINTS, "m": merge_of("sft") | {"tokens": 5}})
    with pytest.raises(HarnessError, match=r"'m': a merge has no checkpoints"):
        registry_from({**CHECKPOINTS, "m": merge_of("sft") | {"checkpoints": [{"label": "a", "tokens": 1}]}})


def test_a_checkpoint_id_that_is_already_a_registry_id_is_an_error():
    with pytest.raises(HarnessError, match=r"checkpoint id\(s\) ct-uig@step100 are already registry ids"):
        registry_from({**CHECKPOINTS, "ct-uig": {"kind": "ct", "path": "c", "tokens": 2,
                                                 "checkpoints": [{"label": "step100", "tokens": 1, "path": "p"}]},
                       "ct-uig@step100": {"kind": "ct", "path": "other"}})


def test_the_zoo_registry_lists_each_ct_models_checkpoints_as_the_zoo_saves_them():
    from harness.zoo.config import CHECKPOINTS as FOLDER, ZooConfig, checkpoint_label

    stage = ZooConfig().continued
    registry = load_registry()
    for lang in TARGET_LANGUAGES:
        ct = registry.resolve(f"ct-{lang}")
        assert ct.tokens == stage.tokens_after(stage.steps)
        assert [(c.label, c.tokens, c.path) for c in ct.checkpoints] == [
            (checkpoint_label(s), stage.tokens_after(s), ct.path / FOLDER / checkpoint_label(s)) for s in stage.checkpoints]
        assert [e.tokens for e in registry.series(f"ties-{lang}-flan")] == [
            *(stage.tokens_after(s) for s in stage.checkpoints), ct.tokens]
        for variant in ("flan", "mt"):  # trained from the final CT model
            assert registry.resolve(f"ctsft-{lang}-{variant}").tokens == ct.tokens


def test_a_zoo_checkpoint_is_built_with_its_zoo_model():
    from harness.build import zoo_models_read_by

    registry = load_registry()
    assert zoo_models_read_by(registry, "ct-uig@step30") == ["ct-uig"]
    assert zoo_models_read_by(registry, "ties-uig@step60") == ["sft-flan", "ct-uig", "base"]


def test_models_command_names_a_series_checkpoints(capsys):
    assert main(["models", "--kind", "ct", "--lang", "uig"]) == 0
    assert "checkpoints ct-uig@step30, ct-uig@step60, ct-uig@step90" in capsys.readouterr().out
