"""The merge methods, registered by name from their specs.

Each method is a pure function of one tensor's inputs: `method(base, tensors, params)` where
`base` is the base model's tensor (None for `linear`), `tensors` the input models' tensors in
recipe order (all float32/float64, same shape, same device) and `params` a `MethodParams`. It
returns a `MethodOutput`: the merged tensor (same dtype) and, for methods that elect signs,
per-model conflict counts. The engine (`merges.engine`) does all I/O and calls these once per
tensor.

A method's module declares it in `SPECS` (see `merges.methods.spec`); every module of this
package is searched for them, so adding a method is adding its module. `METHODS` maps each
recipe name to its spec, in module order.
"""

import importlib
import pkgutil

from merges.methods.common import MethodOutput, MethodParams, ModelCounts
from merges.methods.spec import MethodSpec, Parameter


def _collect_specs() -> dict[str, MethodSpec]:
    specs: dict[str, MethodSpec] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for spec in getattr(module, "SPECS", ()):
            if spec.name in specs:
                raise ImportError(f"merge method {spec.name!r} is declared twice (in {module.__name__})")
            specs[spec.name] = spec
    return specs


METHODS: dict[str, MethodSpec] = _collect_specs()


def method_label(name: str) -> str:
    """A method's display label (WAVG for linear, TIES-SV, ...); an unknown name as it is."""
    spec = METHODS.get(name)
    return spec.label if spec else name


__all__ = ["METHODS", "MethodOutput", "MethodParams", "MethodSpec", "ModelCounts", "Parameter", "method_label"]
