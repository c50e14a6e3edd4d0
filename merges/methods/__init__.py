"""The merge methods, registered by name.

Each method is a pure function of one tensor's inputs: `method(base, tensors, params)` where
`base` is the base model's tensor (None for `linear`), `tensors` the input models' tensors in
recipe order (all float32/float64, same shape, same device) and `params` a `MethodParams`. It
returns a `MethodOutput`: the merged tensor (same dtype) and, for the TIES family, per-model
conflict counts. The engine (`merges.engine`) does all I/O and calls these once per tensor.

`ties_cpu` is `ties` again as a fused CPU kernel (C, compiled on first use) with the same results
bit for bit; the engine uses it in place of `ties` on the CPU where the dtypes allow.
"""

from merges.methods.common import MethodOutput, MethodParams, ModelCounts
from merges.methods.dare import dare_linear, dare_ties
from merges.methods.linear import linear
from merges.methods.task_arithmetic import task_arithmetic
from merges.methods.ties import ties
from merges.methods.ties_sv import ties_sv

METHODS = {
    "linear": linear,
    "task_arithmetic": task_arithmetic,
    "ties": ties,
    "ties_sv": ties_sv,
    "dare_linear": dare_linear,
    "dare_ties": dare_ties,
}
# Methods that elect signs and therefore report conflict statistics.
TIES_FAMILY = ("ties", "ties_sv", "dare_ties")

__all__ = ["METHODS", "TIES_FAMILY", "MethodOutput", "MethodParams", "ModelCounts"]
