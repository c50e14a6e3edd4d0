"""Method specs: the recipe validator follows each method's parameters, and the library stands alone."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import merges
from merges import METHODS, MergeError, load_recipe, method_label
from merges.methods.spec import SHARED_MODEL_PARAMETERS, SHARED_PARAMETERS, MethodSpec, Parameter

from .test_engine import TIES_SV

SHARED = {p.name for p in (*SHARED_MODEL_PARAMETERS, *SHARED_PARAMETERS)}
MERGES_ROOT = Path(merges.__file__).parent


def valid_recipe(spec: MethodSpec) -> dict:
    """The smallest recipe the method takes: one model, required parameters at their lower bound,
    and the method's own per-model flags (ties_sv's protect) set."""
    own_flags = {p.name: True for p in spec.model_parameters if p.kind == "flag" and p.name not in SHARED}
    recipe = {"merge_method": spec.name, "models": [{"model": "a", "parameters": own_flags}],
              "parameters": {p.name: p.low for p in spec.parameters if p.default is None}}
    if spec.uses_base:
        recipe["base_model"] = "b"
    return recipe


def is_per_model(parameter: Parameter) -> bool:
    return any(parameter in spec.model_parameters for spec in METHODS.values())


def with_value(recipe: dict, parameter: Parameter, value) -> tuple[dict, str]:
    """The recipe with `parameter` set to `value` (for its first model if per model), and the
    key an error names."""
    if is_per_model(parameter):
        recipe["models"][0]["parameters"][parameter.name] = value
        return recipe, f"models[0].parameters.{parameter.name}"
    recipe["parameters"][parameter.name] = value
    return recipe, f"parameters.{parameter.name}"


def bad_values(parameter: Parameter) -> list:
    if parameter.kind == "number":
        bounds = [parameter.high + 0.5, parameter.low - 0.5] if parameter.low is not None else []
        return ["high", float("nan"), float("inf"), float("-inf"), *bounds]
    return {"integer": [1.5, True], "flag": ["yes", 1], "choice": ["median"]}[parameter.kind]


def good_values(parameter: Parameter) -> list:
    if parameter.kind == "number":
        return [parameter.low, parameter.high] if parameter.low is not None else [-2, 0.5]
    return {"integer": [0, 7], "flag": [True, False], "choice": list(parameter.choices)}[parameter.kind]


CASES = [(spec, p) for spec in METHODS.values() for p in (*spec.model_parameters, *spec.parameters)]


@pytest.mark.parametrize("spec, parameter", CASES, ids=[f"{s.name}-{p.name}" for s, p in CASES])
def test_each_parameter_is_checked_against_its_spec(spec, parameter):
    for value in bad_values(parameter):
        recipe, key = with_value(valid_recipe(spec), parameter, value)
        with pytest.raises(MergeError, match=rf"^recipe: {re.escape(key)} must "):
            load_recipe(recipe)
    for value in good_values(parameter):
        if parameter.name == "protect" and value is False:
            continue  # ties_sv needs its one protected model
        recipe, _ = with_value(valid_recipe(spec), parameter, value)
        parsed = load_recipe(recipe)
        holder = parsed.models[0] if is_per_model(parameter) else parsed
        assert getattr(holder, parameter.field) == value


def test_density_out_of_bounds_names_the_key():
    recipe = {"merge_method": "ties", "base_model": "b", "models": [{"model": "a", "parameters": {"density": 1.5}}]}
    with pytest.raises(MergeError, match=r"models\[0\]\.parameters\.density must be in \[0\.0, 1\.0\], got 1\.5"):
        load_recipe(recipe)


@pytest.mark.parametrize("spec", METHODS.values(), ids=list(METHODS))
def test_defaults_come_from_the_spec(spec):
    parsed = load_recipe(valid_recipe(spec))
    for parameter in spec.parameters:
        if parameter.default is not None:
            assert getattr(parsed, parameter.field) == parameter.default, parameter.name
    assert set(parsed.to_dict()["parameters"]) == {"lambda", "normalize"} | {p.name for p in spec.parameters}


def test_normalize_defaults_follow_mergekit():
    defaults = {name: load_recipe(valid_recipe(spec)).normalize for name, spec in METHODS.items()}
    assert defaults == {"linear": True, "task_arithmetic": False, "ties": True, "ties_sv": True,
                        "dare_linear": False, "dare_ties": False,
                        "knots_ties": True, "knots_dare_ties": False}  # as the methods KnOTS runs in its basis


OTHERS = [(spec, p) for spec in METHODS.values() for other in METHODS.values()
          for p in (*other.model_parameters, *other.parameters) if p.name not in SHARED and not spec.parameter(p.name)]


@pytest.mark.parametrize("spec, parameter", OTHERS, ids=[f"{s.name}-{p.name}" for s, p in OTHERS])
def test_another_methods_parameter_is_refused_unless_at_its_default(spec, parameter):
    owners = " or ".join(s.name for s in METHODS.values() if s.parameter(parameter.name))
    recipe, _ = with_value(valid_recipe(spec), parameter, good_values(parameter)[0])
    with pytest.raises(MergeError, match=rf"parameters\.{parameter.name} is only for merge_method {owners}$"):
        load_recipe(recipe)
    if parameter.default is not None:
        load_recipe(with_value(recipe, parameter, parameter.default)[0])


def test_shared_keys_are_accepted_by_every_method():
    """mergekit's keys (a linear recipe saying density) are checked but refused by no method."""
    for spec in METHODS.values():
        recipe = valid_recipe(spec)
        recipe["parameters"].update({"lambda": 0.5, "seed": 3, "rescale": False, "int8_mask": True,
                                     "weight": 2.0, "density": 0.5})
        parsed = load_recipe(recipe)
        assert (parsed.models[0].weight, parsed.models[0].density, parsed.seed) == (2.0, 0.5, 3)


def test_non_finite_values_are_refused_naming_the_key():
    recipe = {"merge_method": "ties", "base_model": "b", "models": [{"model": "a", "parameters": {"weight": float("nan")}}]}
    with pytest.raises(MergeError, match=r"models\[0\]\.parameters\.weight must be a finite number, got nan"):
        load_recipe(recipe)
    recipe = {"merge_method": "ties", "base_model": "b", "models": [{"model": "a"}], "parameters": {"lambda": float("inf")}}
    with pytest.raises(MergeError, match=r"parameters\.lambda must be a finite number, got inf"):
        load_recipe(recipe)


def test_linear_weights_summing_to_zero_are_refused_when_normalised():
    recipe = {"merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": 1.0}},
                                                   {"model": "c", "parameters": {"weight": -1.0}}]}
    with pytest.raises(MergeError, match=r"weights \[1\.0, -1\.0\] sum to 0"):
        load_recipe(recipe)
    recipe["parameters"] = {"normalize": False}  # a plain weighted sum is defined
    assert load_recipe(recipe).normalize is False


def test_ties_sv_cross_checks():
    recipe = valid_recipe(METHODS["ties_sv"])
    recipe["models"].append({"model": "c", "parameters": {"protect": True}})
    with pytest.raises(MergeError, match="ties_sv needs exactly one model with parameters.protect: true, found 2"):
        load_recipe(recipe)
    recipe = valid_recipe(METHODS["ties_sv"])
    recipe["parameters"]["consensus_method"] = "count"
    with pytest.raises(MergeError, match="parameters.consensus_method must be sum, got 'count'"):
        load_recipe(recipe)


def test_labels_come_from_the_specs():
    assert {name: method_label(name) for name in METHODS} == {
        "linear": "WAVG", "task_arithmetic": "Task arithmetic", "ties": "TIES", "ties_sv": "TIES-SV",
        "dare_linear": "DARE-linear", "dare_ties": "DARE-TIES", "knots_ties": "KnOTS-TIES",
        "knots_dare_ties": "KnOTS-DARE-TIES"}
    assert method_label("breadcrumbs") == "breadcrumbs"


def test_only_methods_that_elect_signs_report_conflicts():
    assert {name for name, spec in METHODS.items() if spec.elects_signs} == {"ties", "ties_sv", "dare_ties"}
    assert {name for name, spec in METHODS.items() if spec.takes_density} == {
        "ties", "ties_sv", "dare_linear", "dare_ties", "knots_ties", "knots_dare_ties"}


def test_merge_takes_a_mapping_of_model_folders(tiny_models, tmp_path):
    recipe = dict(TIES_SV, models=[dict(m) for m in TIES_SV["models"]])
    result = merges.merge(recipe, tiny_models, tmp_path / "out", progress=False)
    assert (result.path / "config.json").is_file() and result.stats["method"] == "ties_sv"
    with pytest.raises(MergeError, match=r"model 'sft' of the recipe is not among the models given"):
        merges.merge(recipe, {"base": tiny_models["base"]}, tmp_path / "other", progress=False)


def test_the_library_imports_without_the_application():
    """merges stands alone: importing it (engine and kernel included) needs no harness, tasks or
    leaderboard, and merges.errors alone does not load torch."""
    code = ("import sys\n"
            "for name in ('harness', 'tasks', 'leaderboard'): sys.modules[name] = None\n"
            "import merges.errors\n"
            "assert 'torch' not in sys.modules\n"
            "import merges, merges.engine, merges.kernels.ties_cpu\n"
            "from merges import merge, run_merge, load_recipe, METHODS\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=MERGES_ROOT.parent)
    assert result.returncode == 0, result.stderr


def test_no_merges_module_imports_the_application():
    offenders = []
    for path in sorted(MERGES_ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {name}" for name in names
                          if name.split(".")[0] in ("harness", "tasks", "leaderboard")]
    assert offenders == []
