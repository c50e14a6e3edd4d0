"""Types shared by the merge methods, and the pieces several of them use."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class MethodParams:
    """Hyperparameters of one merge, per input model where lists (recipe order)."""

    weights: tuple[float, ...]
    densities: tuple[float, ...] = ()
    lambda_: float = 1.0
    normalize: bool = False
    consensus: str = "sum"        # TIES sign election: "sum" or "count"
    slack: float = 0.0            # ties_sv
    protect: int | None = None    # ties_sv: index of the protected model
    seeds: tuple[int, ...] = ()   # DARE: one seed per model for this tensor
    rescale: bool = True          # DARE: divide survivors by density
    # KnOTS: an upper bound on the rank of the inputs' stacked task vectors for this tensor (the
    # sum of the adapters' LoRA ranks), None where unknown (some input is a full model).
    rank_bound: int | None = None


@dataclass
class ModelCounts:
    """Conflict statistics of one model in one tensor (see the conflict-statistics JSON)."""

    params: int = 0
    trimmed: int = 0        # non-zero entries after trimming (or after DARE's drop)
    discarded: int = 0      # trimmed entries dropped by sign election (after the slack)
    kept_by_slack: int = 0  # entries the slack saved (ties_sv only)

    def add(self, other: "ModelCounts") -> None:
        self.params += other.params
        self.trimmed += other.trimmed
        self.discarded += other.discarded
        self.kept_by_slack += other.kept_by_slack


@dataclass
class MethodOutput:
    tensor: torch.Tensor
    counts: list[ModelCounts] | None = field(default=None)


def weight_column(weights: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """Weights shaped (n, 1, 1, ...) to broadcast against a stack of n tensors like `like`."""
    return torch.tensor(weights, dtype=like.dtype, device=like.device).reshape(-1, *([1] * like.dim()))
