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

A model is a local checkpoint folder (`path`), a hub checkpoint (`hub`, optional `revision`) or a
merge recipe over other ids (`recipe`). `harness models` lists a registry.

`zoo:` marks the registry as the CPU model zoo's: a model whose folder is `<zoo>/<zoo model id>`,
and a `data_dir` of `<zoo>/data`, are built by `harness zoo` when a command needs them
(harness/build.py). Without it, a missing folder is an error.
"""

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path

from harness import HarnessError
from harness.files import read_yaml
from harness.kinds import KINDS
from harness.paths import REGISTRIES_DIR, harness_home
from tasks.languages import LANGUAGES

SHIPPED_REGISTRIES = {path.stem: path for path in sorted(REGISTRIES_DIR.glob("*.yaml"))}
DEFAULT_REGISTRY = SHIPPED_REGISTRIES["zoo"]


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
    base: str | None = None  # kind adapter: the registry id of the model the adapter was trained on

    @property
    def source(self) -> str:
        """Where the weights come from, in words, for listings."""
        if self.recipe is not None:
            return f"merge: {self.recipe.get('merge_method', '?')}"
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


@dataclass
class Registry:
    name: str
    source: Path
    models: dict[str, ModelEntry]
    data_dir: Path | None = None
    zoo: Path | None = None  # the zoo folder whose models and data are built on demand
    description: str = ""
    _aliases: dict[str, str] = field(default_factory=dict, repr=False)

    def resolve(self, name: str) -> ModelEntry:
        """The entry for an id or alias; an unknown name is an error listing close matches."""
        model_id = name if name in self.models else self._aliases.get(name)
        if model_id is None:
            known = list(self.models) + list(self._aliases)
            close = difflib.get_close_matches(name, known, n=4, cutoff=0.5)
            hint = f"; did you mean: {', '.join(close)}" if close else "; `harness models` lists them"
            raise HarnessError(f"unknown model id {name!r} in registry {self.name!r} ({self.source}){hint}")
        return self.models[model_id]

    def inputs_of(self, name: str) -> list[ModelEntry]:
        """The entries a merge reads, in recipe order (empty for checkpoints)."""
        return [self.models[r] for r in self.resolve(name).recipe_model_ids()]


def _expand(value: str, relative_to: Path) -> Path:
    """Expand ${HARNESS_HOME}, other environment variables and ~, then anchor relative paths."""
    env = {**os.environ, "HARNESS_HOME": str(harness_home())}
    text = value.replace("${HARNESS_HOME}", env["HARNESS_HOME"])
    path = Path(os.path.expandvars(text)).expanduser()
    return path if path.is_absolute() else relative_to / path


def _parse_entry(model_id: str, raw: object, model_root: Path, where: str) -> ModelEntry:
    if not isinstance(raw, dict):
        raise HarnessError(f"{where}: model {model_id!r} must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - {"kind", "langs", "path", "hub", "revision", "recipe", "aliases", "description", "base"}
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
    if (kind == "adapter") != (base is not None):
        raise HarnessError(f"{where}: model {model_id!r}: kind 'adapter' needs `base` (the id it was trained on), "
                           "and only adapters have one")
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
    )


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
    data_dir, zoo = data.get("data_dir"), data.get("zoo")
    return Registry(
        name=str(data.get("name", source.stem)),
        source=source,
        models=models,
        data_dir=_expand(str(data_dir), source.parent) if data_dir else None,
        zoo=_expand(str(zoo), source.parent) if zoo else None,
        description=str(data.get("description", "")),
        _aliases=aliases,
    )


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
        (e.id, e.kind, ",".join(e.langs) or "-", ",".join(e.aliases) or "-", e.source)
        for e in registry.models.values()
        if (args.kind is None or e.kind == args.kind) and (args.lang is None or args.lang in e.langs)
    ]
    header = ("id", "kind", "langs", "aliases", "source")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header) - 1)]
    for row in [header] + rows:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    print(f"{len(rows)} model(s)")
    return 0
