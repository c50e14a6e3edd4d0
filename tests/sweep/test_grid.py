"""Grids and derived recipes (no model is built here)."""

import pytest

from harness import HarnessError
from harness.registry import load_registry
from harness.grids import DENSITIES, Grid, apply_point, builtin_grid, load_grid_file, point_label
from harness.trials import plan_trials


def kinds(registry, model_id):
    entry = registry.resolve(model_id)
    return {mid: registry.models[mid].kind for mid in entry.recipe_model_ids()}


def test_density_grid_is_the_papers_over_sft_and_tied_ct_models():
    registry = load_registry()
    grid = builtin_grid("densities", registry.resolve("ties-sv-mvf-uig").recipe, kinds(registry, "ties-sv-mvf-uig"))
    assert grid.axes == {"models.sft-flan.density": DENSITIES, "models.ct-mvf,ct-uig.density": DENSITIES}
    assert len(grid.points()) == 36
    recipe = apply_point(registry.resolve("ties-sv-mvf-uig").recipe, grid.points()[7])
    densities = {m["model"]: m["parameters"]["density"] for m in recipe["models"]}
    assert densities == {"sft-flan": 0.2, "ct-mvf": 0.2, "ct-uig": 0.2}


def test_wavg_weights_and_slack_grids():
    registry = load_registry()
    trials = plan_trials(registry, "wavg-uig", builtin_grid("weights", registry.resolve("wavg-uig").recipe, kinds(registry, "wavg-uig")))
    weights = {m["model"]: m["parameters"]["weight"] for m in trials[2].recipe["models"]}
    assert weights == {"sft-flan": 0.3, "ct-uig": pytest.approx(0.7)}
    slack = builtin_grid("slack", registry.resolve("ties-sv-uig").recipe, {})
    assert slack.axes == {"parameters.slack": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]}
    with pytest.raises(HarnessError, match="--grid slack needs a ties_sv merge; this recipe is ties"):
        builtin_grid("slack", registry.resolve("ties-uig").recipe, {})


def test_grid_file_trials_are_named_by_their_parameters(grid_2x2):
    registry = load_registry()
    trials = plan_trials(registry, "ties-uig", load_grid_file(grid_2x2))
    assert [t.model_id for t in trials] == [
        "ties-uig-flan@sft-flan.density=0.2,ct-uig.density=0.4", "ties-uig-flan@sft-flan.density=0.2,ct-uig.density=1.0",
        "ties-uig-flan@sft-flan.density=0.8,ct-uig.density=0.4", "ties-uig-flan@sft-flan.density=0.8,ct-uig.density=1.0"]
    assert registry.resolve("ties-uig").recipe["models"][0]["parameters"]["density"] == 0.6  # not modified


def test_bad_grid_points_are_rejected_before_building(tmp_path):
    registry = load_registry()
    with pytest.raises(HarnessError, match="the recipe has no model 'ct-tam'"):
        plan_trials(registry, "ties-uig", Grid("g", {"models.ct-tam.density": [0.5]}))
    with pytest.raises(HarnessError, match=r"grid point sft-flan.density=1.5: .*density must be in \[0.0, 1.0\]"):
        plan_trials(registry, "ties-uig", Grid("g", {"models.sft-flan.density": [0.5, 1.5]}))
    for weight in (1.5, -0.1, float("nan")):  # the other models' share 1 - w would be negative
        with pytest.raises(HarnessError, match=r"sft_weight must be a number in \[0, 1\]"):
            plan_trials(registry, "wavg-uig", Grid("g", {"sft_weight": [weight]}))
    with pytest.raises(HarnessError, match=r"grid point lambda=inf: .*parameters\.lambda must be a finite number"):
        plan_trials(registry, "ties-uig", Grid("g", {"parameters.lambda": [float("inf")]}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters.lambda: 0.5\n")
    with pytest.raises(HarnessError, match="must have a non-empty list"):
        load_grid_file(bad)
    assert point_label({"parameters.slack": 0.1}) == "slack=0.1"


def test_cli_rejects_sweeping_a_checkpoint(harness_cli):
    code, _, err = harness_cli("sweep", "--model", "ct-uig", "--grid", "densities")
    assert code == 2 and "is a checkpoint, not a merge" in err
