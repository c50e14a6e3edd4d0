"""Task arithmetic: base + lambda * sum_i w_i * (theta_i - base).

With `normalize` the weighted sum is divided by sum_i w_i (mergekit's option; off by default).
"""

from dataclasses import replace

import torch

from merges.methods.common import MethodOutput, MethodParams
from merges.methods.spec import LAMBDA, NORMALIZE, WEIGHT, MethodSpec


def combine_task_vectors(base: torch.Tensor, deltas: list[torch.Tensor], params: MethodParams) -> torch.Tensor:
    """base + lambda * (sum_i w_i tau_i) [/ sum_i w_i]: shared by task arithmetic and DARE-linear."""
    mixed = torch.zeros_like(base)
    for delta, weight in zip(deltas, params.weights):
        mixed.add_(delta, alpha=weight)
    divisor = sum(params.weights)
    if params.normalize and abs(divisor) >= 1e-8:  # mergekit leaves a ~zero divisor out
        mixed.div_(divisor)
    if params.lambda_ != 1:
        mixed.mul_(params.lambda_)
    return base + mixed


def task_arithmetic(base: torch.Tensor, tensors: list[torch.Tensor], params: MethodParams) -> MethodOutput:
    return MethodOutput(combine_task_vectors(base, [t - base for t in tensors], params))


SPECS = (MethodSpec("task_arithmetic", task_arithmetic, label="Task arithmetic", model_parameters=(WEIGHT,),
                    parameters=(LAMBDA, replace(NORMALIZE, default=False))),)  # mergekit's default
