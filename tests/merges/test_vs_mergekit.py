"""Our linear, task_arithmetic and ties equal mergekit 0.1.5's output tensor for tensor (fp32, atol 1e-6);
TIES wherever no trim threshold is tied (where one is, mergekit's choice among the tied entries is
arbitrary)."""

from __future__ import annotations

import pytest
import torch

from merges import run_merge

from .conftest import load_folder, random_weights, save_checkpoint

mergekit = pytest.importorskip("mergekit")


def mergekit_merge(recipe: dict, models: dict, out) -> dict[str, torch.Tensor]:
    """Run mergekit's own merge on the same recipe, model names replaced by folders."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge as mergekit_run
    from mergekit.options import MergeOptions

    theirs = dict(recipe, dtype="float32")
    if "base_model" in theirs:
        theirs["base_model"] = str(models[recipe["base_model"]])
    theirs["models"] = [dict(m, model=str(models[m["model"]])) for m in recipe["models"]]
    options = MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False)
    mergekit_run(MergeConfiguration.model_validate(theirs), str(out), options)
    return load_folder(out)


def assert_same_tensors(ours: dict, theirs: dict) -> None:
    assert sorted(ours) == sorted(theirs)
    for name in ours:
        assert ours[name].dtype == torch.float32
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-6, rtol=0, msg=name)


def model_list(names, weights, densities=None):
    models = []
    for i, (name, weight) in enumerate(zip(names, weights)):
        params = {"weight": weight}
        if densities:
            params["density"] = densities[i]
        models.append({"model": name, "parameters": params})
    return models


CASES = [
    {"merge_method": "linear", "models": model_list(["sft", "ct-a"], [0.3, 0.7])},
    {"merge_method": "linear", "models": model_list(["sft", "ct-a", "ct-b"], [1.0, 2.0, 0.5])},
    {"merge_method": "task_arithmetic", "base_model": "base", "models": model_list(["sft", "ct-a"], [0.5, 0.8])},
    {"merge_method": "task_arithmetic", "base_model": "base", "models": model_list(["sft", "ct-a", "ct-b"], [1.0, 0.4, 0.6]),
     "parameters": {"lambda": 0.7, "normalize": True}},
    {"merge_method": "ties", "base_model": "base", "models": model_list(["sft", "ct-a"], [1.0, 1.0], [0.6, 0.6]),
     "parameters": {"normalize": True, "lambda": 1.0}},
    {"merge_method": "ties", "base_model": "base", "models": model_list(["sft", "ct-a"], [0.3, 0.9], [0.2, 0.9])},
    {"merge_method": "ties", "base_model": "base", "models": model_list(["sft", "ct-a", "ct-b"], [1.0, 0.5, 0.7], [0.5, 0.3, 1.0]),
     "parameters": {"normalize": False, "lambda": 1.3}},
    {"merge_method": "ties", "base_model": "base", "models": model_list(["sft", "ct-a", "ct-b"], [0.6, 0.6, 0.6], [0.1, 0.7, 0.4]),
     "parameters": {"lambda": 0.8}},
]


@pytest.mark.parametrize("recipe", CASES, ids=lambda r: f"{r['merge_method']}-{len(r['models'])}models")
def test_matches_mergekit(recipe, tiny_models, tmp_path):
    ours = run_merge(recipe, lambda name: tiny_models[name], tmp_path / "ours", progress=False)
    theirs = mergekit_merge(recipe, tiny_models, tmp_path / "theirs")
    assert_same_tensors(load_folder(ours.path), theirs)


@pytest.mark.parametrize("densities, weights", [([0.6, 0.6], [1.0, 1.0]), ([0.3, 0.8, 0.5], [1.0, 0.4, 0.9])])
def test_ties_count_consensus_matches_mergekit(densities, weights, tiny_models, tmp_path):
    """mergekit's YAML offers no `count` consensus; its TIES class with ConsensusMethod.count does."""
    from mergekit.merge_methods import GeneralizedTaskArithmeticMerge, merge_state_dicts
    from mergekit.merge_methods.generalized_task_arithmetic import ConsensusMethod
    from mergekit.sparsify import SparsificationMethod

    names = ["sft", "ct-a", "ct-b"][: len(densities)]
    recipe = {"merge_method": "ties", "base_model": "base", "models": model_list(names, weights, densities),
              "parameters": {"consensus_method": "count", "normalize": True}}
    ours = load_folder(run_merge(recipe, lambda name: tiny_models[name], tmp_path / "ours", progress=False).path)

    count_ties = GeneralizedTaskArithmeticMerge(
        consensus_method=ConsensusMethod.count, sparsification_method=SparsificationMethod.magnitude,
        default_normalize=True, default_rescale=False, method_name="ties_count_test",
        method_pretty_name=None, method_reference_url=None)
    state_dicts = {name: load_folder(tiny_models[name]) for name in ["base", *names]}
    theirs = merge_state_dicts(
        state_dicts, count_ties, base="base",
        parameters={"weight": dict(zip(names, weights)), "density": dict(zip(names, densities))})
    assert_same_tensors(ours, theirs)
    # The two consensus modes really differ on these inputs (else this test could not fail).
    summed = dict(recipe, parameters={"consensus_method": "sum", "normalize": True})
    by_sum = load_folder(run_merge(summed, lambda name: tiny_models[name], tmp_path / "sum", progress=False).path)
    assert any(not torch.equal(by_sum[k], ours[k]) for k in ours)


@pytest.fixture(scope="module")
def tied_models(tmp_path_factory) -> dict:
    """Task vectors of a few exact values (multiples of 2^-8 over a base on a 2^-12 grid, so
    theta - base is exact in float32): thousands of entries tie with each trim threshold."""
    root = tmp_path_factory.mktemp("tied-models")
    base = {name: (t * 4096).round() / 4096 for name, t in random_weights(0).items()}
    models = {"base": save_checkpoint(root / "base", base)}
    for seed, name in enumerate(["sft", "ct-a", "ct-b"], start=1):
        generator = torch.Generator().manual_seed(seed)
        models[name] = save_checkpoint(root / name, {
            tensor: value + torch.randint(-3, 4, value.shape, generator=generator) / 256
            for tensor, value in base.items()})
    return models


def tied_positions(models: dict, recipe: dict) -> dict[str, torch.Tensor]:
    """Per tensor: where some model's task-vector magnitude equals its trim threshold (the
    k-th largest, k = max(1, int(density * numel))), the only places the kept set is a choice."""
    base = load_folder(models["base"])
    tied = {name: torch.zeros(t.shape, dtype=torch.bool) for name, t in base.items()}
    for spec in recipe["models"]:
        tuned = load_folder(models[spec["model"]])
        for name, value in base.items():
            magnitude = (tuned[name] - value).abs()
            k = max(1, int(spec["parameters"]["density"] * magnitude.numel()))
            threshold = torch.kthvalue(magnitude.reshape(-1), magnitude.numel() - k + 1).values
            tied[name] |= magnitude == threshold
    return tied


@pytest.mark.parametrize("recipe", [
    {"merge_method": "ties", "base_model": "base", "models": model_list(["sft", "ct-a"], [1.0, 1.0], [0.3, 0.5]),
     "parameters": {"normalize": True}},
    {"merge_method": "ties", "base_model": "base", "models": model_list(["sft", "ct-a", "ct-b"], [1.0, 0.5, 0.7],
                                                                        [0.5, 0.3, 0.6]),
     "parameters": {"normalize": False, "lambda": 1.3}},
], ids=["2models", "3models"])
def test_ties_with_tied_thresholds_matches_mergekit_off_the_tied_positions(recipe, tied_models, tmp_path):
    """mergekit picks among magnitudes equal to the threshold with an unstable argsort, so no
    rule equals it there; everywhere else the results are the same."""
    ours = load_folder(run_merge(recipe, lambda name: tied_models[name], tmp_path / "ours", progress=False).path)
    theirs = mergekit_merge(recipe, tied_models, tmp_path / "theirs")
    tied = tied_positions(tied_models, recipe)
    assert sorted(ours) == sorted(theirs)
    assert sum(int(mask.sum()) for mask in tied.values()) > 0.1 * sum(mask.numel() for mask in tied.values())
    for name in ours:
        assert tied[name].any() and not tied[name].all(), name  # the test exercises both kinds of position
        torch.testing.assert_close(ours[name][~tied[name]], theirs[name][~tied[name]], atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_tied_base_and_sft_with_an_untied_ct_match_mergekit(method, tmp_path):
    """The tied models store no lm_head; mergekit reads their embedding in its place, as we do."""
    from .test_tied_embeddings import RECIPES, tied_base_untied_ct

    tied, _ = tied_base_untied_ct(tmp_path)
    ours = load_folder(run_merge(RECIPES[method], tied.get, tmp_path / "ours", progress=False).path)
    assert "lm_head.weight" in ours
    assert_same_tensors(ours, mergekit_merge(RECIPES[method], tied, tmp_path / "theirs"))
