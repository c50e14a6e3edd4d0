"""Merge recipes: mergekit's YAML format, parsed into typed dataclasses and validated.

A recipe looks like mergekit's:

    merge_method: ties_sv            # linear | task_arithmetic | ties | ties_sv | dare_linear | dare_ties
    base_model: base                 # required by every method except linear
    models:
      - model: sft-flan
        parameters: {weight: 1.0, density: 0.6, protect: true}   # protect: ties_sv only, exactly one model
      - model: ct-uig
        parameters: {weight: 1.0, density: 0.6}
    parameters: {lambda: 1.0, normalize: true, slack: 0.2}
    dtype: float32                   # optional: the output dtype (default: the inputs')
    tokenizer_source: ct-uig         # optional: tokenizer, and extended-vocabulary rows (default: base)

Model names are whatever the caller's `resolve` understands: folders for a plain recipe file,
registry ids in a registry. Every problem is a one-line `HarnessError` naming the key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from harness import HarnessError

METHOD_NAMES = ("linear", "task_arithmetic", "ties", "ties_sv", "dare_linear", "dare_ties")
# mergekit's defaults for `normalize`: TIES divides by the summed weights of agreeing models,
# task arithmetic and DARE do not.
DEFAULT_NORMALIZE = {"linear": True, "task_arithmetic": False, "ties": True, "ties_sv": True,
                     "dare_linear": False, "dare_ties": False}
DTYPES = ("float32", "bfloat16", "float16", "float64")

TOP_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "tokenizer_source"}
MODEL_KEYS = {"model", "parameters"}
MODEL_PARAMETER_KEYS = {"weight", "density", "protect"}
# `int8_mask` is mergekit's memory optimisation; it changes no result, so it is accepted and ignored.
GLOBAL_PARAMETER_KEYS = {"lambda", "normalize", "slack", "consensus_method", "seed", "rescale",
                         "int8_mask", "weight", "density"}


@dataclass(frozen=True)
class ModelSpec:
    """One input model of a recipe (not the base)."""

    model: str
    weight: float = 1.0
    density: float = 1.0
    protect: bool = False


@dataclass(frozen=True)
class Recipe:
    merge_method: str
    models: tuple[ModelSpec, ...]
    base_model: str | None = None
    lambda_: float = 1.0
    normalize: bool = True
    consensus_method: str = "sum"  # TIES sign election: "sum" (the paper's) or "count" (mergekit's option)
    slack: float | None = None     # ties_sv only
    seed: int = 0                  # DARE's random drop
    rescale: bool = True           # DARE: rescale survivors by 1/density
    dtype: str | None = None
    tokenizer_source: str | None = None

    @property
    def protected(self) -> str | None:
        return next((m.model for m in self.models if m.protect), None)

    @property
    def uses_base(self) -> bool:
        return self.merge_method != "linear"

    def referenced_models(self) -> list[str]:
        """Every model name the merge reads, base first, without duplicates."""
        names = ([self.base_model] if self.base_model else []) + [m.model for m in self.models]
        if self.tokenizer_source:
            names.append(self.tokenizer_source)
        return list(dict.fromkeys(names))

    def to_dict(self) -> dict:
        """The canonical mergekit-format dict (used for hashing and for writing next to a merge)."""
        params = {"lambda": self.lambda_, "normalize": self.normalize}
        if self.merge_method in ("ties", "dare_ties"):
            params["consensus_method"] = self.consensus_method
        if self.merge_method == "ties_sv":
            params["slack"] = self.slack
        if self.merge_method.startswith("dare"):
            params.update(seed=self.seed, rescale=self.rescale)
        models = []
        for spec in self.models:
            entry = {k: v for k, v in asdict(spec).items() if k != "model" and (k != "protect" or v)}
            models.append({"model": spec.model, "parameters": entry})
        out = {"merge_method": self.merge_method, "base_model": self.base_model, "models": models,
               "parameters": params, "dtype": self.dtype, "tokenizer_source": self.tokenizer_source}
        return {k: v for k, v in out.items() if v is not None}

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def load_recipe(source: str | Path | dict) -> Recipe:
    """Parse a recipe from a YAML file path or an already-loaded dict."""
    if isinstance(source, dict):
        return parse_recipe(source, where="recipe")
    path = Path(source)
    if not path.is_file():
        raise HarnessError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise HarnessError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    return parse_recipe(data, where=str(path))


def _number(value: object, key: str, where: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HarnessError(f"{where}: {key} must be a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise HarnessError(f"{where}: {key} must be in [{low}, {high}], got {value!r}")
    return float(value)


def _flag(value: object, key: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise HarnessError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _mapping(value: object, key: str, where: str, allowed: set[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HarnessError(f"{where}: {key} must be a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise HarnessError(f"{where}: unknown key(s) {unknown} in {key}; allowed: {', '.join(sorted(allowed))}")
    return value


def _model_name(value: object, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HarnessError(f"{where}: {key} must be a model name (string), got {value!r}")
    return value


def parse_recipe(data: object, where: str = "recipe") -> Recipe:
    top = _mapping(data, "the recipe", where, TOP_KEYS)
    method = top.get("merge_method")
    if method not in METHOD_NAMES:
        raise HarnessError(f"{where}: merge_method must be one of {', '.join(METHOD_NAMES)}, got {method!r}")
    params = _mapping(top.get("parameters"), "parameters", where, GLOBAL_PARAMETER_KEYS)
    default_weight = _number(params.get("weight", 1.0), "parameters.weight", where)
    default_density = _number(params.get("density", 1.0), "parameters.density", where, 0.0, 1.0)

    raw_models = top.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise HarnessError(f"{where}: models must be a non-empty list of {{model: ..., parameters: ...}}")
    base = _model_name(top["base_model"], "base_model", where) if top.get("base_model") is not None else None
    models = []
    for i, raw in enumerate(raw_models):
        key = f"models[{i}]"
        entry = _mapping(raw, key, where, MODEL_KEYS)
        name = _model_name(entry.get("model"), f"{key}.model", where)
        p = _mapping(entry.get("parameters"), f"{key}.parameters", where, MODEL_PARAMETER_KEYS)
        if name == base and method != "linear":
            continue  # mergekit lets the base appear in the list; it is not a task vector
        models.append(ModelSpec(
            model=name,
            weight=_number(p.get("weight", default_weight), f"{key}.parameters.weight", where),
            density=_number(p.get("density", default_density), f"{key}.parameters.density", where, 0.0, 1.0),
            protect=_flag(p.get("protect", False), f"{key}.parameters.protect", where),
        ))
    if not models:
        raise HarnessError(f"{where}: models lists no model besides the base")
    names = [m.model for m in models]
    if len(set(names)) != len(names):
        raise HarnessError(f"{where}: models lists a model twice: {names}")

    if method != "linear" and base is None:
        raise HarnessError(f"{where}: base_model is required by merge_method {method}")
    protected = [m.model for m in models if m.protect]
    slack = None
    if method == "ties_sv":
        if "slack" not in params:
            raise HarnessError(f"{where}: parameters.slack is required by merge_method ties_sv")
        slack = _number(params["slack"], "parameters.slack", where, 0.0, 1.0)
        if len(protected) != 1:
            raise HarnessError(f"{where}: ties_sv needs exactly one model with parameters.protect: true, found {len(protected)}")
    else:
        if "slack" in params:
            raise HarnessError(f"{where}: parameters.slack is only for merge_method ties_sv")
        if protected:
            raise HarnessError(f"{where}: parameters.protect is only for merge_method ties_sv")
    consensus = params.get("consensus_method", "sum")
    if consensus not in ("sum", "count") or (method == "ties_sv" and consensus != "sum"):
        allowed = "sum" if method == "ties_sv" else "sum or count"
        raise HarnessError(f"{where}: parameters.consensus_method must be {allowed}, got {consensus!r}")
    seed = params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise HarnessError(f"{where}: parameters.seed must be an integer, got {seed!r}")
    dtype = top.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise HarnessError(f"{where}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    tokenizer_source = top.get("tokenizer_source")
    if tokenizer_source is not None:
        tokenizer_source = _model_name(tokenizer_source, "tokenizer_source", where)
        if tokenizer_source not in names + ([base] if base else []):
            raise HarnessError(f"{where}: tokenizer_source {tokenizer_source!r} is not one of the recipe's models")

    return Recipe(
        merge_method=method,
        models=tuple(models),
        base_model=base,
        lambda_=_number(params.get("lambda", 1.0), "parameters.lambda", where),
        normalize=_flag(params.get("normalize", DEFAULT_NORMALIZE[method]), "parameters.normalize", where),
        consensus_method=consensus,
        slack=slack,
        seed=seed,
        rescale=_flag(params.get("rescale", True), "parameters.rescale", where),
        dtype=dtype,
        tokenizer_source=tokenizer_source,
    )
