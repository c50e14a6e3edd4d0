"""Cosine similarity between language vectors, streamed in bounded memory (Dmonte et al., Figure 3).

A model's language vector is what it adds to a shared base model, flattened over the base's tensors:

- a LoRA adapter (merges.lora): ΔW = scale · B @ A for each module it adapts, zero elsewhere;
- a full model: its task vector W - W_base, every tensor.

    cos(i, j) = <v_i, v_j> / (|v_i| |v_j|)

The Gram matrix G[i, j] = <v_i, v_j> is summed tensor by tensor in float64 (a full model's row
block is multiplied in float32 first), without ever holding a whole vector, and for adapters
without ever forming an out x in product:

- two adapters: <s_i B_i A_i, s_j B_j A_j> = s_i s_j · sum((B_i^T B_j) ⊙ (A_i A_j^T)), r_i x r_j;
- an adapter and a full model: <s B A, D> = s · sum(B ⊙ (D A^T)), on each row block of D;
- two full models: the dot product of their task vectors, on each row block.

Full models and the base are read a row block (at most BLOCK_ELEMENTS values) at a time, so the
working memory is one block per full model plus the base, plus one module's factors per adapter,
whatever the size of the models. Every problem (different tensors or shapes, a vector that is
zero) is a one-line MergeError naming the model and the tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from merges.errors import MergeError
from merges.io import Checkpoint
from merges.lora import LoraAdapter, is_adapter_folder

BLOCK_ELEMENTS = 1 << 22  # values per row block of a full model's task vector (16 MB in float32)


@dataclass(frozen=True)
class LowRank:
    """One adapter module's ΔW = scale · b @ a, kept factored (b: out x r, a: r x in)."""

    b: torch.Tensor
    a: torch.Tensor
    scale: float

    def dense(self) -> torch.Tensor:
        return self.scale * (self.b @ self.a)


def inner_low_rank(x: LowRank, y: LowRank) -> float:
    """<x, y> of two factored ΔWs of one shape: sum((B_x^T B_y) ⊙ (A_x A_y^T)) · s_x s_y."""
    b_x, a_x, b_y, a_y = (t.double() for t in (x.b, x.a, y.b, y.a))
    return float(((b_x.T @ b_y) * (a_x @ a_y.T)).sum()) * x.scale * y.scale


def inner_low_rank_dense(x: LowRank, dense: torch.Tensor) -> torch.Tensor:
    """<x, d> for a factored ΔW x and a stack of dense tensors d (k x out x in): k values, float64.

    d @ A^T is formed in d's dtype (float32 for task-vector blocks), the rest in float64."""
    projected = dense @ x.a.to(dense.dtype).T  # k x out x r
    return (projected.double() * x.b.double()).sum(dim=(1, 2)) * x.scale


@dataclass(frozen=True)
class Similarity:
    names: list[str]
    gram: torch.Tensor  # float64, n x n: <v_i, v_j>
    base: str | None  # the base model the full models' task vectors are taken against
    bytes_read: int  # tensor bytes read from disk (for time-per-GB measurements)

    @property
    def norms(self) -> torch.Tensor:
        return self.gram.diagonal().sqrt()

    @property
    def cosine(self) -> torch.Tensor:
        norms = self.norms
        return self.gram / (norms[:, None] * norms[None, :])


@dataclass
class _Models:
    """The checked inputs: adapters and full models by name, the base, and the tensors to visit."""

    order: list[str]
    adapters: dict[str, LoraAdapter]
    full: dict[str, Checkpoint]
    base: Checkpoint | None
    shapes: dict[str, tuple[int, ...]]  # tensor -> shape, over the whole vector space


def similarity(models: dict[str, Path], base: tuple[str, Path] | None = None,
               progress: bool = False) -> Similarity:
    """The Gram matrix of the models' language vectors; a folder holding an adapter is read as one.

    `base` (name, folder) is needed when a full model is among `models`; with adapters only it
    is optional and, when given, every adapter is checked against its shapes."""
    checked = _open_models(models, base)
    index = {name: i for i, name in enumerate(checked.order)}
    gram = torch.zeros(len(index), len(index), dtype=torch.float64)
    total = sum(_tensor_bytes(checked, tensor) for tensor in checked.shapes)
    from tqdm import tqdm

    with tqdm(total=total, desc="language vectors", unit="B", unit_scale=True, disable=not progress) as bar:
        for tensor in checked.shapes:
            _add_tensor(checked, tensor, index, gram, bar.update)
    _check_nonzero(checked, gram)
    return Similarity(checked.order, gram, base[0] if base else None, total)


# ---- opening and checking --------------------------------------------------------------------

def _open_models(models: dict[str, Path], base: tuple[str, Path] | None) -> _Models:
    if len(models) < 2:
        raise MergeError(f"similarity needs at least two models, got {len(models)}")
    adapters = {name: LoraAdapter(name, folder) for name, folder in models.items() if is_adapter_folder(folder)}
    full = {name: Checkpoint(name, folder) for name, folder in models.items() if name not in adapters}
    if full and base is None:
        raise MergeError(f"model {next(iter(full))!r} is a full model: its task vector needs a base model")
    base_checkpoint = Checkpoint(*base) if base is not None else None
    if base_checkpoint is not None:
        shapes = {name: info.shape for name, info in base_checkpoint.tensors.items()}
        for checkpoint in full.values():
            _check_same_tensors(checkpoint, shapes, base_checkpoint.name)
        for adapter in adapters.values():
            adapter.check_base(shapes, base_checkpoint.name)
        if not full:  # adapters only: their modules span the space, the rest of the base is zero in all
            shapes = {name: shape for name, shape in shapes.items() if any(name in a.modules for a in adapters.values())}
    else:
        shapes = _adapter_shapes(adapters)
    return _Models(list(models), adapters, full, base_checkpoint, dict(sorted(shapes.items())))


def _check_same_tensors(checkpoint: Checkpoint, shapes: dict[str, tuple[int, ...]], base_name: str) -> None:
    """A task vector is W - W_base tensor by tensor: the model must have the base's tensors and shapes."""
    own = {name: info.shape for name, info in checkpoint.tensors.items()}
    for name in sorted(set(shapes) | set(own)):
        if name not in own:
            raise MergeError(f"model {checkpoint.name!r} lacks tensor {name} of base model {base_name!r}")
        if name not in shapes:
            raise MergeError(f"model {checkpoint.name!r} has tensor {name}, which base model {base_name!r} lacks")
        if own[name] != shapes[name]:
            raise MergeError(f"model {checkpoint.name!r}: tensor {name} is {list(own[name])} but base model "
                             f"{base_name!r} has {list(shapes[name])}")


def _adapter_shapes(adapters: dict[str, LoraAdapter]) -> dict[str, tuple[int, ...]]:
    """The modules of adapters compared without a base: a module two adapters change has one shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    owner: dict[str, str] = {}
    for adapter in adapters.values():
        for target, module in adapter.modules.items():
            if target in shapes and shapes[target] != module.shape:
                raise MergeError(f"adapter {adapter.name!r}: ΔW of {target} is {list(module.shape)} but adapter "
                                 f"{owner[target]!r}'s is {list(shapes[target])}")
            shapes.setdefault(target, module.shape)
            owner.setdefault(target, adapter.name)
    return shapes


def _check_nonzero(checked: _Models, gram: torch.Tensor) -> None:
    for i, name in enumerate(checked.order):
        if not gram[i, i] > 0:
            against = f" (it equals base model {checked.base.name!r})" if name in checked.full else ""
            raise MergeError(f"model {name!r}: its language vector is zero{against}, so its cosine similarity is undefined")


# ---- the Gram matrix, tensor by tensor -------------------------------------------------------

def _tensor_bytes(checked: _Models, tensor: str) -> int:
    """Bytes of `tensor` read from disk: the base's and every full model's copy, each adapter's factors."""
    total = 0
    if checked.full:
        readers = [checked.base, *checked.full.values()]
        total += sum(math.prod(r.tensors[tensor].shape) * r.tensors[tensor].dtype.itemsize for r in readers)
    for adapter in checked.adapters.values():
        module = adapter.modules.get(tensor)
        if module is not None:
            total += module.rank * sum(module.shape) * 4  # counted as float32
    return total


def _add_tensor(checked: _Models, tensor: str, index: dict[str, int], gram: torch.Tensor, advance) -> None:
    factored = {}
    for name, adapter in checked.adapters.items():
        if tensor in adapter.modules:  # in float64 once here, not once per pair
            b, a = adapter.factors(tensor)
            factored[name] = LowRank(b.double(), a.double(), adapter.modules[tensor].scale)
    names = list(factored)
    for n, name_x in enumerate(names):
        for name_y in names[n:]:
            value = inner_low_rank(factored[name_x], factored[name_y])
            gram[index[name_x], index[name_y]] += value
            if name_x != name_y:
                gram[index[name_y], index[name_x]] += value
    advance(sum(f.b.numel() + f.a.numel() for f in factored.values()) * 4)  # read as float32
    if checked.full:
        _add_full_blocks(checked, tensor, factored, index, gram, advance)


def _add_full_blocks(checked: _Models, tensor: str, factored: dict[str, LowRank], index: dict[str, int],
                     gram: torch.Tensor, advance) -> None:
    """The full models' task vectors of `tensor`, a row block at a time, against each other and the adapters.

    Each block's deltas are formed in float32 (one pass per model: the subtraction converts) and its
    products summed in float32 by BLAS; the per-block sums are added in float64. Float64 throughout
    took about twice as long in bench/similarity_bench.py, for digits far below what a cosine is read to."""
    full = list(checked.full)
    rows = torch.tensor([index[name] for name in full])
    shape = checked.shapes[tensor]
    row_size = math.prod(shape[1:]) if len(shape) > 1 else 1
    n_rows = shape[0] if shape else 1
    step = max(1, BLOCK_ELEMENTS // row_size)
    readers = [checked.base, *checked.full.values()]
    bytes_per_row = sum(row_size * r.tensors[tensor].dtype.itemsize for r in readers)
    buffer = torch.empty(len(full), min(step, n_rows) * row_size, dtype=torch.float32)
    for start in range(0, n_rows, step):
        stop = min(n_rows, start + step)
        flat = buffer[:, : (stop - start) * row_size]
        base = _read_block(checked.base, tensor, start, stop).float()
        for i, name in enumerate(full):
            torch.sub(_read_block(checked.full[name], tensor, start, stop), base, out=flat[i])
        gram[rows[:, None], rows[None, :]] += (flat @ flat.T).double()
        for name, low_rank in factored.items():
            piece = LowRank(low_rank.b[start:stop], low_rank.a, low_rank.scale)
            values = inner_low_rank_dense(piece, flat.reshape(len(full), stop - start, row_size))
            gram[rows, index[name]] += values
            gram[index[name], rows] += values
        advance(bytes_per_row * (stop - start))


def _read_block(checkpoint: Checkpoint, tensor: str, start: int, stop: int) -> torch.Tensor:
    """Rows start..stop of a tensor, flattened, in its stored dtype (a scalar is one row)."""
    if not checkpoint.tensors[tensor].shape:
        return checkpoint.read(tensor).reshape(1)
    return checkpoint.read_rows(tensor, start, stop).reshape(-1)
