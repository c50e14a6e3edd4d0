"""WAVG: the weighted average of full parameters, weights normalised to sum 1 (mergekit `linear`)."""

import torch

from merges.methods.common import MethodOutput, MethodParams


def linear(base: torch.Tensor | None, tensors: list[torch.Tensor], params: MethodParams) -> MethodOutput:
    total = torch.zeros_like(tensors[0])
    for tensor, weight in zip(tensors, params.weights):
        total.add_(tensor, alpha=weight)
    if params.normalize:
        total.div_(sum(params.weights))
    return MethodOutput(total)
