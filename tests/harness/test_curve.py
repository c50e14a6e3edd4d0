"""`harness curve`: the models of a checkpoint curve, and the whole command on a tiny zoo."""

import json

import pytest
import yaml

from harness import HarnessError, cli
from harness.curve import curve_entries, curve_text
from harness.registry import load_registry


def test_a_merges_curve_is_its_ct_series_its_own_and_the_ctsft_points():
    entries = curve_entries(load_registry(), "ties-uig")
    assert [(e.id, e.tokens) for e in entries] == [
        ("ct-uig@step30", 61440), ("ct-uig@step60", 122880), ("ct-uig@step90", 184320), ("ct-uig", 245760),
        ("ties-uig-flan@step30", 61440), ("ties-uig-flan@step60", 122880), ("ties-uig-flan@step90", 184320),
        ("ties-uig-flan", 245760), ("ctsft-uig-flan", 245760), ("ctsft-uig-mt", 245760)]
    assert [e.id for e in curve_entries(load_registry(), "ties-uig@step60")] == [e.id for e in entries]


def test_a_ct_models_curve_has_no_merge():
    ids = [e.id for e in curve_entries(load_registry(), "ct-bod@step30")]
    assert ids == ["ct-bod@step30", "ct-bod@step60", "ct-bod@step90", "ct-bod", "ctsft-bod-flan", "ctsft-bod-mt"]


@pytest.mark.parametrize("model", ["base", "ties-mvf-uig-flan", "ctsft-uig-flan"])
def test_a_model_outside_any_series_is_one_line(model, capsys):
    with pytest.raises(HarnessError, match=f"model '{model}' is neither a merge over a checkpoint series"):
        curve_entries(load_registry(), model)
    assert cli.main(["curve", "--model", model]) == 2
    assert "neither a merge over a checkpoint series" in capsys.readouterr().err


def test_the_printed_curve_is_a_table_per_language_by_tokens():
    text = curve_text([{"lang": "uig", "series": "ct-uig", "tokens": 300, "average": 0.5},
                       {"lang": "uig", "series": "ct-uig", "tokens": 100, "average": 0.4},
                       {"lang": "uig", "series": "ctsft-uig-mt", "tokens": 300, "average": None}], "dev")
    assert "uig, dev split: language average (%) by CT tokens seen" in text
    header, ct, ctsft = text.strip().splitlines()[-3:]
    assert header.split() == ["tokens", "100", "300"] and ct.split() == ["ct-uig", "40.0", "50.0"]
    assert ctsft.split() == ["ctsft-uig-mt", "-", "-"]


@pytest.mark.slow  # a tiny zoo build and 8 in-process evaluations: about a minute on 2 busy cores
def test_harness_curve_builds_evaluates_and_stores_the_series(tmp_path, capsys):
    from tests.zoo.conftest import TINY

    from harness.zoo.build import build

    zoo = build(tmp_path / "zoo", TINY, progress=False)
    stage = TINY.continued
    registry = tmp_path / "tiny.yaml"
    ties = {"merge_method": "ties", "base_model": "base", "tokenizer_source": "ct-uig",
            "models": [{"model": "sft-flan", "parameters": {"weight": 1.0, "density": 0.6}},
                       {"model": "ct-uig", "parameters": {"weight": 1.0, "density": 0.6}}]}
    registry.write_text(yaml.safe_dump({"name": "tiny", "model_root": str(zoo), "data_dir": str(zoo / "data"), "models": {
        "base": {"kind": "base", "path": "base"},
        "sft-flan": {"kind": "sft", "path": "sft-flan"},
        "ct-uig": {"kind": "ct", "langs": ["uig"], "path": "ct-uig", "tokens": stage.tokens_after(2),
                   "checkpoints": [{"label": "step1", "tokens": stage.tokens_after(1), "path": "ct-uig/checkpoints/step1"}]},
        "ctsft-uig-mt": {"kind": "ctsft", "langs": ["uig"], "path": "ctsft-uig-mt", "tokens": stage.tokens_after(2)},
        "ties-uig-flan": {"kind": "merge", "langs": ["uig"], "aliases": ["ties-uig"], "recipe": ties}}}))
    store = f"sqlite:///{tmp_path / 'results.db'}"
    argv = ["curve", "--registry", str(registry), "--model", "ties-uig", "--split", "dev", "--limit", "2",
            "--backend", "hf", "--store", store]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "uig, dev split: language average (%) by CT tokens seen" in out
    assert {"ct-uig", "ties-uig-flan", "ctsft-uig-mt"} <= {line.split()[0] for line in out.splitlines() if line.strip()}

    from harness.store import ResultStore

    models = ResultStore(store).models().set_index("model")
    assert models.loc[["ct-uig@step1", "ct-uig", "ties-uig-flan@step1", "ties-uig-flan", "ctsft-uig-mt"],
                      ["series", "tokens"]].values.tolist() == [
        ["ct-uig", 64], ["ct-uig", 128], ["ties-uig-flan", 64], ["ties-uig-flan", 128], ["ctsft-uig-mt", 128]]
    recipe = json.loads(models.loc["ties-uig-flan@step1", "recipe_json"])
    assert [m["model"] for m in recipe["models"]] == ["sft-flan", "ct-uig@step1"]
    results = ResultStore(store).results(split="dev")
    assert set(results["model"]) == set(models.index) and set(results["lang"]) == {"uig"}
    # Run again: every result is stored, nothing is evaluated twice.
    assert cli.main(argv) == 0
    assert len(ResultStore(store).results(split="dev", latest_only=False)) == len(results)
