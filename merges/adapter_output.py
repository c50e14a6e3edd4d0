"""Writing a merge as a PEFT LoRA adapter (recipe `output: {format: adapter, rank: R}`).

The merge runs as usual, tensor by tensor; instead of the merged tensor, each module that the
input adapters adapt is stored as a rank-R factorisation of its merged language vector
ΔW = merged - base: the truncated SVD ΔW ≈ U_R Σ_R V_R^T, with lora_B = U_R Σ_R (out x R) and
lora_A = V_R^T (R x in), and lora_alpha = r = R so that PEFT's scale alpha/r is 1. A merge of
adapters is in general not of low rank (TIES trims and elects entry by entry), so the
factorisation loses what lies beyond rank R: `adapter_reconstruction.json` reports, per module
and overall, the relative Frobenius error ||ΔW - B A||_F / ||ΔW||_F (0 at full rank).

Any other tensor must come out as the base's: an adapter cannot carry it. One that would change
(a full model among the inputs, or a linear merge whose weights do not sum to 1) is a one-line
error naming it. The folder holds `adapter_config.json`, `adapter_model.safetensors`,
`adapter_reconstruction.json` and the recipe, written into the merge's temporary folder and
renamed with it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from merges.errors import MergeError
from merges.io import Checkpoint, MergeCancelled
from merges.lora import A_SUFFIX, ADAPTER_CONFIG, ADAPTER_WEIGHTS, B_SUFFIX, KEY_PREFIX

RECONSTRUCTION_FILE = "adapter_reconstruction.json"
# How close a tensor outside the adapted modules must stay to the base's: rounding of a weighted
# mean of identical tensors (linear), not a change.
UNCHANGED_RTOL = 1e-5
UNCHANGED_ATOL = 1e-8


@dataclass(frozen=True)
class Factorisation:
    """One module's rank-R factors and what the truncation lost."""

    lora_a: torch.Tensor   # R x in
    lora_b: torch.Tensor   # out x R
    residual: float        # ||ΔW - B A||_F^2
    norm: float            # ||ΔW||_F^2


def module_name(target: str) -> str:
    """model.layers.0.self_attn.q_proj.weight -> model.layers.0.self_attn.q_proj"""
    return target.removesuffix(".weight")


def factorise(delta: torch.Tensor, rank: int) -> Factorisation:
    """The best rank-`rank` factorisation of ΔW (Eckart-Young: the truncated SVD)."""
    u, singular, vh = torch.linalg.svd(delta.float(), full_matrices=False)
    squares = singular.double() ** 2
    return Factorisation(lora_a=vh[:rank].contiguous(), lora_b=(u[:, :rank] * singular[:rank]).contiguous(),
                         residual=float(squares[rank:].sum()), norm=float(squares.sum()))


def check_rank(targets: dict[str, tuple[int, int]], rank: int) -> None:
    """A LoRA of rank R needs R <= min(out, in) for every module: else B A cannot be a factorisation."""
    for target, (rows, cols) in targets.items():
        if rank > min(rows, cols):
            raise MergeError(f"output.rank {rank} exceeds the rank of module {module_name(target)} "
                             f"({rows} x {cols}, at most {min(rows, cols)})")


class AdapterWriter:
    """Receives merged tensors from the engine (as `ShardedWriter` does) and keeps, per adapted
    module, the factors of merged - base; `finish` writes the adapter folder."""

    def __init__(self, folder: Path, base: Checkpoint, targets: dict[str, tuple[int, int]], rank: int,
                 adapter_config: dict):
        check_rank(targets, rank)
        self.folder = folder
        self.base = base
        self.targets = targets
        self.rank = rank
        self.adapter_config = adapter_config
        self.factors: dict[str, Factorisation] = {}
        self.lock = threading.Lock()
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def write(self, name: str, tensor: torch.Tensor, byte_offset: int = 0) -> None:
        if self.cancelled:
            raise MergeCancelled(f"tensor {name}: the merge was cancelled")
        if byte_offset:
            raise RuntimeError(f"tensor {name}: an adapter output takes whole tensors")
        base = self.base.read(name).to(tensor.device, torch.float32)
        merged = tensor.float()
        if name not in self.targets:
            if not torch.allclose(merged, base, rtol=UNCHANGED_RTOL, atol=UNCHANGED_ATOL):
                change = float((merged - base).abs().max())
                raise MergeError(f"output.format adapter: tensor {name} would change (by up to {change:.3g}) but no "
                                 "input adapter adapts it, so an adapter cannot carry it; write a full model instead")
            return
        factors = factorise(merged - base, self.rank)
        with self.lock:
            self.factors[name] = Factorisation(factors.lora_a.cpu(), factors.lora_b.cpu(), factors.residual,
                                               factors.norm)

    def close(self) -> None:
        pass

    def finish(self) -> None:
        """Write the adapter's config, factors and reconstruction report into the folder."""
        missing = sorted(set(self.targets) - set(self.factors))
        if missing:
            raise RuntimeError(f"adapted module {missing[0]} was not merged")
        tensors = {}
        for target in sorted(self.factors):
            stem = KEY_PREFIX + module_name(target)
            tensors[stem + A_SUFFIX] = self.factors[target].lora_a
            tensors[stem + B_SUFFIX] = self.factors[target].lora_b
        save_file(tensors, str(self.folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (self.folder / ADAPTER_CONFIG).write_text(json.dumps(self.adapter_config, indent=2) + "\n", encoding="utf-8")
        (self.folder / RECONSTRUCTION_FILE).write_text(json.dumps(self.reconstruction(), indent=2) + "\n",
                                                       encoding="utf-8")

    def reconstruction(self) -> dict:
        """Relative Frobenius error of the rank-R factors, per module and over all modules."""
        def relative(residual: float, norm: float) -> float:
            return (residual / norm) ** 0.5 if norm > 0 else 0.0

        modules = {module_name(t): relative(f.residual, f.norm) for t, f in sorted(self.factors.items())}
        overall = relative(sum(f.residual for f in self.factors.values()), sum(f.norm for f in self.factors.values()))
        return {"rank": self.rank, "overall": overall, "modules": modules}


def adapter_config(rank: int, targets: list[str], base_model: str | None, task_type: str | None) -> dict:
    """A plain-LoRA PEFT config for the written factors (scale lora_alpha / r = 1)."""
    return {"peft_type": "LORA", "task_type": task_type, "base_model_name_or_path": base_model,
            "r": rank, "lora_alpha": rank, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
            "use_rslora": False, "use_dora": False, "init_lora_weights": True, "inference_mode": True,
            "target_modules": sorted({module_name(t).rsplit(".", 1)[-1] for t in targets}),
            "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None}
