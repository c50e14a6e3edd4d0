"""`harness merge` and `materialize`: turn any registry model into a local HF folder.

- A checkpoint folder (`path:`) is used as it is.
- A hub checkpoint (`hub:`) is downloaded with huggingface_hub (safetensors, JSON and tokenizer
  files only).
- An adapter (`kind: adapter`) is its PEFT folder as it is, checked against its base, which is
  built too: evaluating an adapter serves the base with the adapter applied (harness/lm_eval_run.py).
- A merge (`recipe:`) is built with the `merges` library into the cache,
  `merges_dir()/<id>-<hash12>`, or reused from there. The hash covers the recipe, the identity
  of every input and the merges library version, so editing one CT model re-merges exactly the
  models that depend on it.

A zoo registry's models (see harness/registry.py, `zoo:`) are built on demand: before building a
model, the builder builds the zoo models it reads (itself, or a merge's inputs) that are missing
or stale, and only those (with their ancestors), through `harness zoo`.

A model's identity hash: for a local folder, a hash of its safetensors, JSON and tokenizer file
contents (each file's hash is cached by path, size and mtime, so big models are read once); for
a hub model, its repo id and resolved commit; for an adapter, a hash of its folder's hash and its
base's identity (the same adapter files over another base are another model); for a merge, its cache
key. A merge whose recipe lists adapters reads them as their folders: the merges library applies
them to the recipe's base_model.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from harness import HarnessError
from harness.checkpoints import check_weights
from harness.paths import harness_home, merges_dir
from harness.registry import ModelEntry, Registry, load_registry
from merges.errors import MergeError

HUB_PATTERNS = ["*.safetensors", "*.json", "tokenizer.model", "*.txt", "*.jinja"]
HASHED_SUFFIXES = (".safetensors", ".json", ".model", ".txt", ".jinja")


@dataclass(frozen=True)
class BuiltModel:
    entry: ModelEntry
    path: Path
    model_hash: str
    stats: dict | None
    base: BuiltModel | None = None  # an adapter's base: the full model it applies to


# ---- identity hashes --------------------------------------------------------------------------

def _hash_cache_path() -> Path:
    return harness_home() / "cache" / "file_hashes.json"


def _file_digest(path: Path, cache: dict) -> str:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in cache:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(16 * 1024 * 1024):
                digest.update(chunk)
        cache[key] = digest.hexdigest()
    return cache[key]


def folder_hash(folder: Path) -> str:
    """A content hash of a checkpoint folder's weight, config and tokenizer files."""
    cache_path = _hash_cache_path()
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or damaged (not UTF-8, not JSON): only a cache, rebuilt
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    before = len(cache)
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix in HASHED_SUFFIXES)
    combined = hashlib.sha256()
    for file in files:
        combined.update(f"{file.name}\0{_file_digest(file, cache)}\n".encode())
    if len(cache) != before:
        _save_hash_cache(cache_path, cache)
    return combined.hexdigest()


def _save_hash_cache(cache_path: Path, cache: dict) -> None:
    """Best effort: on a full or read-only disk the hashes are computed again next time."""
    temp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}")
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(json.dumps(cache, indent=0), encoding="utf-8")
        os.replace(temp, cache_path)
    except OSError:
        temp.unlink(missing_ok=True)


def merge_key(recipe_json: str, input_hashes: dict[str, str]) -> str:
    import merges

    payload = json.dumps({"recipe": recipe_json, "inputs": input_hashes, "merges": merges.__version__}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


# ---- materialize ------------------------------------------------------------------------------

class _Builder:
    """Builds models of one registry, each at most once per call."""

    def __init__(self, registry: Registry, device: str, progress: bool):
        self.registry = registry
        self.device = device
        self.progress = progress
        self.built: dict[str, BuiltModel] = {}

    def build(self, model_id: str) -> BuiltModel:
        entry = self.registry.resolve(model_id)
        if entry.id not in self.built:
            build_zoo_models_for(self.registry, [entry.id])
            if entry.recipe is not None:
                self.built[entry.id] = self._merge(entry)
            elif entry.hub is not None:
                self.built[entry.id] = self._download(entry)
            elif entry.base is not None:
                self.built[entry.id] = self._adapter(entry)
            else:
                self.built[entry.id] = self._local(entry)
        return self.built[entry.id]

    def _local(self, entry: ModelEntry) -> BuiltModel:
        _refuse_gguf(entry)
        if entry.path is None or not (entry.path / "config.json").is_file():
            raise HarnessError(f"model {entry.id!r}: no checkpoint at {entry.path} (no config.json there)")
        if not any(entry.path.glob("*.safetensors")):
            # Pickled weights (pytorch_model.bin) can run code when loaded, and the identity hash
            # covers safetensors only: refuse them rather than load them quietly.
            others = sorted(p.name for p in entry.path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
            raise HarnessError(f"model {entry.id!r}: {entry.path} has no safetensors weights"
                               + (f" (found {', '.join(others[:3])})" if others else "")
                               + "; the harness loads safetensors only: convert the checkpoint to safetensors")
        check_weights(entry.id, entry.path)
        return BuiltModel(entry, entry.path, folder_hash(entry.path), None)

    def _adapter(self, entry: ModelEntry) -> BuiltModel:
        """An adapter folder, checked as merges.lora reads it and against its base (built first)."""
        from merges.lora import LoraAdapter

        base = self.build(entry.base)
        if entry.path is None or not entry.path.is_dir():
            raise HarnessError(f"adapter {entry.id!r}: no adapter folder at {entry.path}")
        try:
            adapter = LoraAdapter(entry.id, entry.path)
            adapter.check_base(tensor_shapes(base.path), entry.base)
        except MergeError as err:
            raise HarnessError(str(err)) from None
        check_recorded_base(entry, adapter.base_model, base.path)
        identity = hashlib.sha256(f"adapter:{folder_hash(entry.path)}\nbase:{base.model_hash}".encode()).hexdigest()
        return BuiltModel(entry, entry.path, identity, None, base=base)

    def _download(self, entry: ModelEntry) -> BuiltModel:
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(repo_id=entry.hub, revision=entry.revision, allow_patterns=HUB_PATTERNS))
        except Exception as err:  # network, auth, missing repo: all reported the same way
            raise HarnessError(f"model {entry.id!r}: cannot download {entry.hub} from the hub "
                               f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
        # The snapshot folder is named by the commit, which pins `main` to what was merged.
        commit = path.name if re.fullmatch(r"[0-9a-f]{40}", path.name) else (entry.revision or "main")
        identity = hashlib.sha256(f"hub:{entry.hub}@{commit}".encode()).hexdigest()
        return BuiltModel(entry, path, identity, None)

    def _merge(self, entry: ModelEntry) -> BuiltModel:
        import merges
        from merges.lora import is_adapter_folder

        recipe = merges.load_recipe(entry.recipe)
        inputs = {name: self.build(name) for name in recipe.referenced_models()}
        key = merge_key(recipe.canonical_json(), {name: built.model_hash for name, built in inputs.items()})
        folder = merges_dir() / f"{entry.id}-{key[:12]}"
        # One builder per cache entry: a second process asking for the same merge waits, then
        # reuses the folder the first one published.
        with _cache_entry_lock(folder):
            if folder.is_dir():
                stats = merges.load_stats(folder)
            else:
                stats = merges.run_merge(recipe, lambda name: inputs[name].path, folder,
                                         device=self.device, progress=self.progress).stats
        # A merge written as an adapter (the recipe's `output: {format: adapter}`) applies to its base_model.
        base = inputs[recipe.base_model] if is_adapter_folder(folder) and recipe.base_model else None
        return BuiltModel(entry, folder, key, stats, base=base)


def tensor_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in a checkpoint folder's safetensors files (headers only)."""
    from safetensors import safe_open

    shapes = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            shapes.update({key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()})
    return shapes


def check_recorded_base(entry: ModelEntry, recorded: str | None, base_path: Path) -> None:
    """The base PEFT recorded in adapter_config.json (base_model_name_or_path) agrees with the registry's.

    Compared only when the recorded base is a local folder, an absolute path that exists here: then
    it must be the registry base's folder (the same path once symlinks are resolved) or hold the same
    files (the same folder_hash: a copy, or the zoo moved to another HARNESS_HOME). A hub name, or a
    path from another machine, cannot be compared: the shape check against the base still applies.
    """
    if not recorded or not Path(recorded).is_absolute() or not Path(recorded).is_dir():
        return
    recorded_path = Path(recorded).resolve()
    if recorded_path == Path(base_path).resolve() or folder_hash(recorded_path) == folder_hash(base_path):
        return
    raise HarnessError(f"adapter {entry.id!r} was trained on {recorded_path} (its adapter_config.json's "
                       f"base_model_name_or_path), but its registry base {entry.base!r} is {base_path}, "
                       "a different model")


@contextlib.contextmanager
def _cache_entry_lock(folder: Path):
    """Hold the file lock of a merge cache entry; a cache that cannot be written is one line."""
    lock = FileLock(str(folder.parent / f".{folder.name}.lock"))
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as err:
        raise HarnessError(f"cannot write the merge cache {folder.parent}: {err.strerror or err}") from None
    try:
        yield
    finally:
        lock.release()


def materialize(registry: Registry, model_id: str, device: str = "cpu", progress: bool = True) -> BuiltModel:
    """A local HF folder for any registry model, its identity hash and its conflict statistics."""
    return _Builder(registry, device, progress).build(model_id)


# ---- the zoo's models and data, built when a command needs them ----------------------------------

def zoo_models_read_by(registry: Registry, model_id: str) -> list[str]:
    """The zoo models that building `model_id` reads: itself, or the inputs of a merge (recursively).

    A model is the zoo's when the registry names a zoo folder and the model's folder is
    `<zoo>/<id>` for one of the zoo's model ids, or a folder inside it (a CT model's intermediate
    checkpoint, `<zoo>/ct-uig/checkpoints/step30`, is built with its model); an empty list for any
    other registry.
    """
    if registry.zoo is None:
        return []
    from harness.zoo import ZooConfig, zoo_models

    zoo_ids = {model.id for model in zoo_models(ZooConfig())}
    zoo = registry.zoo.resolve()
    found: list[str] = []

    def visit(entry: ModelEntry) -> None:
        for ref in entry.recipe_model_ids():
            visit(registry.resolve(ref))
        if entry.path is None:
            return
        parts = entry.path.resolve().parts
        if parts[:len(zoo.parts)] == zoo.parts and len(parts) > len(zoo.parts) and parts[len(zoo.parts)] in zoo_ids:
            found.append(parts[len(zoo.parts)])

    visit(registry.resolve(model_id))
    return list(dict.fromkeys(found))


def build_zoo_models_for(registry: Registry, model_ids: list[str]) -> None:
    """Build, in one go, the zoo models that these registry models read and that are missing or stale.

    In one go, so that independent zoo models train in parallel; nothing for a registry without a zoo.
    """
    zoo_ids = [zoo_id for model_id in model_ids for zoo_id in zoo_models_read_by(registry, model_id)]
    if zoo_ids:
        _build_zoo(registry, list(dict.fromkeys(zoo_ids)))


def registry_data_dir(registry: Registry) -> Path | None:
    """The registry's data_dir if it is a folder, the zoo's data built first when it is the zoo's."""
    from harness.zoo.build import DATA

    data_dir = registry.data_dir
    if registry.zoo is not None and data_dir is not None and data_dir.resolve() == registry.zoo.resolve() / DATA:
        _build_zoo(registry, [])
    return data_dir if data_dir is not None and data_dir.is_dir() else None


def _build_zoo(registry: Registry, zoo_ids: list[str]) -> None:
    """Build what of these zoo models (with their ancestors, the tokenizer and the data) is missing or stale.

    An empty list builds the tokenizer and the data only. A zoo build takes minutes, so it always
    says what it builds and shows its progress, even for a caller that shows no merge progress.
    """
    from harness.zoo import ZooConfig, build_zoo
    from harness.zoo.build import DATA, TOKENIZER, stale_artifacts

    stale = stale_artifacts(registry.zoo.resolve(), ZooConfig(), only=zoo_ids)
    if not stale:
        return
    models = [name for name in stale if name not in (TOKENIZER, DATA)]
    print(f"building zoo models: {', '.join(models)}" if models else f"building the zoo's {' and '.join(stale)}",
          file=sys.stderr, flush=True)
    build_zoo(registry.zoo, progress=True, only=zoo_ids)


def _refuse_gguf(entry: ModelEntry) -> None:
    """A GGUF checkpoint (a .gguf path, or a folder of them without safetensors) needs `harness import`."""
    path = entry.path
    if path is None:
        return
    if path.is_dir():
        found = [] if any(path.glob("*.safetensors")) else sorted(path.glob("*.gguf"))
    else:
        found = [path] if path.suffix == ".gguf" and path.is_file() else []
    if found:
        raise HarnessError(f"model {entry.id!r}: {found[0]} is a GGUF checkpoint, which the harness does not load: "
                           f"convert it with `harness import {found[0]} OUT_DIR` and set the model's path to OUT_DIR")


# ---- `harness merge` --------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("recipe_or_id", metavar="RECIPE_OR_ID",
                        help="a mergekit-format recipe YAML file, or a registry model id/alias")
    parser.add_argument("out_dir", metavar="OUT_DIR", nargs="?", type=Path,
                        help="output folder (must not exist); for a registry id, default: the merge cache")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to compute (default cpu)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "float64"],
                        help="output dtype (default: the recipe's dtype, else the inputs')")
    parser.add_argument("--threads", type=int, default=None, help="tensors merged in parallel (default: up to 4)")


def _recipe_file_resolver(recipe_path: Path, registry_path: str | None, device: str):
    """Recipe-file model names: folders (relative to the cwd or the recipe), else registry ids."""
    state: dict = {}

    def resolve(name: str) -> Path:
        for candidate in (Path(name).expanduser(), recipe_path.parent / name):
            if candidate.is_dir():
                return candidate
        if "builder" not in state:
            state["builder"] = _Builder(load_registry(registry_path), device, progress=True)
        try:
            return state["builder"].build(name).path
        except (HarnessError, MergeError) as err:  # MergeError: the model is a merge that failed
            raise HarnessError(f"model {name!r}: not a folder, and not a buildable registry model ({err})") from None

    return resolve


def run(args) -> int:
    import merges.engine  # the engine and torch: loaded now, so that the freeze below covers them

    if args.process_exits_after:
        # What is loaded by now (torch and the rest) lives until the process exits: frozen, it is
        # left out of every garbage collection, the one at exit included, which would otherwise
        # walk all of torch's objects (0.2-0.25 s of a 1B-parameter merge on 2 cores). Only in
        # the `harness merge` process: in one that also loads vLLM (say, a test run), triton's
        # bindings report objects frozen this way as leaked at exit.
        gc.freeze()
    target = Path(args.recipe_or_id)
    if target.is_file() or target.suffix in (".yaml", ".yml"):
        if args.out_dir is None:
            raise HarnessError("OUT_DIR is required when merging a recipe file")
        recipe = merges.load_recipe(target)
        result = merges.run_merge(recipe, _recipe_file_resolver(target, args.registry, args.device), args.out_dir,
                                  device=args.device, threads=args.threads, dtype=args.dtype)
        path, stats = result.path, result.stats
    else:
        registry = load_registry(args.registry)
        entry = registry.resolve(args.recipe_or_id)
        if entry.recipe is None:
            raise HarnessError(f"model {entry.id!r} is a checkpoint ({entry.source}), not a merge")
        if args.out_dir is None:
            if args.dtype is not None:
                raise HarnessError("--dtype needs OUT_DIR: the merge cache holds merges in their recipe's dtype")
            built = materialize(registry, entry.id, device=args.device)
            path, stats = built.path, built.stats
        else:
            builder = _Builder(registry, args.device, progress=True)
            result = merges.run_merge(merges.load_recipe(entry.recipe), lambda name: builder.build(name).path,
                                      args.out_dir, device=args.device, threads=args.threads, dtype=args.dtype)
            path, stats = result.path, result.stats
    if stats is not None:
        print(merges.summary(stats))
    print(f"merged model: {path}")
    return 0
