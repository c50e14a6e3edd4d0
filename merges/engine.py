"""The merge engine: checks the inputs, then streams tensor by tensor through a merge method.

`run_merge(recipe, resolve, out_dir)`:
1. resolves every model name of the recipe to a local folder and reads only headers;
2. checks, before anything is written, that the models have one architecture and the same
   tensors with the same shapes (vocabulary tensors excepted, see below): any mismatch is one
   error naming the tensor and the models;
3. merges the tensors on a thread pool (a tensor is read from each input, merged on the chosen
   device, written at its place in the output shard, and dropped; TIES on the CPU writes each
   slab of a tensor as the fused kernel finishes it), with a progress bar; every merged tensor
   is checked finite (`all_finite`, or the kernel as it computes), and one that is not, from
   finite inputs, is an error naming the recipe parameter likely at fault (`overflow_culprit`);
4. writes config, generation config, tokenizer, the recipe and, for methods that elect signs,
   `conflict_stats.json`, all in a temporary folder renamed to `out_dir` when complete.

Adapters as inputs. A model folder that is a PEFT LoRA adapter (`merges.lora`) is read as the
full model it makes over the recipe's base_model, base + ΔW one tensor at a time
(`AdapterCheckpoint`), checked against the base before anything is written; a recipe with an
adapter but no base_model is an error. With `output: {format: adapter, rank: R}` the merge is
written as a LoRA adapter instead (`merges.adapter_output`): only the tensors that may change
are merged, the adapted modules are factorised, any other tensor must stay the base's.

An error, Ctrl-C or SIGTERM stops the merge at once (queued tensors are dropped, running ones
stop at their next write) and removes the temporary folder.

Extended vocabularies. A CT model may have more embedding / lm_head rows than the others
(`*embed_tokens.weight`, `lm_head.weight`). The rows every model has are merged as usual; the
extra rows come unchanged from the vocabulary source: `tokenizer_source` if the recipe names
one, else the first model with the most rows (base first, then recipe order). Its tokenizer and
generation config are copied, and the output config's `vocab_size` is its row count. A model
with more rows than the vocabulary source is an error (its extra tokens would be unreachable).

Tied embeddings. A model saved with tied embeddings stores no `lm_head.weight`: its output layer
is its embedding. When some model of the merge stores an `lm_head.weight` (say a CT model saved
untied over a tied base), a model without one reads its embedding in its place, unless its config
says `tie_word_embeddings: false` (then its lm_head is missing: an error). The output then stores
the merged lm_head, and its config says `tie_word_embeddings: false`. When no model stores one,
neither does the output.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch
import yaml

from merges.adapter_output import AdapterWriter, adapter_config
from merges.errors import MergeError
from merges.io import (Checkpoint, MergeCancelled, PlannedTensor, ShardedWriter, atomic_folder, copy_tokenizer_files,
                       write_config)
from merges.kernels import ties_cpu
from merges.lora import AdapterCheckpoint, is_adapter_folder
from merges.methods import METHODS, MethodParams, ModelCounts
from merges.recipe import Recipe, load_recipe
from merges.stats import STATS_FILE, conflict_stats, write_stats

VOCAB_TENSOR_SUFFIXES = ("embed_tokens.weight", "lm_head.weight")
LM_HEAD = "lm_head.weight"
EMBEDDING_SUFFIX = "embed_tokens.weight"
RECIPE_FILE = "merge_recipe.yaml"
DEFAULT_MEMORY_BUDGET = 1_500_000_000  # bytes of estimated working memory for tensors in flight
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                "float64": torch.float64}


@dataclass
class MergeResult:
    path: Path
    stats: dict | None


@dataclass(frozen=True)
class TensorJob:
    """What the engine needs to merge one tensor."""

    name: str
    out: PlannedTensor
    shared_rows: int | None  # vocabulary tensors: rows every model has (None: no row split)
    cpu_kernel: bool = False  # merged by the fused CPU kernel for TIES (`merges.kernels.ties_cpu`)


def is_vocab_tensor(name: str) -> bool:
    return name.endswith(VOCAB_TENSOR_SUFFIXES)


def default_threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class Merge:
    """One merge in progress: the recipe's checkpoints and the plan of the output."""

    def __init__(self, recipe: Recipe, resolve: Callable[[str], Path], device: str, dtype: str | None):
        self.recipe = recipe
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise MergeError("--device cuda: no CUDA GPU is available to torch here")
        self.checkpoints = self._open_all(resolve)
        self.base = self.checkpoints[recipe.base_model] if recipe.uses_base else None
        self.inputs = [self.checkpoints[spec.model] for spec in recipe.models]
        self.merged_models = ([self.base] if self.base else []) + self.inputs
        self._read_missing_lm_heads_from_embeddings()
        self.out_dtype = TORCH_DTYPES[dtype or recipe.dtype] if (dtype or recipe.dtype) else None
        if recipe.output:
            self.out_dtype = torch.float32  # the adapter factorises the merged tensors, unrounded
        self._check_architectures()
        self.vocab_source = self._vocabulary_source()
        self.jobs = [self._plan(name) for name in self.merged_models[0].tensors]
        if recipe.output:
            self.adapter_targets = self._adapter_targets()
            self.jobs = [job for job in self.jobs if self._may_change(job.name)]

    def _open_all(self, resolve: Callable[[str], Path]) -> dict[str, Checkpoint]:
        """Every model the recipe names, base first: an adapter is read over the base (below)."""
        folders = {}
        for name in self.recipe.referenced_models():
            folders[name] = Path(resolve(name))
            if not folders[name].is_dir():
                raise MergeError(f"model {name!r}: folder not found: {folders[name]}")
        base_name = self.recipe.base_model
        if base_name is not None and is_adapter_folder(folders[base_name]):
            raise MergeError(f"base_model {base_name!r} is a LoRA adapter; the base must be a full model")
        checkpoints = {}
        for name, folder in folders.items():
            checkpoints[name] = self._open(name, folder, checkpoints.get(base_name))
        return checkpoints

    def _open(self, name: str, folder: Path, base: Checkpoint | None) -> Checkpoint:
        """A full model folder, or an adapter folder read as base + ΔW over the recipe's base_model."""
        if not is_adapter_folder(folder):
            return Checkpoint(name, folder)
        if base is None:
            raise MergeError(f"model {name!r} is a LoRA adapter: the recipe needs a base_model "
                             "(the model the adapter was trained on) to read it over")
        return AdapterCheckpoint(name, folder, base)

    # ---- adapter output (merges.adapter_output) ----------------------------------------------

    def _adapter_targets(self) -> dict[str, tuple[int, int]]:
        """The base tensors the input adapters change, with their shapes: the output's modules."""
        adapters = [ckpt.adapter for ckpt in self.inputs if isinstance(ckpt, AdapterCheckpoint)]
        if not adapters:
            raise MergeError("output.format adapter: no input model is a LoRA adapter, so there are no adapted "
                             "modules to write; write a full model instead")
        return {target: module.shape
                for adapter in adapters for target, module in sorted(adapter.modules.items())}

    def _may_change(self, name: str) -> bool:
        """Whether tensor `name` must be merged for an adapter output. A method over task vectors
        leaves the base where every task vector is zero, as in a tensor that every input is an
        adapter of and none adapts: those are skipped. Others are merged and, outside the adapted
        modules, checked unchanged by the writer."""
        untouched = all(isinstance(ckpt, AdapterCheckpoint) and name not in ckpt.adapter.modules
                        for ckpt in self.inputs)
        return not (self.recipe.uses_base and untouched)

    def adapter_writer(self, folder: Path) -> AdapterWriter:
        adapters = [ckpt.adapter for ckpt in self.inputs if isinstance(ckpt, AdapterCheckpoint)]
        config = adapter_config(self.recipe.output.rank, list(self.adapter_targets), adapters[0].base_model,
                                adapters[0].config.get("task_type"))
        return AdapterWriter(folder, self.checkpoints[self.recipe.base_model], self.adapter_targets,
                             self.recipe.output.rank, config)

    def _read_missing_lm_heads_from_embeddings(self) -> None:
        """Where some model stores an lm_head, a tied model (none stored) reads its embedding."""
        if not any(LM_HEAD in ckpt.tensors for ckpt in self.checkpoints.values()):
            return
        for ckpt in self.checkpoints.values():
            if LM_HEAD in ckpt.tensors:
                continue
            embeddings = [name for name in ckpt.tensors if name.endswith(EMBEDDING_SUFFIX)]
            if len(embeddings) != 1:
                continue  # not one embedding to read: the tensor check names what is missing
            if ckpt.config.get("tie_word_embeddings") is False:
                raise MergeError(f"model {ckpt.name!r} has no {LM_HEAD} although its config says "
                                 "tie_word_embeddings: false")
            ckpt.alias(LM_HEAD, embeddings[0])

    def _check_architectures(self) -> None:
        def architecture(ckpt: Checkpoint) -> str:
            names = ckpt.config.get("architectures") or []
            return ",".join(names) + f" ({ckpt.config.get('model_type')})" if names else str(ckpt.config.get("model_type"))

        first = self.merged_models[0]
        for other in self.merged_models[1:]:
            if architecture(other) != architecture(first):
                raise MergeError(f"different architectures: {first.name!r} is {architecture(first)}, "
                                   f"{other.name!r} is {architecture(other)}")
        names = set(first.tensors)
        for other in self.merged_models[1:]:
            if set(other.tensors) != names:
                extra = sorted(set(other.tensors) - names)
                missing = sorted(names - set(other.tensors))
                tensor, holder, lacker = (missing[0], first, other) if missing else (extra[0], other, first)
                raise MergeError(f"tensor {tensor} is in model {holder.name!r} but not in model {lacker.name!r}")

    def _rows(self, name: str) -> dict[str, int]:
        return {ckpt.name: ckpt.tensors[name].shape[0] for ckpt in self.merged_models}

    def _vocabulary_source(self) -> Checkpoint:
        """The model whose tokenizer (and extra vocabulary rows) the output takes."""
        if self.recipe.tokenizer_source:
            return self.checkpoints[self.recipe.tokenizer_source]
        embeddings = [name for name in self.merged_models[0].tensors if is_vocab_tensor(name)]
        if not embeddings:
            return self.merged_models[0]
        rows = self._rows(embeddings[0])
        return self.checkpoints[max(rows, key=lambda model: rows[model])]  # first of the largest

    def _plan(self, name: str) -> TensorJob:
        infos = {ckpt.name: ckpt.tensors[name] for ckpt in self.merged_models}
        first = self.merged_models[0].name
        shape, dtype = infos[first].shape, infos[first].dtype
        shared_rows = None
        if is_vocab_tensor(name) and len({info.shape for info in infos.values()}) > 1:
            shape, shared_rows = self._vocab_shape(name, infos)
        for model, info in infos.items():
            if shared_rows is None and info.shape != shape:
                raise MergeError(f"tensor {name}: shape {list(info.shape)} in model {model!r} "
                                   f"but {list(shape)} in model {first!r}")
            if info.dtype.is_floating_point != dtype.is_floating_point:
                raise MergeError(f"tensor {name}: dtype {info.dtype} in model {model!r} but {dtype} in model {first!r}")
        if dtype.is_floating_point:
            dtype = self.out_dtype or self._stored_dtype(name)
        out = PlannedTensor(name, shape, dtype)
        return TensorJob(name, out, shared_rows, self._uses_cpu_kernel(name, out))

    def _stored_dtype(self, name: str) -> torch.dtype:
        """The output's default dtype for a tensor: the first merged model's as stored; an
        adapter's is its base's (it is read in float32, see AdapterCheckpoint)."""
        first = self.merged_models[0]
        if isinstance(first, AdapterCheckpoint):
            first = self.checkpoints[self.recipe.base_model]
        return first.tensors[name].dtype

    def _vocab_shape(self, name: str, infos: dict) -> tuple[tuple[int, ...], int]:
        source = self.vocab_source.name
        if source not in infos:  # a tokenizer source outside the merged models
            infos = {**infos, source: self.vocab_source.tensors[name]}
        out_shape = infos[source].shape
        for model, info in infos.items():
            if info.shape[1:] != out_shape[1:]:
                raise MergeError(f"tensor {name}: shape {list(info.shape)} in model {model!r} "
                                   f"but {list(out_shape)} in model {source!r}")
            if info.shape[0] > out_shape[0]:
                raise MergeError(f"tensor {name}: model {model!r} has {info.shape[0]} vocabulary rows, more than "
                                   f"the vocabulary source {source!r} ({out_shape[0]}); set tokenizer_source to it")
        return out_shape, min(info.shape[0] for info in infos.values())

    # ---- merging one tensor -----------------------------------------------------------------

    def method_params(self, name: str) -> MethodParams:
        recipe = self.recipe
        protect = next((i for i, spec in enumerate(recipe.models) if spec.protect), None)
        return MethodParams(
            weights=tuple(spec.weight for spec in recipe.models),
            densities=tuple(spec.density for spec in recipe.models),
            lambda_=recipe.lambda_,
            normalize=recipe.normalize,
            consensus=recipe.consensus_method,
            slack=recipe.slack or 0.0,
            protect=protect,
            seeds=tuple(tensor_seed(recipe.seed, name, i) for i in range(len(recipe.models))),
            rescale=recipe.rescale,
            rank_bound=self._rank_bound(name),
        )

    def _rank_bound(self, name: str) -> int | None:
        """When every input is an adapter: the sum of their LoRA ranks on tensor `name`, an upper
        bound on the rank of the stacked task vectors (KnOTS takes a cheaper SVD then); else None."""
        if not all(isinstance(ckpt, AdapterCheckpoint) for ckpt in self.inputs):
            return None
        return sum(ckpt.adapter.modules[name].rank for ckpt in self.inputs if name in ckpt.adapter.modules)

    def _load(self, ckpt: Checkpoint, name: str, compute_dtype: torch.dtype | None = None) -> torch.Tensor:
        """A tensor on the device, in `compute_dtype` or (None) as stored: the methods promote inputs
        themselves, which saves a float32 copy of each bf16 input."""
        tensor = ckpt.read(name).to(self.device, compute_dtype)
        if not bool(torch.isfinite(tensor).all()):
            raise MergeError(f"tensor {name} of model {ckpt.name!r} has NaN or infinite values")
        return tensor

    def merge_into(self, job: TensorJob, writer: ShardedWriter | AdapterWriter) -> list[ModelCounts] | None:
        """Merge one tensor and write it; returns its conflict counts (methods that elect signs)."""
        if job.cpu_kernel:
            return self._merge_with_cpu_kernel(job, writer)
        counts, merged = self.merge_tensor(job)
        writer.write(job.name, merged)
        return counts

    def merge_tensor(self, job: TensorJob) -> tuple[list[ModelCounts] | None, torch.Tensor]:
        """The merged tensor (in the output dtype) and its conflict counts (methods that elect
        signs), with the method's torch function."""
        name = job.name
        if not job.out.dtype.is_floating_point:
            return self._copy_non_float(job)
        infos = [ckpt.tensors[name] for ckpt in self.merged_models]
        compute_dtype = torch.float64 if any(i.dtype == torch.float64 for i in infos) else torch.float32
        base = self._load(self.base, name, compute_dtype) if self.base else None
        tensors = [self._load(ckpt, name, None if self.base else compute_dtype) for ckpt in self.inputs]
        extra_rows = None
        if job.shared_rows is not None:
            rows = job.shared_rows
            extra_rows = self._load(self.vocab_source, name, compute_dtype)[rows:]
            base = base[:rows] if base is not None else None
            tensors = [t[:rows] for t in tensors]
        output = METHODS[self.recipe.merge_method].function(base, tensors, self.method_params(name))
        del base, tensors
        merged = output.tensor
        if extra_rows is not None:
            merged = torch.cat([merged, extra_rows])
        merged = merged.to(job.out.dtype)
        if not all_finite(merged):  # the inputs are: the recipe's parameters overflowed
            raise self.overflow_error(job)
        return output.counts, merged

    def _uses_cpu_kernel(self, name: str, out: PlannedTensor) -> bool:
        """Whether a tensor goes through the fused CPU kernel for TIES (`ties_cpu`) rather than
        the method's torch function: a TIES merge on the CPU whose inputs and output it supports.
        The one place that picks an execution backend."""
        dtypes = [ckpt.tensors[name].dtype for ckpt in self.merged_models]
        return (self.recipe.merge_method == ties_cpu.METHOD and self.device.type == "cpu"
                and ties_cpu.supports(dtypes, out.dtype) and self.recipe.output is None)  # adapters take whole tensors

    def _merge_with_cpu_kernel(self, job: TensorJob, writer: ShardedWriter) -> list[ModelCounts]:
        """TIES straight from the stored inputs into the output file, slab by slab; the kernel
        checks that the inputs are finite as it reads them."""
        name, rows = job.name, job.shared_rows
        inputs = [ckpt.read(name) for ckpt in self.merged_models]
        if rows is not None:
            inputs = [tensor[:rows] for tensor in inputs]
        itemsize = job.out.dtype.itemsize
        counts, bad = ties_cpu.merge(inputs[0], inputs[1:], self.method_params(name), job.out.dtype,
                                     lambda first, slab: writer.write(name, slab, first * itemsize))
        if bad == len(self.merged_models):
            raise self.overflow_error(job)
        if bad is not None:
            raise MergeError(f"tensor {name} of model {self.merged_models[bad].name!r} has NaN or infinite values")
        if rows is not None:
            extra = self._load(self.vocab_source, name)[rows:].to(job.out.dtype)
            if not all_finite(extra):
                raise self.overflow_error(job)
            writer.write(name, extra, inputs[0].numel() * itemsize)
        return counts

    def overflow_error(self, job: TensorJob) -> MergeError:
        """The error for a merged tensor that is not finite although every input is."""
        return MergeError(f"tensor {job.name}: the merged values are NaN or infinite although every input is "
                          f"finite; likely culprit: {overflow_culprit(self.recipe, job.out.dtype)}")

    def _copy_non_float(self, job: TensorJob) -> tuple[None, torch.Tensor]:
        tensors = [ckpt.read(job.name) for ckpt in self.merged_models]
        for ckpt, tensor in zip(self.merged_models[1:], tensors[1:]):
            if not torch.equal(tensor, tensors[0]):
                raise MergeError(f"tensor {job.name} (not floating point) differs between models "
                                   f"{self.merged_models[0].name!r} and {ckpt.name!r}")
        return None, tensors[0]


def tensor_seed(seed: int, tensor: str, model_index: int) -> int:
    """A seed per (recipe seed, tensor, model): reproducible whatever order the threads run in."""
    digest = hashlib.sha256(f"{seed}:{tensor}:{model_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite: a sum is finite only if every term is, so the exact (and
    slower: it allocates a mask) check runs only when the sum is not, say when it overflowed."""
    if not tensor.dtype.is_floating_point:
        return True
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


# How much a float16 output amplifies the risk of overflow: it holds values up to 65504 only.
FLOAT16_GAIN = 1e4


def overflow_culprit(recipe: Recipe, out_dtype: torch.dtype) -> str:
    """The recipe parameter that most amplifies the task vectors (so that finite inputs can merge
    into infinite values), named as the recipe spells it: a heuristic for the error message."""
    spec, models = recipe.spec, recipe.models
    suspects: list[tuple[float, str]] = []
    if spec.parameter("lambda"):
        suspects.append((abs(recipe.lambda_), f"parameters.lambda = {recipe.lambda_}"))
    if spec.parameter("weight"):
        weights = [model.weight for model in models]
        biggest = max(range(len(weights)), key=lambda i: abs(weights[i]))
        suspects.append((abs(weights[biggest]), f"models[{biggest}].parameters.weight = {weights[biggest]}"))
        total = sum(weights)
        if spec.parameter("normalize") and recipe.normalize and total != 0:
            suspects.append((sum(abs(w) for w in weights) / abs(total),
                             f"the models' weights {weights}, which sum to {total:g} (normalize: true divides by it)"))
    if spec.parameter("rescale") and recipe.rescale and spec.takes_density:
        kept = [i for i in range(len(models)) if models[i].density > 0]
        if kept:
            thinnest = min(kept, key=lambda i: models[i].density)
            suspects.append((1 / models[thinnest].density, f"models[{thinnest}].parameters.density = "
                                                           f"{models[thinnest].density} (rescale: true divides by it)"))
    if out_dtype == torch.float16:
        suspects.append((FLOAT16_GAIN, "dtype float16 (its largest value is 65504)"))
    gain, culprit = max(suspects, default=(0.0, ""), key=lambda suspect: suspect[0])
    dtype_name = str(out_dtype).removeprefix("torch.")
    return culprit if gain > 1 else f"dtype {dtype_name} (the merged values exceed its range)"


def run_merge(recipe: Recipe | dict | str | Path, resolve: Callable[[str], Path], out_dir: Path,
              device: str = "cpu", threads: int | None = None, progress: bool = True,
              dtype: str | None = None, max_shard_bytes: int | None = None) -> MergeResult:
    """Merge the recipe's models into a complete HF folder at `out_dir` (which must not exist)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise MergeError(f"threads must be a positive number of merge threads, got {threads!r}")
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    if dtype is not None and dtype not in TORCH_DTYPES:
        raise MergeError(f"dtype must be one of {', '.join(TORCH_DTYPES)}, got {dtype!r}")
    merge = Merge(recipe, resolve, device, dtype)
    out_dir = Path(out_dir)
    what = "the merged adapter" if recipe.output else "the merged model"
    with sigterm_interrupts(), atomic_folder(out_dir, what) as temp:
        if recipe.output:
            writer = merge.adapter_writer(temp)
        else:
            plan = [job.out for job in merge.jobs]
            writer = ShardedWriter(temp, plan, **({"max_shard_bytes": max_shard_bytes} if max_shard_bytes else {}))
        try:
            counts = _merge_all(merge, writer, threads or default_threads(), progress)
        finally:
            writer.close()
        writer.finish()
        _write_side_files(merge, temp)
        stats = None
        if recipe.spec.elects_signs:
            stats = conflict_stats(recipe, counts)
            write_stats(stats, temp / STATS_FILE)
    return MergeResult(out_dir, stats)


@contextlib.contextmanager
def sigterm_interrupts():
    """Within the block, SIGTERM raises KeyboardInterrupt as Ctrl-C does, so that a terminated
    merge removes its partial folder on the way out (SIGTERM's default ends the process on the
    spot). Only where SIGTERM has its default action and in the main thread (the only one that
    may set signal handlers): a program that handles SIGTERM itself keeps its handler."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def merge(recipe: Recipe | dict | str | Path, models: Mapping[str, str | Path] | Callable[[str], Path] | None,
          out_dir: str | Path, **options) -> MergeResult:
    """`run_merge` for library users: `models` maps the recipe's model names to folders, as a
    mapping or a function (None: the names are folders). `options` are run_merge's (device,
    threads, progress, dtype, max_shard_bytes)."""
    return run_merge(recipe, _resolver(models), Path(out_dir), **options)


def _resolver(models: Mapping[str, str | Path] | Callable[[str], Path] | None) -> Callable[[str], Path]:
    if models is None:
        return Path
    if callable(models):
        return models

    def resolve(name: str) -> Path:
        if name not in models:
            raise MergeError(f"model {name!r} of the recipe is not among the models given ({', '.join(models)})")
        return Path(models[name])

    return resolve


class MemoryBudget:
    """Lets a tensor start only while the estimated working memory of the running ones fits.

    Small tensors run side by side; a tensor bigger than the budget runs alone. Tensors start in
    the order they ask (first come, first served): otherwise a stream of small tensors could keep
    a big one waiting until the end, and the big one would then run on top of the memory that
    the small ones' threads left fragmented in the allocator. With jobs submitted biggest first,
    the big tensors run first, one at a time, and peak memory stays near that of the largest
    tensor's merge whatever the thread count.
    """

    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.used = 0
        self.tickets = 0      # handed out, one per reserve()
        self.next_ticket = 0  # the ticket allowed to start next
        self.condition = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, amount: int):
        with self.condition:
            ticket, self.tickets = self.tickets, self.tickets + 1
            self.condition.wait_for(lambda: ticket == self.next_ticket
                                    and (self.used == 0 or self.used + amount <= self.limit))
            self.used += amount
            self.next_ticket += 1
            self.condition.notify_all()  # the next ticket may fit beside this one
        try:
            yield
        finally:
            with self.condition:
                self.used -= amount
                self.condition.notify_all()


def working_bytes(merge: Merge, job: TensorJob) -> int:
    """Rough working memory of one tensor's merge: inputs, stacked task vectors, a few temporaries
    (with the CPU kernel: the mapped inputs; its own buffers are one output slab and the
    magnitudes it collects near a trim threshold, typically under 1% of the entries)."""
    count = job.out.nbytes // max(1, job.out.dtype.itemsize)
    if job.cpu_kernel:
        return count * sum(ckpt.tensors[job.name].dtype.itemsize for ckpt in merge.merged_models)
    return count * 4 * (2 * len(merge.inputs) + 5)


def estimated_peak_bytes(merge: Merge, threads: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    """The most estimated working memory (`working_bytes`) of tensors in flight at once: at most
    `threads` run side by side, only while their sum fits the budget, and a bigger one runs alone."""
    sizes = sorted((working_bytes(merge, job) for job in merge.jobs), reverse=True)
    return max(sizes[0], min(memory_budget, sum(sizes[:threads]))) if sizes else 0


def _merge_all(merge: Merge, writer: ShardedWriter | AdapterWriter, threads: int, progress: bool,
               memory_budget: int = DEFAULT_MEMORY_BUDGET) -> dict[str, list[ModelCounts]]:
    """Merge every tensor on a pool of threads; the first error stops the rest and is raised."""
    from tqdm import tqdm

    counts: dict[str, list[ModelCounts]] = {}
    lock = threading.Lock()
    budget = MemoryBudget(memory_budget)

    def work(job: TensorJob) -> None:
        with budget.reserve(working_bytes(merge, job)):
            if writer.cancelled:  # the merge stopped while this tensor waited its turn
                return
            try:
                tensor_counts = merge.merge_into(job, writer)
            except BaseException:
                writer.cancel()  # at once: this thread would otherwise take the next tensor
                raise
        with lock:
            if tensor_counts is not None:
                counts[job.name] = tensor_counts
            bar.update(1)

    total_bytes = sum(job.out.nbytes for job in merge.jobs)
    peak = estimated_peak_bytes(merge, threads, memory_budget)
    desc = f"{merge.recipe.merge_method} merge ({total_bytes / 1e9:.2f} GB out, ~{peak / 1e9:.2f} GB working memory)"
    # Big tensors first, so the pool does not end waiting on one large tensor.
    jobs = sorted(merge.jobs, key=lambda job: -job.out.nbytes)
    with tqdm(total=len(jobs), desc=desc, unit="tensor", disable=not progress) as bar:
        pool = ThreadPoolExecutor(max_workers=threads)
        try:
            futures = [pool.submit(work, job) for job in jobs]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.exception() is not None for f in done):
                raise _stopping_error(futures)
        except BaseException:
            # An error, Ctrl-C or SIGTERM stops the merge at once: queued tensors are dropped and
            # running ones stop at their next write (leaving the pool's `with` would first finish
            # the whole queue). The wait is for the running threads only: they write into files
            # that the caller closes and removes next.
            writer.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
    return {job.name: counts[job.name] for job in merge.jobs if job.name in counts}


def _stopping_error(futures: list) -> BaseException:
    """The error that stopped the merge. A failing tensor cancels the writer, and a tensor running
    beside it can finish first with MergeCancelled; so wait for the rest (running ones stop at
    their next write, queued ones return at once) and name the first error that is not one."""
    wait(futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    return next((e for e in errors if not isinstance(e, MergeCancelled)), errors[0])


def _write_side_files(merge: Merge, folder: Path) -> None:
    """The recipe; for a full model also its config, generation config and tokenizer."""
    (folder / RECIPE_FILE).write_text(yaml.safe_dump(merge.recipe.to_dict(), sort_keys=False), encoding="utf-8")
    if merge.recipe.output:
        return
    config_source = merge.merged_models[0]
    vocab_size = None
    embeddings = [job for job in merge.jobs if is_vocab_tensor(job.name)]
    if embeddings:
        vocab_size = embeddings[0].out.shape[0]
    floats = [job.out.dtype for job in merge.jobs if job.out.dtype.is_floating_point]
    untied = any(job.name == LM_HEAD for job in merge.jobs)
    write_config(config_source, folder, floats[0] if floats else torch.float32, vocab_size, untied)
    copy_tokenizer_files(merge.vocab_source, folder)
