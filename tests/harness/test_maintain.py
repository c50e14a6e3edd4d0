"""`harness maintain`: retrain one language's adapter with more data and COMB, timed and stored."""

import pytest
import yaml
from safetensors.torch import load_file

import harness.zoo
from harness.paths import harness_home
from harness.registry import load_registry
from harness.store import ResultStore, maintenance_times
from tests.zoo.conftest import TINY

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture
def tiny_zoo_registry(tmp_path, monkeypatch):
    """A registry over a tiny zoo (languages tel and uig) holding base and the three adapters."""
    monkeypatch.setattr(harness.zoo, "ZooConfig", lambda: TINY)  # the zoo that commands build
    zoo = tmp_path / "zoo"
    models = {"base": {"kind": "base", "path": "base"}}
    for lang in TINY.languages:
        models[f"lora-{lang}"] = {"kind": "adapter", "base": "base", "langs": [lang], "path": f"lora-{lang}"}
    models["lora-comb"] = {"kind": "adapter", "base": "base", "langs": list(TINY.languages), "path": "lora-comb"}
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "model_root": str(zoo), "zoo": str(zoo), "models": models}))
    return path


def test_maintain_retrains_one_adapter_and_comb_and_stores_the_measured_times(tiny_zoo_registry, harness_cli):
    code, out, err = harness_cli("--registry", str(tiny_zoo_registry), "maintain", "--update", "uig", "--factor", "3")
    assert code == 0, err
    rows = maintenance_times(ResultStore())
    assert set(rows["experiment"]) == {"uig-x3"} and set(rows["factor"]) == {3}
    steps = {(row.phase, row.model): row for row in rows.itertuples()}
    budget = TINY.lora.stage.steps
    # the initial build: the zoo manifest's measured training of every adapter
    assert {model: steps["initial", model].steps for model in ("lora-tel", "lora-uig", "lora-comb")} == {
        "lora-tel": budget, "lora-uig": budget, "lora-comb": 2 * budget}
    # the update: uig's adapter on 3 budgets of its data; COMB on the others' 1 plus uig's 3
    assert steps["update", "lora-uig"].steps == 3 * budget
    assert steps["update", "lora-uig"].examples == 3 * budget * TINY.lora.stage.batch_size
    assert steps["update", "lora-comb"].steps == 4 * budget
    assert steps["update", "lora-comb"].evaluated_as == "lora-comb@uig-x3"
    assert all(row.seconds > 0 for row in rows.itertuples())
    assert "lora-comb@uig-x3" in out

    # the retrained adapters are new weights, and the experiment's registry names them
    folder = harness_home() / "maintain" / "uig-x3"
    zoo = tiny_zoo_registry.parent / "zoo"
    assert (folder / "lora-uig" / WEIGHTS).read_bytes() != (zoo / "lora-uig" / WEIGHTS).read_bytes()
    assert load_file(folder / "lora-uig" / WEIGHTS).keys() == load_file(zoo / "lora-uig" / WEIGHTS).keys()
    updated = load_registry(folder / "registry.yaml").resolve("lora-uig@uig-x3")
    assert updated.kind == "adapter" and updated.base == "base" and updated.path == folder / "lora-uig"

    # a rerun measures again and replaces the experiment's rows
    assert harness_cli("--registry", str(tiny_zoo_registry), "maintain", "--update", "uig", "--factor", "3")[0] == 0
    assert len(maintenance_times(ResultStore())) == len(rows)


@pytest.mark.parametrize(("args", "message"), [
    (["--update", "tam"], "--update 'tam': not a language of the zoo; one of tel, uig"),
    (["--update", "uig", "--factor", "1"], "--factor 1: an update adds data, so the factor must be 2 or more"),
])
def test_maintain_refuses_bad_arguments_in_one_line_before_building(tiny_zoo_registry, harness_cli, args, message):
    code, _, err = harness_cli("--registry", str(tiny_zoo_registry), "maintain", *args)
    assert code == 2 and err.strip() == f"harness maintain: error: {message}"
    assert not (tiny_zoo_registry.parent / "zoo").exists()


def test_the_experiments_registry_remakes_each_merge_over_the_retrained_adapter(tmp_path):
    """The shipped zoo registry: the four merges over lora-uig, re-made in the experiment's registry
    over lora-uig@uig-x2 with the other six adapters unchanged."""
    from harness.maintain import plan_for, write_registry
    from harness.zoo.config import ZooConfig

    registry = load_registry()
    plan = plan_for(registry, ZooConfig(), "uig", 2)
    assert plan.merges == ("lora-ties", "lora-dare-ties", "lora-knots-ties", "lora-knots-dare-ties")
    updated = write_registry(registry, plan, tmp_path / "uig-x2")
    assert load_registry(tmp_path / "uig-x2" / "registry.yaml").models.keys() == updated.models.keys()
    for merge in plan.merges:
        before, after = registry.resolve(merge).recipe, updated.resolve(f"{merge}@uig-x2").recipe
        assert [spec["model"] for spec in after["models"]] == [
            "lora-uig@uig-x2" if spec["model"] == "lora-uig" else spec["model"] for spec in before["models"]]
        assert [spec["parameters"] for spec in after["models"]] == [spec["parameters"] for spec in before["models"]]
        assert after["merge_method"] == before["merge_method"] and after["base_model"] == "base"
    comb = updated.resolve("lora-comb@uig-x2")
    assert comb.kind == "adapter" and comb.path == tmp_path / "uig-x2" / "lora-comb"
    assert updated.resolve("lora-ties").recipe == registry.resolve("lora-ties").recipe  # the source's, kept


def test_maintain_times_the_merges_over_the_adapters_before_and_after_the_update(tiny_zoo_registry, harness_cli):
    """All branches together: the registry's merges over the adapters (the merge library reads each
    adapter as base + ΔW) are made and timed in the initial build and again over the retrained adapter."""
    registry = yaml.safe_load(tiny_zoo_registry.read_text())
    inputs = [{"model": f"lora-{lang}", "parameters": {"weight": 1.0, "density": 1.0}} for lang in TINY.languages]
    for merge_id, method in (("lora-ties", "ties"), ("lora-knots-ties", "knots_ties")):
        registry["models"][merge_id] = {"kind": "merge", "langs": list(TINY.languages), "recipe": {
            "merge_method": method, "base_model": "base", "models": inputs}}
    tiny_zoo_registry.write_text(yaml.safe_dump(registry))
    code, out, err = harness_cli("--registry", str(tiny_zoo_registry), "maintain", "--update", "uig", "--factor", "2")
    assert code == 0, err
    rows = maintenance_times(ResultStore())
    merges = rows[rows["role"] == "merge"]
    assert sorted(zip(merges["phase"], merges["model"])) == [
        ("initial", "lora-knots-ties"), ("initial", "lora-ties"), ("update", "lora-knots-ties"), ("update", "lora-ties")]
    assert set(merges.loc[merges["phase"] == "update", "evaluated_as"]) == {"lora-ties@uig-x2", "lora-knots-ties@uig-x2"}
    assert (merges["seconds"] > 0).all()
