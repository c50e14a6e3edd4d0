"""TIES-SV: TIES with a slack variable that protects one model p (the SFT model).

Definition (Tao et al. 2024, §3.1, as this project implements it):
after TIES's trimming and sign election, the candidates are the positions where p's trimmed
task vector is non-zero but disagrees with the elected sign, i.e. the entries TIES would discard
from p. Rank them by the election margin |sum_i w_i * trimmed tau_i| (for two models with unit
weights, the magnitude gap |tau_ct| - |tau_sft|), smallest first, ties in index order; for the
first k of them set the elected sign to p's sign, where

    k = min(round(slack * nnz(trimmed tau_p)), number of candidates)      (per tensor)

(`round` is Python's: halves go to the even integer). Then TIES's disjoint mean as usual. The
other models' entries at flipped positions now disagree and are discarded instead. slack = 0
flips nothing and equals TIES bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from merges.methods.common import MethodOutput, MethodParams
from merges.methods.spec import DENSITY, LAMBDA, NORMALIZE, PROTECT, SLACK, WEIGHT, MethodSpec
from merges.methods.ties import conflict_counts, disjoint_merge, election_score, trim_in_place, weighted_task_vectors

if TYPE_CHECKING:
    from merges.recipe import Recipe


def slack_count(slack: float, protected_nonzero: int, candidates: int) -> int:
    return min(round(slack * protected_nonzero), candidates)


def apply_slack(weighted: torch.Tensor, positive: torch.Tensor, score: torch.Tensor,
                protect: int, slack: float, protected_nonzero: int) -> int:
    """Flip the elected sign to p's at the k smallest-margin candidates (in place); returns k."""
    protected = weighted[protect]
    disagrees = torch.where(positive, protected < 0, protected > 0)
    candidates = disagrees.reshape(-1).nonzero().reshape(-1)
    k = slack_count(slack, protected_nonzero, candidates.numel())
    if k == 0:
        return 0
    margins = score.reshape(-1)[candidates].abs()
    chosen = candidates[torch.argsort(margins, stable=True)[:k]]
    positive.view(-1)[chosen] = protected.reshape(-1)[chosen] > 0
    return k


def ties_sv(base: torch.Tensor, tensors: list[torch.Tensor], params: MethodParams) -> MethodOutput:
    weighted, nonzero = weighted_task_vectors(
        base, tensors, params, lambda i, delta: trim_in_place(delta, params.densities[i]))
    score = election_score(weighted, "sum")  # TIES-SV ranks by the margin, so it always elects by sum
    positive = score >= 0
    kept = [0] * len(tensors)
    kept[params.protect] = apply_slack(weighted, positive, score, params.protect, params.slack,
                                       nonzero[params.protect])
    del score
    merged, agreeing = disjoint_merge(base, weighted, positive, params)
    return MethodOutput(merged, conflict_counts(base.numel(), nonzero, agreeing, kept))


def recipe_problem(recipe: Recipe) -> str | None:
    """TIES-SV protects exactly one model, and ranks flips by the election margin, a sum."""
    protected = [spec.model for spec in recipe.models if spec.protect]
    if len(protected) != 1:
        return f"ties_sv needs exactly one model with parameters.protect: true, found {len(protected)}"
    if recipe.consensus_method != "sum":
        return f"parameters.consensus_method must be sum, got {recipe.consensus_method!r}"
    return None


SPECS = (MethodSpec("ties_sv", ties_sv, label="TIES-SV", model_parameters=(WEIGHT, DENSITY, PROTECT),
                    parameters=(LAMBDA, NORMALIZE, SLACK), elects_signs=True, check=recipe_problem),)
