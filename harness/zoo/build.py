"""Building the zoo into a folder, and knowing when it is already built.

    dest/zoo.json        the manifest: definition hash, config, and one record per artifact
    dest/tokenizer/      the shared tokenizer
    dest/data/           synthetic evaluation data (tasks/layout.py layout)
    dest/<model id>/     one HF folder per zoo model (config, weights, tokenizer)

The definition hash covers the zoo's source files, the prompt and layout modules it renders
with, the language table and the config. Every artifact's key derives from it; an artifact is
rebuilt when its folder is missing or its key differs, so a finished zoo costs one file read and
an interrupted build resumes where it stopped. Each artifact is written into a temporary folder
and renamed into place when complete.
"""

import copy
import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from harness import HarnessError
from harness.paths import PROJECT_ROOT
from harness.zoo.config import ZooConfig, ZooModel, stage_of, zoo_models
from harness.zoo.lexicon import stable_seed

MANIFEST = "zoo.json"
TOKENIZER = "tokenizer"
DATA = "data"
ZOO_PACKAGE = Path(__file__).resolve().parent
# Outside the package but part of the definition: the prompts the task data is rendered with,
# the data layout, and the language table.
DEFINITION_FILES = (
    PROJECT_ROOT / "tasks" / "prompts.py",
    PROJECT_ROOT / "tasks" / "layout.py",
    PROJECT_ROOT / "tasks" / "languages.py",
)


# ---- identity -----------------------------------------------------------------------------------

def definition_hash(config: ZooConfig) -> str:
    digest = hashlib.sha256()
    for path in sorted(ZOO_PACKAGE.glob("*.py")) + list(DEFINITION_FILES):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(json.dumps(asdict(config), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def artifact_keys(config: ZooConfig, definition: str | None = None) -> dict[str, str]:
    """Artifact name (tokenizer, data, model ids) -> the key its folder must have been built with."""
    definition = definition or definition_hash(config)
    names = [TOKENIZER, DATA] + [model.id for model in zoo_models(config)]
    return {name: hashlib.sha256(f"{definition}/{name}".encode()).hexdigest()[:16] for name in names}


def read_manifest(dest: Path) -> dict:
    try:
        return json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _complete(folder: Path, name: str) -> bool:
    if name == DATA:
        return folder.is_dir()
    if name == TOKENIZER:
        return (folder / "tokenizer.json").is_file()
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def stale_artifacts(dest: Path, config: ZooConfig) -> list[str]:
    """The artifacts that a build of `config` into `dest` would (re)build, in build order."""
    recorded = read_manifest(dest).get("artifacts", {})
    return [name for name, key in artifact_keys(config).items()
            if recorded.get(name, {}).get("key") != key or not _complete(dest / name, name)]


# ---- building -----------------------------------------------------------------------------------

def build(dest: Path, config: ZooConfig, progress: bool = True, force: bool = False) -> Path:
    """Build what is missing or stale of the zoo into dest; returns dest."""
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise HarnessError(f"zoo destination is not a folder: {dest}")
    todo = list(artifact_keys(config)) if force else stale_artifacts(dest, config)
    if not todo:
        return dest
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HarnessError(f"cannot create the zoo folder {dest}: {err.strerror}") from None
    _Builder(dest, config, progress).run(todo)
    return dest


class _Builder:
    """Builds the artifacts named in `todo`, recording each in the manifest as it finishes."""

    def __init__(self, dest: Path, config: ZooConfig, progress: bool):
        self.dest, self.config, self.progress = dest, config, progress
        self.definition = definition_hash(config)
        self.keys = artifact_keys(config, self.definition)
        manifest = read_manifest(dest)
        self.records = manifest.get("artifacts", {})
        self.models: dict[str, object] = {}  # trained or loaded models kept as parents
        self.tokenizer = None

    def run(self, todo: list[str]) -> None:
        from tqdm.auto import tqdm

        from harness.zoo.train import use_all_cores

        use_all_cores()
        if TOKENIZER in todo:
            self._record(TOKENIZER, self._build_tokenizer)
        if DATA in todo:
            self._record(DATA, self._build_data)
        models = [model for model in zoo_models(self.config) if model.id in todo]
        for model in tqdm(models, desc="zoo models", unit="model", disable=not self.progress):
            self._record(model.id, lambda tmp, model=model: self._build_model(model, tmp))

    def _record(self, name: str, build_into) -> None:
        """Build one artifact into a temporary folder, move it into place, update the manifest."""
        final = self.dest / name
        tmp = self.dest / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        started = time.perf_counter()
        try:
            details = build_into(tmp) or {}
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.records[name] = {"key": self.keys[name], "seconds": round(time.perf_counter() - started, 2), **details}
        self._write_manifest()

    def _write_manifest(self) -> None:
        import tokenizers
        import torch
        import transformers

        manifest = {
            "definition": self.definition,
            "config": asdict(self.config),
            "models": [model.id for model in zoo_models(self.config)],
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                          "tokenizers": tokenizers.__version__},
            "artifacts": {name: self.records[name] for name in self.keys if name in self.records},
        }
        tmp = self.dest / f".{MANIFEST}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, self.dest / MANIFEST)

    # ---- the artifacts ----

    def _build_tokenizer(self, folder: Path) -> dict:
        from harness.zoo.corpora import tokenizer_texts
        from harness.zoo.tokenizer import train_tokenizer

        self.tokenizer = train_tokenizer(tokenizer_texts(self.config), self.config.shape.vocab_size)
        self.tokenizer.save_pretrained(str(folder))
        return {"vocab_size": len(self.tokenizer)}

    def _build_data(self, folder: Path) -> dict:
        from harness.zoo.evaldata import write_eval_data

        write_eval_data(folder, self.config)
        return {"files": sum(1 for path in folder.rglob("*") if path.is_file())}

    def _get_tokenizer(self):
        if self.tokenizer is None:
            from harness.zoo.tokenizer import load_tokenizer

            self.tokenizer = load_tokenizer(self.dest / TOKENIZER)
        return self.tokenizer

    def _parent(self, model_id: str):
        if model_id not in self.models:
            from harness.zoo.train import load_model

            self.models[model_id] = load_model(self.dest / model_id)
        return self.models[model_id]

    def _build_model(self, model: ZooModel, folder: Path) -> dict:
        from harness.zoo.train import save_model

        tokenizer = self._get_tokenizer()
        parent = copy.deepcopy(self._parent(model.parent)) if model.parent else None
        network, losses = train_zoo_model(model, self.config, tokenizer, parent, self.progress)
        save_model(network, tokenizer, folder)
        if model.kind != "sft":  # the parents of other models
            self.models[model.id] = network
        head = max(1, len(losses) // 10)
        return {"steps": len(losses), "first_loss": round(sum(losses[:head]) / head, 4),
                "final_loss": round(sum(losses[-head:]) / head, 4)}


def train_zoo_model(model: ZooModel, config: ZooConfig, tokenizer, parent=None, progress: bool = False):
    """Train one zoo model from its parent (None for base); returns (model, per-step losses)."""
    from harness.zoo.corpora import continued_documents, english_documents, sft_examples
    from harness.zoo.generators import Writer
    from harness.zoo.train import lm_batches, new_model, pack_documents, task_batches, train

    stage = stage_of(config, model)
    seed = stable_seed("train", config.seed, model.id)
    writer = Writer(random.Random(seed))
    if model.kind == "sft":
        examples = sft_examples(writer, model.task_lang, config.seed)
        batches = task_batches(tokenizer, examples, stage.batch_size, stage.seq_len, stage.steps)
    else:
        if model.kind == "pretrain":
            documents = english_documents(writer)
        else:
            documents = continued_documents(writer, model.lang, config.seed, config.code_switch, config.replay)
        rows = pack_documents(tokenizer, documents, stage.steps * stage.batch_size, stage.seq_len)
        batches = lm_batches(rows, stage.batch_size)
    network = parent if parent is not None else new_model(config.shape, tokenizer, seed)
    losses = train(network, batches, stage, seed, desc=model.id, progress=progress)
    return network, losses
