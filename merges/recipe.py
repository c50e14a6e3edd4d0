"""Merge recipes: mergekit's YAML format, parsed into typed dataclasses and validated.

A recipe looks like mergekit's:

    merge_method: ties_sv            # a name in merges.METHODS: linear, task_arithmetic, ties, ...
    base_model: base                 # required by every method that merges task vectors (all but linear)
    models:
      - model: sft-flan
        parameters: {weight: 1.0, density: 0.6, protect: true}   # protect: ties_sv only, exactly one model
      - model: ct-uig
        parameters: {weight: 1.0, density: 0.6}
    parameters: {lambda: 1.0, normalize: true, slack: 0.2}
    dtype: float32                   # optional: the output dtype (default: the inputs')
    tokenizer_source: ct-uig         # optional: tokenizer and extended-vocabulary rows (default: the
                                     # model with the most vocabulary rows, the first of them in
                                     # base-then-recipe order; see merges.engine)
    output: {format: adapter, rank: 16}   # optional: write a PEFT LoRA adapter of this rank over
                                     # base_model instead of a full model (see merges.adapter_output);
                                     # {format: model} is the default and changes nothing

Which parameters a method reads, their defaults and bounds come from its spec
(`merges.methods.spec`). mergekit's shared keys (weight, density, lambda, normalize,
consensus_method, seed, rescale) are accepted, and checked, for every method; a key of some
other method only (slack, protect) is an error unless it has its default value.

Model names are whatever the caller's `resolve` understands: folders for a plain recipe file,
registry ids in a registry. Every problem is a one-line `MergeError` naming the key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from merges.errors import MergeError
from merges.methods import METHODS, MethodSpec, Parameter
from merges.methods.spec import SHARED_MODEL_PARAMETERS, SHARED_PARAMETERS, Value

DTYPES = ("float32", "bfloat16", "float16", "float64")

TOP_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "tokenizer_source", "output"}
MODEL_KEYS = {"model", "parameters"}
OUTPUT_KEYS = {"format", "rank"}
OUTPUT_FORMATS = ("model", "adapter")
# Every parameter some method reads, by name: what a recipe may carry (the shared definitions
# last, so that they, not a method's own default, check a method that does not read them).
KNOWN_MODEL_PARAMETERS = {p.name: p for spec in METHODS.values() for p in spec.model_parameters} | {
    p.name: p for p in SHARED_MODEL_PARAMETERS}
KNOWN_PARAMETERS = {p.name: p for spec in METHODS.values() for p in spec.parameters} | {
    p.name: p for p in SHARED_PARAMETERS}
# `int8_mask` is mergekit's memory optimisation; it changes no result, so it is accepted and ignored.
IGNORED_PARAMETERS = {"int8_mask"}
MODEL_PARAMETER_KEYS = set(KNOWN_MODEL_PARAMETERS)
GLOBAL_PARAMETER_KEYS = set(KNOWN_PARAMETERS) | IGNORED_PARAMETERS | {p.name for p in SHARED_MODEL_PARAMETERS}
SHARED_NAMES = {p.name for p in (*SHARED_MODEL_PARAMETERS, *SHARED_PARAMETERS)}


@dataclass(frozen=True)
class ModelSpec:
    """One input model of a recipe (not the base)."""

    model: str
    weight: float
    density: float
    protect: bool


@dataclass(frozen=True)
class AdapterOutput:
    """`output: {format: adapter, rank: R}`: the merge is written as a rank-R LoRA adapter."""

    rank: int


@dataclass(frozen=True)
class Recipe:
    merge_method: str
    models: tuple[ModelSpec, ...]
    base_model: str | None
    lambda_: float
    normalize: bool
    consensus_method: str  # TIES sign election: "sum" (the paper's) or "count" (mergekit's option)
    slack: float | None    # ties_sv only
    seed: int              # DARE's random drop
    rescale: bool          # DARE: rescale survivors by 1/density
    dtype: str | None
    tokenizer_source: str | None
    output: AdapterOutput | None = None  # None: a full model folder (the default format)

    @property
    def spec(self) -> MethodSpec:
        return METHODS[self.merge_method]

    @property
    def protected(self) -> str | None:
        return next((m.model for m in self.models if m.protect), None)

    @property
    def uses_base(self) -> bool:
        return self.spec.uses_base

    def referenced_models(self) -> list[str]:
        """Every model name the merge reads, base first, without duplicates."""
        names = ([self.base_model] if self.base_model else []) + [m.model for m in self.models]
        if self.tokenizer_source:
            names.append(self.tokenizer_source)
        return list(dict.fromkeys(names))

    def to_dict(self) -> dict:
        """The canonical mergekit-format dict (used for hashing and for writing next to a merge):
        lambda and normalize for every method (linear included: cached merges are keyed by this
        form, so it must not change), then the other merge-wide parameters the method reads."""
        params = {"lambda": self.lambda_, "normalize": self.normalize}
        params.update({p.name: getattr(self, p.field) for p in self.spec.parameters if p.name not in params})
        models = []
        for spec in self.models:
            entry = {k: v for k, v in asdict(spec).items() if k != "model" and (k != "protect" or v)}
            models.append({"model": spec.model, "parameters": entry})
        out = {"merge_method": self.merge_method, "base_model": self.base_model, "models": models,
               "parameters": params, "dtype": self.dtype, "tokenizer_source": self.tokenizer_source,
               "output": {"format": "adapter", "rank": self.output.rank} if self.output else None}
        return {k: v for k, v in out.items() if v is not None}

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def load_recipe(source: str | Path | dict) -> Recipe:
    """Parse a recipe from a YAML file path or an already-loaded dict."""
    if isinstance(source, dict):
        return parse_recipe(source, where="recipe")
    path = Path(source)
    if not path.is_file():
        raise MergeError(f"recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise MergeError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    return parse_recipe(data, where=str(path))


def _mapping(value: object, key: str, where: str, allowed: set[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MergeError(f"{where}: {key} must be a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise MergeError(f"{where}: unknown key(s) {unknown} in {key}; allowed: {', '.join(sorted(allowed))}")
    return value


def _model_name(value: object, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MergeError(f"{where}: {key} must be a model name (string), got {value!r}")
    return value


def _method(name: object, where: str) -> MethodSpec:
    if name not in METHODS:
        raise MergeError(f"{where}: merge_method must be one of {', '.join(METHODS)}, got {name!r}")
    return METHODS[name]


def _value(spec: MethodSpec, parameter: Parameter, given: dict, key: str, where: str) -> Value | None:
    """One parameter's value for this method: the given one, checked, or the method's default."""
    own = spec.parameter(parameter.name)
    if own is None and parameter.name not in SHARED_NAMES:
        return _other_methods_value(parameter, given, key, where)
    rule = own or parameter
    if parameter.name in given:
        return rule.parse(given[parameter.name], key, where)
    if rule.default is None:
        raise MergeError(f"{where}: {key} is required by merge_method {spec.name}")
    return rule.default


def _other_methods_value(parameter: Parameter, given: dict, key: str, where: str) -> Value | None:
    """A parameter only other methods read (slack in a ties recipe): harmless at its default."""
    if parameter.name in given and parameter.parse(given[parameter.name], key, where) != parameter.default:
        owners = " or ".join(spec.name for spec in METHODS.values() if spec.parameter(parameter.name))
        raise MergeError(f"{where}: parameters.{parameter.name} is only for merge_method {owners}")
    return parameter.default


def _models(raw_models: object, spec: MethodSpec, base: str | None, params: dict, where: str) -> list[ModelSpec]:
    if not isinstance(raw_models, list) or not raw_models:
        raise MergeError(f"{where}: models must be a non-empty list of {{model: ..., parameters: ...}}")
    # mergekit's merge-wide weight and density: the default for every model
    merge_wide = {p.name: p.parse(params[p.name], f"parameters.{p.name}", where)
                  for p in SHARED_MODEL_PARAMETERS if p.name in params}
    models = []
    for i, raw in enumerate(raw_models):
        key = f"models[{i}]"
        entry = _mapping(raw, key, where, MODEL_KEYS)
        name = _model_name(entry.get("model"), f"{key}.model", where)
        given = merge_wide | _mapping(entry.get("parameters"), f"{key}.parameters", where, MODEL_PARAMETER_KEYS)
        if name == base and spec.uses_base:
            continue  # mergekit lets the base appear in the list; it is not a task vector
        values = {p.field: _value(spec, p, given, f"{key}.parameters.{p.name}", where)
                  for p in KNOWN_MODEL_PARAMETERS.values()}
        models.append(ModelSpec(model=name, **values))
    if not models:
        raise MergeError(f"{where}: models lists no model besides the base")
    names = [m.model for m in models]
    if len(set(names)) != len(names):
        raise MergeError(f"{where}: models lists a model twice: {names}")
    return models


def _output(value: object, base: str | None, where: str) -> AdapterOutput | None:
    """The recipe's output format: None for a full model (the default), else the adapter's rank."""
    given = _mapping(value, "output", where, OUTPUT_KEYS)
    form = given.get("format", "model")
    if form not in OUTPUT_FORMATS:
        raise MergeError(f"{where}: output.format must be {' or '.join(OUTPUT_FORMATS)}, got {form!r}")
    rank = given.get("rank")
    if form == "model":
        if rank is not None:
            raise MergeError(f"{where}: output.rank is only for output.format adapter")
        return None
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise MergeError(f"{where}: output.rank must be a positive integer (the adapter's LoRA rank), got {rank!r}")
    if base is None:
        raise MergeError(f"{where}: output.format adapter needs base_model (the model the adapter applies to)")
    return AdapterOutput(rank)


def parse_recipe(data: object, where: str = "recipe") -> Recipe:
    top = _mapping(data, "the recipe", where, TOP_KEYS)
    spec = _method(top.get("merge_method"), where)
    params = _mapping(top.get("parameters"), "parameters", where, GLOBAL_PARAMETER_KEYS)
    base = _model_name(top["base_model"], "base_model", where) if top.get("base_model") is not None else None
    models = _models(top.get("models"), spec, base, params, where)
    if spec.uses_base and base is None:
        raise MergeError(f"{where}: base_model is required by merge_method {spec.name}")
    merge_wide = {p.field: _value(spec, p, params, f"parameters.{p.name}", where) for p in KNOWN_PARAMETERS.values()}
    dtype = top.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise MergeError(f"{where}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    tokenizer_source = top.get("tokenizer_source")
    if tokenizer_source is not None:
        tokenizer_source = _model_name(tokenizer_source, "tokenizer_source", where)
        if tokenizer_source not in [m.model for m in models] + ([base] if base else []):
            raise MergeError(f"{where}: tokenizer_source {tokenizer_source!r} is not one of the recipe's models")
    recipe = Recipe(merge_method=spec.name, models=tuple(models), base_model=base, dtype=dtype,
                    tokenizer_source=tokenizer_source, output=_output(top.get("output"), base, where),
                    **merge_wide)
    problem = spec.check(recipe) if spec.check else None
    if problem:
        raise MergeError(f"{where}: {problem}")
    return recipe
