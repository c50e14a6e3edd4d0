"""DARE (Yu et al. 2024): drop each task-vector entry with probability 1 - density and rescale
the survivors by 1/density (`rescale: false` skips the rescaling), then merge linearly
(`dare_linear`, as task arithmetic) or with TIES's sign election (`dare_ties`, no magnitude trim).

The drop is seeded per model and tensor (the engine derives the seeds from the recipe's
`parameters.seed`, the tensor name and the model's position) and drawn on the CPU, so a merge is
reproducible whatever the device or thread order.

Unlike mergekit, whose DARE rescales each tensor to keep its L1 norm, this rescales by 1/density
as in the DARE paper, so the expectation of the rescaled vector equals the original.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from merges.methods.common import MethodOutput, MethodParams
from merges.methods.spec import CONSENSUS, DENSITY, LAMBDA, NORMALIZE, RESCALE, SEED, WEIGHT, MethodSpec
from merges.methods.task_arithmetic import combine_task_vectors
from merges.methods.ties import conflict_counts, disjoint_merge, elect_signs, weighted_task_vectors


def dare_drop_in_place(delta: torch.Tensor, density: float, seed: int, rescale: bool = True) -> torch.Tensor:
    if density >= 1:
        return delta
    if density <= 0:
        return delta.zero_()
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(delta.shape, generator=generator) < density
    delta.mul_(keep.to(delta.device))
    if rescale:
        delta.div_(density)
    return delta


def dare_linear(base: torch.Tensor, tensors: list[torch.Tensor], params: MethodParams) -> MethodOutput:
    deltas = [dare_drop_in_place(t - base, params.densities[i], params.seeds[i], params.rescale)
              for i, t in enumerate(tensors)]
    return MethodOutput(combine_task_vectors(base, deltas, params))


def dare_ties(base: torch.Tensor, tensors: list[torch.Tensor], params: MethodParams) -> MethodOutput:
    weighted, nonzero = weighted_task_vectors(
        base, tensors, params,
        lambda i, delta: dare_drop_in_place(delta, params.densities[i], params.seeds[i], params.rescale))
    positive = elect_signs(weighted, params.consensus)
    merged, agreeing = disjoint_merge(base, weighted, positive, params)
    return MethodOutput(merged, conflict_counts(base.numel(), nonzero, agreeing))


NORMALIZE_OFF = replace(NORMALIZE, default=False)  # mergekit's default for DARE
SPECS = (
    MethodSpec("dare_linear", dare_linear, label="DARE-linear", model_parameters=(WEIGHT, DENSITY),
               parameters=(LAMBDA, NORMALIZE_OFF, SEED, RESCALE)),
    MethodSpec("dare_ties", dare_ties, label="DARE-TIES", model_parameters=(WEIGHT, DENSITY),
               parameters=(LAMBDA, NORMALIZE_OFF, CONSENSUS, SEED, RESCALE), elects_signs=True),
)
