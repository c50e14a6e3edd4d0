"""The merge library: WAVG (linear), task arithmetic, TIES, TIES-SV and DARE over HF checkpoints.

    from merges import load_recipe, run_merge
    result = run_merge(load_recipe("recipe.yaml"), resolve=Path, out_dir=Path("merged"))

`resolve` maps each model name in the recipe to a local folder. See `merges.engine` for the
streaming engine and the extended-vocabulary policy, `merges.methods` for the methods.
"""

from merges.engine import MergeResult, run_merge
from merges.methods import METHODS
from merges.recipe import ModelSpec, Recipe, load_recipe
from merges.stats import STATS_FILE, load_stats, summary

# Bumped whenever a change can alter merged weights: part of every cached merge's hash.
__version__ = "1.0"

__all__ = ["METHODS", "MergeResult", "ModelSpec", "Recipe", "STATS_FILE", "load_recipe", "load_stats",
           "run_merge", "summary", "__version__"]
