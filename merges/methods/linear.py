"""WAVG: the weighted average of full parameters, weights normalised to sum 1 (mergekit `linear`)."""

import torch

from merges.methods.common import MethodOutput, MethodParams
from merges.methods.spec import NORMALIZE, WEIGHT, MethodSpec


def linear(base: torch.Tensor | None, tensors: list[torch.Tensor], params: MethodParams) -> MethodOutput:
    # Inputs may arrive in their stored dtype (bf16); the sum is taken in at least float32.
    total = torch.zeros_like(tensors[0], dtype=torch.promote_types(tensors[0].dtype, torch.float32))
    for tensor, weight in zip(tensors, params.weights):
        total.add_(tensor, alpha=weight)
    if params.normalize:
        total.div_(sum(params.weights))
    return MethodOutput(total)


def recipe_problem(recipe) -> str | None:
    """Normalising divides by the summed weights: weights that sum to zero (1 and -1) have no average."""
    if recipe.normalize and sum(spec.weight for spec in recipe.models) == 0:
        weights = [spec.weight for spec in recipe.models]
        return f"the models' weights {weights} sum to 0, so normalize: true has nothing to divide by"
    return None


SPECS = (MethodSpec("linear", linear, label="WAVG", model_parameters=(WEIGHT,), parameters=(NORMALIZE,),
                    uses_base=False, check=recipe_problem),)
