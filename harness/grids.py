"""Sweep grids: which hyperparameters a `harness sweep` tries, and the recipe of each grid point.

Grid parameters (keys of a grid file; values are lists):
    models.<name>.<param>          a model's weight or density; `models.a,b.density` ties several
    parameters.<param>             a global parameter: lambda, slack, seed, ...
    sft_weight                     WAVG: the SFT model's weight w; the other models share 1 - w
A search (`--search optuna`, harness.search) takes the same paths with ranges instead of lists.
Built-in grids: `densities` (k_sft x k_ct over 0.01, 0.2, 0.4, 0.6, 0.8, 1.0; CT models tied),
`weights` (sft_weight 0.1 ... 0.9), `slack` (TIES-SV slack 0.0 ... 0.5).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path

from harness import HarnessError
from harness.files import read_yaml

DENSITIES = [0.01, 0.2, 0.4, 0.6, 0.8, 1.0]  # the paper's k_sft, k_ct grid
WAVG_WEIGHTS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
SLACKS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
BUILTIN_GRIDS = ("densities", "weights", "slack")


@dataclass(frozen=True)
class Grid:
    name: str
    axes: dict[str, list]  # parameter path -> values, in grid order

    def points(self) -> list[dict]:
        keys = list(self.axes)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.axes[k] for k in keys))]


def builtin_grid_of(name: str, registry, entry) -> Grid:
    """A built-in grid over a registry merge, its input models' kinds taken from the registry."""
    if entry.recipe is None:
        raise HarnessError(f"model {entry.id!r} is a checkpoint, not a merge: there is nothing to sweep")
    kinds = {mid: registry.models[mid].kind for mid in entry.recipe_model_ids()}
    return builtin_grid(name, entry.recipe, kinds)


def builtin_grid(name: str, recipe: dict, kinds: dict[str, str]) -> Grid:
    """The paper's grids, over the SFT model and the other (CT) models of `recipe`.

    Which grid suits which merge is read from the method's spec (merges.methods), so a new method
    that takes a density or a slack gets the grid without an edit here.
    """
    from merges.methods import METHODS

    method = recipe.get("merge_method")
    spec = METHODS.get(method)
    names = [m["model"] for m in recipe["models"] if m["model"] != recipe.get("base_model")]
    sft = [n for n in names if kinds.get(n) == "sft"]
    others = [n for n in names if n not in sft]
    if name == "densities":
        if spec is None or not spec.takes_density or len(sft) != 1 or not others:
            raise HarnessError(f"--grid densities needs a merge that takes densities (TIES/DARE) of one SFT model "
                               f"and CT models; this recipe is {method} of {names}")
        return Grid(name, {f"models.{sft[0]}.density": DENSITIES, f"models.{','.join(others)}.density": DENSITIES})
    if name == "weights":
        if spec is None or spec.uses_base or len(sft) != 1:
            raise HarnessError(f"--grid weights needs a weighted average (WAVG, linear) of one SFT model and others; "
                               f"this recipe is {method}")
        return Grid(name, {"sft_weight": WAVG_WEIGHTS})
    if name == "slack":
        if spec is None or spec.parameter("slack") is None:
            raise HarnessError(f"--grid slack needs a ties_sv merge; this recipe is {method}")
        return Grid(name, {"parameters.slack": SLACKS})
    raise HarnessError(f"unknown grid {name!r}; built-in grids: {', '.join(BUILTIN_GRIDS)}")


def load_grid_file(path: Path) -> Grid:
    """A YAML mapping of parameter path -> non-empty list of values."""
    data = read_yaml(path, "grid file")
    if not isinstance(data, dict) or not data:
        raise HarnessError(f"{path}: a grid file is a mapping of parameter -> list of values")
    for key, values in data.items():
        if isinstance(values, dict):
            raise HarnessError(f"{path}: {key} is a range, not a list of values: ranges need --search optuna")
        if not isinstance(values, list) or not values:
            raise HarnessError(f"{path}: {key} must have a non-empty list of values, got {values!r}")
    return Grid(f"file:{path.stem}", {str(k): list(v) for k, v in data.items()})


def apply_point(recipe: dict, point: dict, sft_model: str | None = None) -> dict:
    """A copy of `recipe` with the point's parameters set; unknown paths are an error naming them."""
    out = copy.deepcopy(recipe)
    models = {m["model"]: m for m in out["models"]}
    for path, value in point.items():
        if path == "sft_weight":
            _set_wavg_weight(out, value, sft_model)
            continue
        head, _, rest = path.partition(".")
        if head == "parameters" and rest and "." not in rest:
            out.setdefault("parameters", {})[rest] = value
        elif head == "models" and rest.count(".") >= 1:
            names, _, param = rest.rpartition(".")
            for name in names.split(","):
                if name not in models:
                    raise HarnessError(f"grid parameter {path}: the recipe has no model {name!r} "
                                       f"(it has {', '.join(models)})")
                models[name].setdefault("parameters", {})[param] = value
        else:
            raise HarnessError(f"grid parameter {path!r}: expected models.<name>.<param>, "
                               "parameters.<param> or sft_weight")
    return out


def _set_wavg_weight(recipe: dict, weight, sft_model: str | None) -> None:
    """The SFT model gets `weight`, the other models share 1 - weight equally."""
    entries = [m for m in recipe["models"] if m["model"] != recipe.get("base_model")]
    if sft_model is None or len(entries) < 2:
        raise HarnessError("grid parameter sft_weight needs a merge of one SFT model and other models")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        # Outside [0, 1] the other models' share 1 - w turns negative: no longer a weighted average.
        raise HarnessError(f"grid parameter sft_weight must be a number in [0, 1], got {weight!r}")
    sft = sft_model
    others = [m for m in entries if m["model"] != sft]
    for m in entries:
        share = weight if m["model"] == sft else (1 - weight) / len(others)
        m.setdefault("parameters", {})["weight"] = share


def point_label(point: dict) -> str:
    """`sft-flan.density=0.2,ct-uig.density=0.4`: the trial's id suffix and display label."""
    parts = []
    for path, value in point.items():
        short = path.removeprefix("models.").removeprefix("parameters.")
        parts.append(f"{short}={value}")
    return ",".join(parts)


# ---- which split chooses the best ---------------------------------------------------------------
# A sweep selects on dev; its best is then scored on test, a held-out estimate. Selecting on test
# leaves no such estimate, so it is refused unless the caller says it knows.

SELECTION_SPLITS = ("dev", "test")
TEST_SELECTION_REFUSED = ("refusing to select on the test split: a model tuned on test has no held-out score left "
                          "to report; select on dev (the default), or pass --i-know-this-is-test")


def check_selection(select_split: str, allow_test_selection: bool) -> None:
    if select_split not in SELECTION_SPLITS:
        raise HarnessError(f"cannot select on split {select_split!r}; splits: {', '.join(SELECTION_SPLITS)}")
    if select_split == "test" and not allow_test_selection:
        raise HarnessError(TEST_SELECTION_REFUSED)
