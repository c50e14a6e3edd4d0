"""What the library knows about a merge method, declared once beside its function.

Each method module (linear.py, ties.py, ...) defines `SPECS`, a tuple of `MethodSpec`. The
registry in `merges.methods` collects them; the recipe validator reads their parameters, the
engine whether they use a base model and elect signs, tables their labels. Nothing else names
a method, so a new method is one module here plus its test.

Parameters are shared definitions (`WEIGHT`, `DENSITY`, ...): a spec lists those its function
reads, with its own default where it differs (`normalize`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

import torch

from merges.errors import MergeError
from merges.methods.common import MethodOutput, MethodParams

if TYPE_CHECKING:
    from merges.recipe import Recipe

Value = float | int | bool | str
MethodFunction = Callable[[torch.Tensor | None, list[torch.Tensor], MethodParams], MethodOutput]


@dataclass(frozen=True)
class Parameter:
    """One recipe parameter: its key, its type, its default (None: required) and allowed values."""

    name: str
    kind: Literal["number", "integer", "flag", "choice"]
    default: Value | None
    low: float | None = None   # numbers: inclusive bounds, both or neither
    high: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def field(self) -> str:
        """The attribute of `Recipe` or `ModelSpec` holding the value (`lambda` is a Python keyword)."""
        return "lambda_" if self.name == "lambda" else self.name

    def parse(self, value: object, key: str, where: str) -> Value:
        """`value` if it has this parameter's type and bounds, else a MergeError naming `key`."""
        if self.kind == "flag" and not isinstance(value, bool):
            raise MergeError(f"{where}: {key} must be true or false, got {value!r}")
        if self.kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
            raise MergeError(f"{where}: {key} must be an integer, got {value!r}")
        if self.kind == "choice" and value not in self.choices:
            raise MergeError(f"{where}: {key} must be {' or '.join(self.choices)}, got {value!r}")
        if self.kind == "number":
            return self._number(value, key, where)
        return value

    def _number(self, value: object, key: str, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MergeError(f"{where}: {key} must be a number, got {value!r}")
        if not math.isfinite(value):  # a NaN or infinite hyperparameter makes every merged value one
            raise MergeError(f"{where}: {key} must be a finite number, got {value!r}")
        if self.low is not None and not self.low <= value <= self.high:
            raise MergeError(f"{where}: {key} must be in [{self.low}, {self.high}], got {value!r}")
        return float(value)


# Per input model.
WEIGHT = Parameter("weight", "number", 1.0)
DENSITY = Parameter("density", "number", 1.0, 0.0, 1.0)  # the fraction of the task vector kept
PROTECT = Parameter("protect", "flag", False)
# Merge-wide.
LAMBDA = Parameter("lambda", "number", 1.0)  # scales the merged task vector
NORMALIZE = Parameter("normalize", "flag", True)  # divide by the summed weights (of agreeing models)
CONSENSUS = Parameter("consensus_method", "choice", "sum", choices=("sum", "count"))  # sign election
SLACK = Parameter("slack", "number", None, 0.0, 1.0)
SEED = Parameter("seed", "integer", 0)  # DARE's random drop
RESCALE = Parameter("rescale", "flag", True)  # DARE: divide the survivors by the density

# mergekit's keys, which a recipe of any method may carry: always checked, read only by the
# methods whose spec lists them. The per-model ones may also be given merge-wide, as the default
# for every model.
SHARED_MODEL_PARAMETERS = (WEIGHT, DENSITY)
SHARED_PARAMETERS = (LAMBDA, NORMALIZE, CONSENSUS, SEED, RESCALE)


@dataclass(frozen=True)
class MethodSpec:
    """One merge method: its recipe name, function, label and the parameters it reads."""

    name: str                 # the recipe's merge_method
    function: MethodFunction
    label: str                # in tables: WAVG, TIES-SV, ...
    model_parameters: tuple[Parameter, ...]  # per input model
    parameters: tuple[Parameter, ...]        # merge-wide
    uses_base: bool = True    # merges task vectors over base_model (the engine passes base=None otherwise)
    elects_signs: bool = False  # TIES sign election: the merge reports conflict statistics
    # A rule across parameters: the error message for a recipe that breaks it, else None.
    check: Callable[[Recipe], str | None] | None = None

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in (*self.model_parameters, *self.parameters) if p.name == name), None)

    @property
    def takes_density(self) -> bool:
        return self.parameter(DENSITY.name) is not None
