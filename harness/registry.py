"""The model registry: every model the harness knows, by id.

A registry is a YAML file. Two ship with the harness (in `harness/registries/`) and are named by
their names: `zoo` (the default) and `paper` (`--registry paper`); any other value is a path:

    name: zoo
    model_root: ${HARNESS_HOME}/zoo     # relative `path:` values resolve here
    data_dir: ${HARNESS_HOME}/zoo/data  # optional: local task data used when --data-dir is not given
    zoo: ${HARNESS_HOME}/zoo            # optional: this zoo folder's models and data are built on demand
    models:
      base:     {kind: base, path: base}
      ct-uig:   {kind: ct, langs: [uig], path: ct-uig}
      sft-flan: {kind: sft, hub: pkupie/Llama-2-7b-FLAN-step884, revision: main}
      ties-uig-flan:
        kind: merge
        langs: [uig]
        aliases: [ties-uig]
        recipe: {merge_method: ties, base_model: base, models: [...]}  # mergekit format, ids as models
      lora-uig: {kind: adapter, base: base, langs: [uig], path: lora-uig}  # a PEFT LoRA adapter folder

A model is a local checkpoint folder (`path`), a hub checkpoint (`hub`, optional `revision`) or a
merge recipe over other ids (`recipe`). `harness models` lists a registry.

An `adapter` is a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors, read by
merges.lora) at `path`, over the registry model named by `base` (required, and only adapters have
one): that base is what it is evaluated on (harness/lm_eval_run.py) and what its ΔW is added to. The
base must be a full model, not another adapter, and a recipe listing adapters must have their base as
its base_model. What needs the folders (the adapter's recorded base path, its shapes against the
base) is checked when the adapter is built (harness/build.py), not when the registry loads.

A checkpoint series (the paper's Figure 2: scores against the CT tokens seen): `tokens` on an entry
is the number of continued-pretraining tokens the model has seen (a ct model's own; a ctsft model's:
those of the CT checkpoint it was trained from), and `checkpoints` lists earlier checkpoints of the
same model, each with its `label`, its `tokens` and its `path` (a local entry's; relative to
model_root) or its hub `revision` (a hub entry's):

      ct-uig:
        kind: ct
        path: ct-uig
        tokens: 245760
        checkpoints:
          - {label: step30, tokens: 61440, path: ct-uig/checkpoints/step30}

A checkpoint is the model `<id>@<label>` (`ct-uig@step30`; an alias works too: `ties-uig@step30`), of
the entry's kind and languages. A merge over exactly one series (one of its inputs has checkpoints)
expands to one merge per checkpoint, `<merge id>@<label>`, its recipe reading `<input>@<label>`
wherever it read the input; the merge itself is the series' last point, at the input's `tokens`.
Checkpoints are not listed as models of their own (`harness models` names them beside their entry).

`zoo:` marks the registry as the CPU model zoo's: a model whose folder is `<zoo>/<zoo model id>`,
and a `data_dir` of `<zoo>/data`, are built by `harness zoo` when a command needs them
(harness/build.py). Without it, a missing folder is an error.
"""

import copy
import dataclasses
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness import HarnessError
from harness.files import read_yaml
from harness.kinds import KINDS
from harness.paths import REGISTRIES_DIR, harness_home
from tasks.languages import LANGUAGES

SHIPPED_REGISTRIES = {path.stem: path for path in sorted(REGISTRIES_DIR.glob("*.yaml"))}
DEFAULT_REGISTRY = SHIPPED_REGISTRIES["zoo"]
CHECKPOINT_MARK = "@"  # `ct-uig@step30`: checkpoint `step30` of the series `ct-uig`
LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a checkpoint label: a file-name-safe word
ENTRY_FIELDS = {"kind", "langs", "path", "hub", "revision", "recipe", "aliases", "description", "base", "tokens",
                "checkpoints"}


@dataclass(frozen=True)
class Checkpoint:
    """One earlier checkpoint of a registry model, as its `checkpoints:` list names it."""
    label: str  # `step30`: the model is `<id>@step30`
    tokens: int  # CT tokens seen
    path: Path | None = None  # a local entry's checkpoint folder
    revision: str | None = None  # a hub entry's checkpoint revision


@dataclass(frozen=True)
class ModelEntry:
    id: str
    kind: str
    langs: tuple[str, ...] = ()
    path: Path | None = None
    hub: str | None = None
    revision: str | None = None
    recipe: dict | None = None
    aliases: tuple[str, ...] = ()
    description: str = ""
    base: str | None = None  # an adapter's base model id
    tokens: int | None = None  # CT tokens seen (a ct model's own; a ctsft model's CT checkpoint's)
    checkpoints: tuple[Checkpoint, ...] = ()  # earlier checkpoints, `<id>@<label>`
    series: str | None = None  # a checkpoint (or a merge over one): the id of the series it is a point of

    @property
    def source(self) -> str:
        """Where the weights come from, in words, for listings."""
        if self.recipe is not None:
            return f"merge: {self.recipe.get('merge_method', '?')}"
        if self.base is not None:
            return f"adapter over {self.base}: {self.path}"
        if self.hub is not None:
            return f"hub: {self.hub}" + (f"@{self.revision}" if self.revision else "")
        return f"local: {self.path}"

    def recipe_model_ids(self) -> list[str]:
        """The registry ids a merge recipe refers to (base model, inputs, tokenizer source)."""
        if self.recipe is None:
            return []
        refs = [m.get("model") for m in self.recipe.get("models") or [] if isinstance(m, dict)]
        for key in ("base_model", "tokenizer_source"):
            if isinstance(self.recipe.get(key), str):
                refs.append(self.recipe[key])
        return [r for r in dict.fromkeys(refs) if r]

    @property
    def series_id(self) -> str | None:
        """The series this model is a point of (its own id for the last point); None outside any series."""
        return self.series or (self.id if self.tokens is not None else None)


@dataclass
class Registry:
    name: str
    source: Path
    models: dict[str, ModelEntry]
    data_dir: Path | None = None
    zoo: Path | None = None  # the zoo folder whose models and data are built on demand
    description: str = ""
    # The checkpoints of series, `<id>@<label>` -> entry (ModelEntry.series names the series).
    checkpoints: dict[str, ModelEntry] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict, repr=False)

    def resolve(self, name: str) -> ModelEntry:
        """The entry for an id, an alias or a checkpoint (`ct-uig@step30`, `ties-uig@step30`); an
        unknown name is an error listing close matches."""
        model_id = name if name in self.models else self._aliases.get(name)
        if model_id is not None:
            return self.models[model_id]
        head, mark, label = name.rpartition(CHECKPOINT_MARK)
        checkpoint = self.checkpoints.get(name) or (self.checkpoints.get(
            f"{self._aliases.get(head, head)}{CHECKPOINT_MARK}{label}") if mark else None)
        if checkpoint is not None:
            return checkpoint
        head_id = self._aliases.get(head, head)
        if mark and head_id in self.models:
            labels = [entry.id.rpartition(CHECKPOINT_MARK)[2] for entry in self.series(head_id)[:-1]]
            raise HarnessError(f"model {head_id!r} has no checkpoint {label!r} in registry {self.name!r} "
                               f"({self.source}); " + (f"its checkpoints: {', '.join(labels)}" if labels else
                                                       "it has no checkpoints"))
        known = list(self.models) + list(self._aliases)
        close = difflib.get_close_matches(name, known, n=4, cutoff=0.5)
        hint = f"; did you mean: {', '.join(close)}" if close else "; `harness models` lists them"
        raise HarnessError(f"unknown model id {name!r} in registry {self.name!r} ({self.source}){hint}")

    def inputs_of(self, name: str) -> list[ModelEntry]:
        """The entries a merge reads, in recipe order (empty for checkpoints)."""
        return [self.resolve(r) for r in self.resolve(name).recipe_model_ids()]

    def series(self, name: str) -> list[ModelEntry]:
        """A model's series, fewest tokens first, the model itself last: its checkpoints (or a merge's
        per-checkpoint merges) and itself; just itself for a model outside any series."""
        entry = self.resolve(name)
        head = self.models[entry.series] if entry.series else entry
        points = [e for e in self.checkpoints.values() if e.series == head.id]
        return sorted(points, key=lambda e: e.tokens) + [head]

    def series_input(self, name: str) -> ModelEntry | None:
        """The series a merge reads (its one input with checkpoints); None for any other model."""
        entry = self.resolve(name)
        return _series_input(self.models, self.models[entry.series] if entry.series else entry) if entry.recipe else None


def _expand(value: str, relative_to: Path) -> Path:
    """Expand ${HARNESS_HOME}, other environment variables and ~, then anchor relative paths."""
    env = {**os.environ, "HARNESS_HOME": str(harness_home())}
    text = value.replace("${HARNESS_HOME}", env["HARNESS_HOME"])
    path = Path(os.path.expandvars(text)).expanduser()
    return path if path.is_absolute() else relative_to / path


def _parse_entry(model_id: str, raw: object, model_root: Path, where: str) -> ModelEntry:
    if not isinstance(raw, dict):
        raise HarnessError(f"{where}: model {model_id!r} must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - ENTRY_FIELDS
    if unknown:
        raise HarnessError(f"{where}: model {model_id!r} has unknown field(s) {sorted(unknown)}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise HarnessError(f"{where}: model {model_id!r} has kind {kind!r}; expected one of {', '.join(KINDS)}")
    sources = [key for key in ("path", "hub", "recipe") if raw.get(key) is not None]
    if len(sources) != 1:
        raise HarnessError(f"{where}: model {model_id!r} needs exactly one of path, hub, recipe (has {sources or 'none'})")
    if (kind == "merge") != (sources[0] == "recipe"):
        raise HarnessError(f"{where}: model {model_id!r}: kind 'merge' goes with a recipe, and only merges have one")
    base = _adapter_base(raw, kind, sources[0], model_id, where)
    if kind == "merge" and raw.get("tokens") is not None:
        raise HarnessError(f"{where}: model {model_id!r}: a merge has no tokens of its own (a merge over a "
                           "series is placed at its input's)")
    langs = raw.get("langs") or []
    if not isinstance(langs, list):
        raise HarnessError(f"{where}: model {model_id!r}: langs must be a list of language codes, got {langs!r}")
    bad_langs = [lang for lang in langs if not isinstance(lang, str) or lang not in LANGUAGES]
    if bad_langs:
        raise HarnessError(f"{where}: model {model_id!r} has unknown language(s) {bad_langs}; known: {', '.join(LANGUAGES)}")
    aliases = raw.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(alias, str) and alias for alias in aliases):
        raise HarnessError(f"{where}: model {model_id!r}: aliases must be a list of names, got {aliases!r}")
    recipe = raw.get("recipe")
    if recipe is not None and not isinstance(recipe, dict):
        raise HarnessError(f"{where}: model {model_id!r}: recipe must be a mapping")
    if recipe is not None and not isinstance(recipe.get("models", []), list):
        raise HarnessError(f"{where}: model {model_id!r}: the recipe's models must be a list, got {recipe['models']!r}")
    path, hub, revision, description, base = (_text_field(raw, key, model_id, where)
                                              for key in ("path", "hub", "revision", "description", "base"))
    return ModelEntry(
        id=model_id,
        kind=kind,
        langs=tuple(langs),
        path=_expand(path, model_root) if path is not None else None,
        hub=hub,
        revision=revision,
        recipe=recipe,
        aliases=tuple(aliases),
        description=description or "",
        base=base,
        tokens=_tokens(raw.get("tokens"), f"{where}: model {model_id!r}") if raw.get("tokens") is not None else None,
        checkpoints=_checkpoints(raw, kind, sources[0], model_id, model_root, where),
    )


def _tokens(value: object, culprit: str) -> int:
    """A count of tokens seen: a whole number, 0 or more."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HarnessError(f"{culprit}: tokens must be a whole number of tokens seen (0 or more), got {value!r}")
    return value


def _checkpoints(raw: dict, kind: str, source: str, model_id: str, model_root: Path, where: str) -> tuple[Checkpoint, ...]:
    """An entry's `checkpoints` list, checked: each a label, fewer tokens than the entry's own, and a
    path (a local entry's) or a revision (a hub entry's); labels and token counts each once."""
    listed = raw.get("checkpoints")
    if listed is None:
        return ()
    culprit = f"{where}: model {model_id!r}"
    if kind in ("merge", "adapter"):
        raise HarnessError(f"{culprit}: a {kind} has no checkpoints (a merge over a series expands by itself)")
    if not isinstance(listed, list) or not listed:
        raise HarnessError(f"{culprit}: checkpoints must be a non-empty list, got {listed!r}")
    if raw.get("tokens") is None:
        raise HarnessError(f"{culprit}: a model with checkpoints needs tokens: the tokens it has seen itself")
    found = [_checkpoint(item, source, culprit, model_root) for item in listed]
    for name in ("label", "tokens"):
        values = [getattr(checkpoint, name) for checkpoint in found]
        twice = sorted({str(value) for value in values if values.count(value) > 1})
        if twice:
            raise HarnessError(f"{culprit}: checkpoint {name} given twice: {', '.join(twice)}")
    late = [c.label for c in found if c.tokens >= raw["tokens"]]
    if late:
        raise HarnessError(f"{culprit}: checkpoint(s) {', '.join(late)} have as many tokens as the model itself "
                           f"({raw['tokens']}) or more; list earlier checkpoints only")
    return tuple(sorted(found, key=lambda checkpoint: checkpoint.tokens))


def _checkpoint(item: object, source: str, culprit: str, model_root: Path) -> Checkpoint:
    if not isinstance(item, dict):
        raise HarnessError(f"{culprit}: each checkpoint is a mapping with label, tokens and path or revision, got {item!r}")
    label = item.get("label")
    if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
        raise HarnessError(f"{culprit}: checkpoint label {label!r} must be a word of letters, digits, '.', '_' and '-'")
    culprit = f"{culprit}, checkpoint {label!r}"
    unknown = set(item) - {"label", "tokens", "path", "revision"}
    if unknown:
        raise HarnessError(f"{culprit} has unknown field(s) {sorted(unknown)}")
    if item.get("tokens") is None:
        raise HarnessError(f"{culprit} needs tokens: the tokens seen at that checkpoint")
    tokens = _tokens(item["tokens"], culprit)
    where_from = "revision" if source == "hub" else "path"
    wrong = "path" if source == "hub" else "revision"
    if item.get(wrong) is not None or not isinstance(item.get(where_from), (str, int)) or item[where_from] == "":
        raise HarnessError(f"{culprit} needs a {where_from} (the model is a {source} entry) and no {wrong}")
    if where_from == "path":
        return Checkpoint(label, tokens, path=_expand(str(item["path"]), model_root))
    return Checkpoint(label, tokens, revision=str(item["revision"]))


def _adapter_base(raw: dict, kind: str, source: str, model_id: str, where: str) -> str | None:
    """An adapter's `base` id: required for adapters (local folders), refused for any other kind."""
    base = raw.get("base")
    if kind != "adapter":
        if base is not None:
            raise HarnessError(f"{where}: model {model_id!r}: only adapters have a base (kind is {kind!r})")
        return None
    if source != "path":
        raise HarnessError(f"{where}: adapter {model_id!r} needs a path (its PEFT adapter folder), not {source}")
    if not isinstance(base, str) or not base:
        raise HarnessError(f"{where}: adapter {model_id!r} needs base: the registry id of the model it was trained on")
    return base


def _text_field(raw: dict, key: str, model_id: str, where: str) -> str | None:
    """A field holding a name or a path, as text; a number reads as its digits (`revision: 1234567`)."""
    value = raw.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise HarnessError(f"{where}: model {model_id!r}: {key} must be text, got {value!r}")


def _check_references(models: dict[str, ModelEntry], where: str) -> None:
    for entry in models.values():
        for ref in entry.recipe_model_ids():
            if ref not in models:
                raise HarnessError(f"{where}: recipe of {entry.id!r} refers to unknown model {ref!r}")
    _check_adapter_bases(models, where)
    # Depth-first search for a cycle among recipe references.
    state: dict[str, str] = {}

    def visit(model_id: str, trail: list[str]) -> None:
        if state.get(model_id) == "done":
            return
        if state.get(model_id) == "active":
            cycle = trail[trail.index(model_id):] + [model_id]
            raise HarnessError(f"{where}: recipe cycle: {' -> '.join(cycle)}")
        state[model_id] = "active"
        for ref in models[model_id].recipe_model_ids():
            visit(ref, trail + [model_id])
        state[model_id] = "done"

    for model_id in models:
        visit(model_id, [])


def _check_adapter_bases(models: dict[str, ModelEntry], where: str) -> None:
    """Each adapter's base is a full model of the registry, and a recipe over adapters is based on it."""
    for entry in models.values():
        if entry.base is None:
            continue
        if entry.base not in models:
            raise HarnessError(f"{where}: adapter {entry.id!r} has unknown base {entry.base!r}")
        if models[entry.base].kind == "adapter":
            raise HarnessError(f"{where}: adapter {entry.id!r} has base {entry.base!r}, which is an adapter itself; "
                               "the base must be a full model")
    for entry in models.values():
        recipe_base = (entry.recipe or {}).get("base_model")
        for ref in entry.recipe_model_ids():
            adapter = models[ref]
            if adapter.base is not None and adapter.base != recipe_base:
                raise HarnessError(f"{where}: recipe of {entry.id!r} lists adapter {ref!r}, whose base is "
                                   f"{adapter.base!r}, but its base_model is {recipe_base!r}; they must be the same")


def parse_registry(data: object, source: Path) -> Registry:
    """Validate a registry document; every problem is a HarnessError naming the model."""
    where = str(source)
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict) or not data["models"]:
        raise HarnessError(f"{where}: a registry is a mapping with a non-empty 'models' mapping")
    model_root = _expand(str(data.get("model_root", ".")), source.parent)
    models = {str(mid): _parse_entry(str(mid), raw, model_root, where) for mid, raw in data["models"].items()}
    aliases: dict[str, str] = {}
    for entry in models.values():
        for alias in entry.aliases:
            if alias in models or alias in aliases:
                raise HarnessError(f"{where}: alias {alias!r} of {entry.id!r} is already taken")
            aliases[alias] = entry.id
    _check_references(models, where)
    checkpoints = _series_points(models, where)
    for model_id, entry in models.items():  # a merge over a series: its last point, at its input's tokens
        if entry.tokens is None and any(c.series == model_id for c in checkpoints.values()):
            models[model_id] = dataclasses.replace(entry, tokens=_series_input(models, entry).tokens)
    data_dir, zoo = data.get("data_dir"), data.get("zoo")
    return Registry(
        name=str(data.get("name", source.stem)),
        source=source,
        models=models,
        data_dir=_expand(str(data_dir), source.parent) if data_dir else None,
        zoo=_expand(str(zoo), source.parent) if zoo else None,
        description=str(data.get("description", "")),
        checkpoints=checkpoints,
        _aliases=aliases,
    )


def _series_points(models: dict[str, ModelEntry], where: str) -> dict[str, ModelEntry]:
    """Every checkpoint of a series as an entry `<id>@<label>`, and every merge over exactly one series
    expanded to one merge per checkpoint of it (a variant, an id holding '@', never expands)."""
    points = {}
    for entry in models.values():
        for checkpoint in entry.checkpoints:
            points[f"{entry.id}{CHECKPOINT_MARK}{checkpoint.label}"] = ModelEntry(
                id=f"{entry.id}{CHECKPOINT_MARK}{checkpoint.label}", kind=entry.kind, langs=entry.langs,
                path=checkpoint.path, hub=entry.hub, revision=checkpoint.revision, tokens=checkpoint.tokens,
                series=entry.id, description=f"{entry.id} at {checkpoint.tokens} tokens ({checkpoint.label})")
    for entry in models.values():
        series_input = _series_input(models, entry)
        if series_input is None or CHECKPOINT_MARK in entry.id:
            continue
        for checkpoint in series_input.checkpoints:
            suffix = f"{CHECKPOINT_MARK}{checkpoint.label}"
            points[entry.id + suffix] = dataclasses.replace(
                entry, id=entry.id + suffix, aliases=(), tokens=checkpoint.tokens, series=entry.id,
                recipe=_recipe_reading(entry.recipe, series_input.id, series_input.id + suffix),
                description=f"{entry.id} over {series_input.id + suffix}")
    taken = sorted(set(points) & set(models))
    if taken:
        raise HarnessError(f"{where}: checkpoint id(s) {', '.join(taken)} are already registry ids; rename the label")
    return points


def _series_input(models: dict[str, ModelEntry], entry: ModelEntry) -> ModelEntry | None:
    """The one input of a merge that has checkpoints; None for a merge over none, or over several
    (which checkpoints go together would be a guess)."""
    found = [models[ref] for ref in entry.recipe_model_ids() if models[ref].checkpoints]
    return found[0] if len(found) == 1 else None


def _recipe_reading(recipe: dict, old: str, new: str) -> dict:
    """A copy of a recipe that reads model `new` wherever it read `old` (inputs, base, tokenizer source)."""
    recipe = copy.deepcopy(recipe)
    for model in recipe.get("models") or []:
        if isinstance(model, dict) and model.get("model") == old:
            model["model"] = new
    for key in ("base_model", "tokenizer_source"):
        if recipe.get(key) == old:
            recipe[key] = new
    return recipe


def load_registry(path: str | Path | None = None) -> Registry:
    """Load a registry: a shipped one by name (`zoo`, `paper`), else a file; None: the zoo."""
    source = registry_file(path)
    missing = f"registry file not found: {source} (shipped registries: {', '.join(SHIPPED_REGISTRIES)})"
    return parse_registry(read_yaml(source, "registry file", missing), source.resolve())


def registry_file(name_or_path: str | Path | None) -> Path:
    """The file behind `--registry`: a shipped registry's name wins over a file of that name."""
    if name_or_path is None:
        return DEFAULT_REGISTRY
    return SHIPPED_REGISTRIES.get(str(name_or_path), Path(name_or_path))


# ---- `harness models` -------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--kind", choices=KINDS, help="only models of this kind")
    parser.add_argument("--lang", choices=sorted(LANGUAGES), help="only models for this language")


def run(args) -> int:
    registry = load_registry(args.registry)
    print(f"registry {registry.name}: {registry.source}")
    rows = [
        (e.id, e.kind, ",".join(e.langs) or "-", ",".join(e.aliases) or "-", e.source + _series_note(e))
        for e in registry.models.values()
        if (args.kind is None or e.kind == args.kind) and (args.lang is None or args.lang in e.langs)
    ]
    header = ("id", "kind", "langs", "aliases", "source")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header) - 1)]
    for row in [header] + rows:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    print(f"{len(rows)} model(s)")
    return 0


def _series_note(entry: ModelEntry) -> str:
    """`; checkpoints ct-uig@step30, ...`: where a listing shows a series."""
    if not entry.checkpoints:
        return ""
    return "; checkpoints " + ", ".join(f"{entry.id}{CHECKPOINT_MARK}{c.label}" for c in entry.checkpoints)
