"""The merge library: WAVG (linear), task arithmetic, TIES, TIES-SV, DARE and KnOTS over HF checkpoints
and PEFT LoRA adapters (an adapter is read as base + ΔW; a merge can be written as an adapter).

    import merges
    result = merges.merge("recipe.yaml", {"base": "models/base", "sft": "models/sft", "ct": "models/ct"},
                          "merged")
    print(merges.summary(result.stats))   # methods that elect signs report conflict statistics

A recipe is mergekit's format (`merges.recipe`), as a YAML path or a dict; the models are a
mapping or a function from the recipe's model names to local folders (by default the names are
folders). Every problem with a recipe or a model is a one-line `MergeError`. See `merges.engine`
for the streaming engine and the extended-vocabulary policy, `merges.methods` for the methods and
their specs, `merges.kernels` for the fused CPU kernel for TIES.

The library imports nothing from the application (`harness`, `tasks`, `leaderboard`).
"""

import importlib

from merges.errors import MergeError

# Bumped whenever a change can alter merged weights: part of every cached merge's hash.
__version__ = "1.0"

# The rest is imported on first use, so that `from merges.errors import MergeError` (the `harness`
# CLI does it to report errors) does not load torch.
_EXPORTED_FROM = {
    "merge": "merges.engine", "run_merge": "merges.engine", "MergeResult": "merges.engine",
    "METHODS": "merges.methods", "method_label": "merges.methods",
    "load_recipe": "merges.recipe", "Recipe": "merges.recipe", "ModelSpec": "merges.recipe",
    "STATS_FILE": "merges.stats", "load_stats": "merges.stats", "summary": "merges.stats",
}

__all__ = ["MergeError", "__version__", *_EXPORTED_FROM]


def __getattr__(name: str):
    if name not in _EXPORTED_FROM:
        raise AttributeError(f"module 'merges' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTED_FROM[name]), name)
    globals()[name] = value  # looked up once
    return value
