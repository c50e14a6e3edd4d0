"""Building the zoo into a folder, and knowing when it is already built.

    dest/zoo.json        the manifest: definition hash, config, and one record per artifact
    dest/tokenizer/      the shared tokenizer
    dest/data/           synthetic evaluation data (tasks/layout.py layout)
    dest/<model id>/     one HF folder per zoo model (config, weights, tokenizer)
    dest/ct-<lang>/checkpoints/step<N>/   a CT model's intermediate checkpoints (HF folders too)

The definition hash covers the zoo's source files, the prompt and layout modules it renders
with, the language table and the config. Every artifact's key derives from it; an artifact is
rebuilt when its folder is missing or its key differs, so a finished zoo costs one file read and
an interrupted build resumes where it stopped. Each artifact is written into a temporary folder
and renamed into place when complete.

Models that do not depend on each other train at the same time, one per worker process, each on
one thread (train.py's TRAINING_THREADS): a zoo has the same bits whatever the number of cores.
"""

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

from filelock import FileLock

from harness import HarnessError
from harness.files import read_json
from harness.paths import PROJECT_ROOT
from harness.zoo.config import CHECKPOINTS, Stage, ZooConfig, ZooModel, checkpoint_label, stage_of, zoo_models
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
    """The zoo's manifest; {} before the first build. A damaged one is an error naming it rather
    than an empty manifest, which would retrain every model (minutes) without a word."""
    path = dest / MANIFEST
    if not path.is_file():
        return {}
    manifest = read_json(path, "zoo manifest")
    if not isinstance(manifest, dict):
        raise HarnessError(f"zoo manifest {path} must hold a JSON object: delete it to rebuild the zoo")
    return manifest


def _complete(folder: Path, name: str) -> bool:
    if name == DATA:
        return folder.is_dir()
    if name == TOKENIZER:
        return (folder / "tokenizer.json").is_file()
    if name.startswith("lora-"):
        return (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def needed_artifacts(config: ZooConfig, only: list[str] | None = None) -> list[str]:
    """The artifacts that models `only` need, in build order: tokenizer, data, ancestors, the models."""
    models = {model.id: model for model in zoo_models(config)}
    if only is None:
        return [TOKENIZER, DATA, *models]
    unknown = [model_id for model_id in only if model_id not in models]
    if unknown:
        raise HarnessError(f"unknown zoo model(s) {unknown}; known: {', '.join(models)}")
    needed: set[str] = set()
    for model_id in only:
        while model_id is not None and model_id not in needed:
            needed.add(model_id)
            model_id = models[model_id].parent
    return [TOKENIZER, DATA, *(model_id for model_id in models if model_id in needed)]


def stale_artifacts(dest: Path, config: ZooConfig, only: list[str] | None = None) -> list[str]:
    """The artifacts that a build of `config` into `dest` would (re)build, in build order.

    `only`: of those that models `only` need (see needed_artifacts); None: of the whole zoo.
    """
    recorded = read_manifest(dest).get("artifacts", {})
    needed = needed_artifacts(config, only)
    return [name for name, key in artifact_keys(config).items() if name in needed
            and (recorded.get(name, {}).get("key") != key or not _complete(dest / name, name))]


# ---- building -----------------------------------------------------------------------------------

def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def build(dest: Path, config: ZooConfig, progress: bool = True, force: bool = False, workers: int = 1,
          only: list[str] | None = None) -> Path:
    """Build what is missing or stale of the zoo into dest; returns dest.

    `only`: build just these models and their ancestors (with the tokenizer and the data), not the
    whole zoo; None: every model. `workers` models train at once, each in a process of its own
    (1: one after another in this process). Every model trains on the same fixed thread count, so
    the bits depend on neither.
    """
    dest = Path(dest).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise HarnessError(f"zoo destination is not a folder: {dest}")
    if not force and not stale_artifacts(dest, config, only):
        return dest
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise HarnessError(f"cannot create the zoo folder {dest}: {err.strerror}") from None
    # One build at a time per zoo: a second command that needs zoo models waits, then builds only
    # what the first left missing.
    with FileLock(str(dest.parent / f".{dest.name}.lock")):
        todo = needed_artifacts(config, only) if force else stale_artifacts(dest, config, only)
        if todo:
            _Builder(dest, config, progress).run(todo, workers)
    return dest


class _Builder:
    """Builds the artifacts named in `todo`, recording each in the manifest as it finishes."""

    def __init__(self, dest: Path, config: ZooConfig, progress: bool):
        self.dest, self.config, self.progress = dest, config, progress
        self.definition = definition_hash(config)
        self.keys = artifact_keys(config, self.definition)
        self.records = read_manifest(dest).get("artifacts", {})

    def run(self, todo: list[str], workers: int) -> None:
        if TOKENIZER in todo:
            self._record(TOKENIZER, self._build_tokenizer)
        if DATA in todo:
            self._record(DATA, self._build_data)
        models = [model for model in zoo_models(self.config) if model.id in todo]
        if models:
            self._train(models, workers)

    def _train(self, models: list[ZooModel], workers: int) -> None:
        """Train each model once its parent is in place, `workers` at a time, recording each as it ends."""
        from tqdm.auto import tqdm

        workers = min(workers, len(models))
        waiting = list(models)  # in training order: a parent comes before its children
        running: dict[Future, tuple[ZooModel, Path]] = {}
        show_steps = self.progress and workers == 1  # parallel step bars would overwrite each other
        bar = tqdm(total=len(models), desc="zoo models", unit="model", disable=not self.progress)
        try:
            with _training_pool(workers) as pool:
                while waiting or running:
                    training = [model for model, _ in running.values()]
                    for model in ready_to_train(waiting, training)[:workers - len(running)]:
                        waiting.remove(model)
                        training.append(model)
                        bar.set_postfix_str("training " + ", ".join(m.id for m in training))
                        folder = self._temporary_folder(model.id)
                        job = pool.submit(train_into, model, self.config, self.dest, folder, show_steps)
                        running[job] = (model, folder)
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for job in finished:
                        model, folder = running.pop(job)
                        self._move_into_place(model.id, folder, job.result())
                        bar.update()
        finally:  # the pool has stopped, so no worker still writes into a temporary folder
            bar.close()
            for folder in self.dest.glob(f".*.tmp-{os.getpid()}"):
                shutil.rmtree(folder, ignore_errors=True)

    def _record(self, name: str, build_into) -> None:
        """Build one artifact in this process into a temporary folder, then move it into place."""
        folder = self._temporary_folder(name)
        started = time.perf_counter()
        try:
            details = build_into(folder) or {}
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._move_into_place(name, folder, {"seconds": round(time.perf_counter() - started, 2), **details})

    def _temporary_folder(self, name: str) -> Path:
        folder = self.dest / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        return folder

    def _move_into_place(self, name: str, folder: Path, details: dict) -> None:
        """Replace the artifact's folder by the finished temporary one and record it in the manifest."""
        final = self.dest / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(folder, final)
        self.records[name] = {"key": self.keys[name], **details}
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

    # ---- the artifacts built in this process ----

    def _build_tokenizer(self, folder: Path) -> dict:
        from harness.zoo.corpora import tokenizer_texts
        from harness.zoo.tokenizer import train_tokenizer

        tokenizer = train_tokenizer(tokenizer_texts(self.config), self.config.shape.vocab_size)
        tokenizer.save_pretrained(str(folder))
        return {"vocab_size": len(tokenizer)}

    def _build_data(self, folder: Path) -> dict:
        from harness.zoo.evaldata import write_eval_data

        write_eval_data(folder, self.config)
        return {"files": sum(1 for path in folder.rglob("*") if path.is_file())}


# ---- training, in a worker process or in this one ------------------------------------------------

def ready_to_train(waiting: list[ZooModel], training: list[ZooModel]) -> list[ZooModel]:
    """The waiting models whose parent is neither waiting nor training, so it is in place."""
    unfinished = {model.id for model in waiting + training}
    return [model for model in waiting if model.parent not in unfinished]


class _InThisProcess(Executor):
    """Runs each job at once when it is submitted: one worker needs no process of its own."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        job: Future = Future()
        try:
            job.set_result(fn(*args, **kwargs))
        except Exception as err:  # like a worker's error: raised by job.result()
            job.set_exception(err)
        return job


def _training_pool(workers: int) -> Executor:
    if workers <= 1:
        return _InThisProcess()
    # spawned, not forked: a forked child inherits torch's and the tokenizer's thread pools broken
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_quiet_worker)


def _quiet_worker() -> None:
    """Workers show no progress bars: theirs would overwrite each other and the build's own."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def train_into(model: ZooModel, config: ZooConfig, dest: Path, folder: Path, progress: bool = False) -> dict:
    """Train one model from its parent's folder in dest, save it into folder; returns its manifest details:
    training time and losses, the held-out loss per language it relates to (heldout.py), and for a
    stage with checkpoints (CT) the tokens seen, by the model and at each checkpoint
    (folder/checkpoints/step<N>, moved into place with the model).

    Everything it needs is read from disk, so it runs the same in a worker process as in this one.
    """
    from harness.zoo.heldout import heldout_losses
    from harness.zoo.tokenizer import load_tokenizer
    from harness.zoo.train import load_model, save_model

    started = time.perf_counter()
    tokenizer = load_tokenizer(dest / TOKENIZER)
    parent = load_model(dest / model.parent) if model.parent else None
    if model.kind == "lora":
        return train_adapter_into(model, config, tokenizer, parent, folder, progress) | {
            "seconds": round(time.perf_counter() - started, 2)}
    network, losses = train_zoo_model(model, config, tokenizer, parent, progress, checkpoints_into=folder / CHECKPOINTS)
    save_model(network, tokenizer, folder)
    heldout = heldout_losses(network, tokenizer, model, config)
    head = max(1, len(losses) // 10)
    return {"seconds": round(time.perf_counter() - started, 2), "steps": len(losses),
            "first_loss": round(sum(losses[:head]) / head, 4), "final_loss": round(sum(losses[-head:]) / head, 4),
            "heldout_loss": heldout, **checkpoint_record(stage_of(config, model))}


def train_adapter_into(model: ZooModel, config: ZooConfig, tokenizer, base, folder: Path, progress: bool) -> dict:
    """Train one of the paper's adapters over base and save it (adapters.py); its manifest details:
    the optimisation's own wall time, steps and examples (the maintenance view compares them)."""
    from harness.zoo.adapters import adapter_seed, save_adapter, train_adapter
    from harness.zoo.config import COMBINED
    from harness.zoo.heldout import heldout_losses

    langs = config.languages if model.task_lang == COMBINED else (model.task_lang,)
    adapter = train_adapter(config, tokenizer, base, {lang: 1 for lang in langs}, adapter_seed(config, model.id),
                            desc=model.id, progress=progress)
    save_adapter(adapter, folder)
    head = max(1, len(adapter.losses) // 10)
    return {"train_seconds": adapter.train_seconds, "steps": len(adapter.losses), "examples": adapter.examples,
            "rank": config.lora.rank, "first_loss": round(sum(adapter.losses[:head]) / head, 4),
            "final_loss": round(sum(adapter.losses[-head:]) / head, 4),
            "heldout_loss": heldout_losses(adapter.network.get_base_model(), tokenizer, model, config)}


def checkpoint_record(stage: Stage) -> dict:
    """A model's tokens seen and its checkpoints', for the manifest; {} for a stage without checkpoints."""
    if not stage.checkpoints:
        return {}
    return {"tokens": stage.tokens_after(stage.steps),
            "checkpoints": [{"label": checkpoint_label(step), "step": step, "tokens": stage.tokens_after(step)}
                            for step in stage.checkpoints]}


def train_zoo_model(model: ZooModel, config: ZooConfig, tokenizer, parent=None, progress: bool = False,
                    checkpoints_into: Path | None = None):
    """Train one zoo model from its parent (None for base); returns (model, per-step losses).

    The same bits on any machine: seeded data and initialisation, and a fixed thread count.
    `checkpoints_into`: save the stage's intermediate checkpoints there (`step<N>/`), which changes
    no bit of the trained model.
    """
    from harness.zoo.corpora import continued_documents, english_documents, sft_examples
    from harness.zoo.generators import Writer
    from harness.zoo.train import lm_batches, new_model, pack_documents, save_model, task_batches, train, training_threads

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
    with training_threads():
        network = parent if parent is not None else new_model(config.shape, tokenizer, seed)
        save = None if checkpoints_into is None else (
            lambda step: save_model(network, tokenizer, checkpoints_into / checkpoint_label(step)))
        losses = train(network, batches, stage, seed, desc=model.id, progress=progress, on_checkpoint=save)
    return network, losses
