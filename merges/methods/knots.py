"""KnOTS (Stoica et al. 2024, "Model merging with SVD to tie the KnOTS"): TIES or DARE-TIES in
a basis the models share.

Per 2-D tensor (out x in):
1. Task vectors ΔW_i = theta_i - base, concatenated column-wise: X = [ΔW_1 ... ΔW_n] (out x n·in).
2. Thin SVD X = U Σ [V_1^T ... V_n^T]. Components with σ <= σ_max · max(out, n·in) · eps (the
   numerical rank, numpy's `matrix_rank` rule) are dropped, so U spans the joint column space of
   the task vectors and ΔW_i = U Σ V_i^T still holds to rounding; entries of Σ V_i^T below that
   same rounding level are set to zero (a model that leaves the tensor alone has a zero part).
3. The per-model parts Σ V_i^T (k x in) are merged by TIES (`knots_ties`) or DARE-TIES
   (`knots_dare_ties`) as task vectors over zero, with the recipe's weights, densities,
   consensus, normalize, seed and lambda. The parts carry the singular values, as in the
   authors' released configurations (`s_on_V: True`): trimming then compares entries by their
   contribution to ΔW, not by unit-norm coordinates. As everywhere in this library, the trim is
   per tensor (the authors' code trims over all layers at once).
4. ΔW = U · merged, and the result is base + ΔW (lambda was applied in step 3).

Tensors that are not 2-D (norms) go through the plain method; a tensor whose task vectors are
all zero (a module no adapter changes) is the base's.

An SVD component's sign is arbitrary, but flipping it flips U's column and the same row of every
model's part together, and TIES and DARE-TIES are odd per entry (trim by magnitude, elect by
sign, mean of the agreeing, drop by position), so the merge does not depend on it.

Low-rank inputs. When the engine knows that rank(X) <= R (every input an adapter: R is the sum of
their LoRA ranks on this tensor, `MethodParams.rank_bound`), the SVD comes from a random sketch:
Q = orth(X Ω) with Ω Gaussian (n·in x R+8), then the SVD of the small Q^T X. With rank(X) <= R
that is the same SVD up to rounding, at O(out · n·in · R) cost instead of O(out · n·in ·
min(out, n·in)).

Conflict statistics are not reported (the specs do not elect signs for the engine): the entries
TIES trims and elects on here are coordinates in the shared basis, not parameters, so counts of
them would not mean what `conflict_stats.json`'s fields say.
"""

from __future__ import annotations

import torch

from merges.methods.common import MethodOutput, MethodParams
from merges.methods.dare import NORMALIZE_OFF, dare_ties
from merges.methods.spec import CONSENSUS, DENSITY, LAMBDA, NORMALIZE, RESCALE, SEED, WEIGHT, MethodFunction, MethodSpec
from merges.methods.ties import ties

OVERSAMPLE = 8  # extra sketch columns: the sketch's range is the task vectors' even when rank(X) = R
SKETCH_SEED = 0


def shared_basis(stacked: torch.Tensor, models: int, rank_bound: int | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """U (out x k) and each model's part Σ V_i^T (k x in) of the concatenated task vectors."""
    rows, cols = stacked.shape
    sketch = None if rank_bound is None else rank_bound + OVERSAMPLE
    if sketch is not None and sketch < min(rows, cols):
        generator = torch.Generator(device=stacked.device).manual_seed(SKETCH_SEED)
        omega = torch.randn(cols, sketch, generator=generator, dtype=stacked.dtype, device=stacked.device)
        q = torch.linalg.qr(stacked @ omega).Q
        small_u, singular, vh = torch.linalg.svd(q.T @ stacked, full_matrices=False)
        u = q @ small_u
    else:
        u, singular, vh = torch.linalg.svd(stacked, full_matrices=False)
    rounding = singular[0] * max(rows, cols) * torch.finfo(stacked.dtype).eps
    kept = singular > rounding
    scaled_vh = singular[kept, None] * vh[kept]
    # Entries at the SVD's rounding level are zeros (a model that does not change this tensor has
    # an all-zero part): TIES's mean divides by the weights of every non-zero agreeing entry, so
    # leftover rounding noise would count as a vote.
    scaled_vh.masked_fill_(scaled_vh.abs() <= rounding, 0)
    return u[:, kept], list(scaled_vh.split(cols // models, dim=1))


def knots(plain: MethodFunction, base: torch.Tensor, tensors: list[torch.Tensor], params: MethodParams) -> MethodOutput:
    """`plain` (TIES or DARE-TIES) on the models' parts in the shared basis of a 2-D tensor."""
    if base.dim() != 2:
        return MethodOutput(plain(base, tensors, params).tensor)
    stacked = torch.cat([tensor - base for tensor in tensors], dim=1)
    if not bool(stacked.any()):
        return MethodOutput(base.clone())
    basis, parts = shared_basis(stacked, len(tensors), params.rank_bound)
    del stacked
    merged = plain(torch.zeros_like(parts[0]), parts, params).tensor  # lambda · merge of the parts
    return MethodOutput(torch.addmm(base, basis, merged))


def knots_ties(base: torch.Tensor, tensors: list[torch.Tensor], params: MethodParams) -> MethodOutput:
    return knots(ties, base, tensors, params)


def knots_dare_ties(base: torch.Tensor, tensors: list[torch.Tensor], params: MethodParams) -> MethodOutput:
    return knots(dare_ties, base, tensors, params)


SPECS = (
    MethodSpec("knots_ties", knots_ties, label="KnOTS-TIES", model_parameters=(WEIGHT, DENSITY),
               parameters=(LAMBDA, NORMALIZE, CONSENSUS)),
    MethodSpec("knots_dare_ties", knots_dare_ties, label="KnOTS-DARE-TIES", model_parameters=(WEIGHT, DENSITY),
               parameters=(LAMBDA, NORMALIZE_OFF, CONSENSUS, SEED, RESCALE)),
)
