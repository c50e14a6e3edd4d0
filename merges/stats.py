"""Conflict statistics of TIES-family merges (the paper's Fig. 3/4), saved as `conflict_stats.json`.

    {"method": "ties_sv", "models": ["sft-flan", "ct-uig"], "protected": "sft-flan", "slack": 0.2,
     "total":   {"sft-flan": {"params", "trimmed", "discarded", "kept_by_slack"}, "ct-uig": {...}},
     "tensors": {"model.layers.0.mlp.up_proj.weight": {"sft-flan": {...}, ...}, ...}}

"trimmed": non-zero entries after trimming (after DARE's drop for dare_ties); "discarded":
trimmed entries dropped by sign election (after the slack for ties_sv); "kept_by_slack": entries
of the protected model the slack saved (0 otherwise). Vocabulary tensors count shared rows only.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from merges.errors import MergeError
from merges.methods import ModelCounts
from merges.recipe import Recipe

STATS_FILE = "conflict_stats.json"


def conflict_stats(recipe: Recipe, per_tensor: dict[str, list[ModelCounts]]) -> dict:
    names = [spec.model for spec in recipe.models]
    totals = {name: ModelCounts() for name in names}
    tensors = {}
    for tensor, counts in per_tensor.items():
        tensors[tensor] = {name: asdict(c) for name, c in zip(names, counts)}
        for name, c in zip(names, counts):
            totals[name].add(c)
    return {
        "method": recipe.merge_method,
        "models": names,
        "protected": recipe.protected,
        "slack": recipe.slack,
        "total": {name: asdict(c) for name, c in totals.items()},
        "tensors": tensors,
    }


def write_stats(stats: dict, path: Path) -> None:
    path.write_text(json.dumps(stats, indent=1) + "\n", encoding="utf-8")


def load_stats(folder: Path) -> dict | None:
    """A merged folder's statistics (None: the method keeps none); damaged ones are a MergeError."""
    path = Path(folder) / STATS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:  # not UTF-8, not JSON
        raise MergeError(f"{path} is damaged ({type(err).__name__}: {' '.join(str(err).split())[:120]}): "
                         f"delete {Path(folder)} to merge it again") from None


def summary(stats: dict) -> str:
    """A few lines for the terminal: per model, how much trimming and election removed."""
    lines = [f"conflict statistics ({stats['method']}"
             + (f", slack {stats['slack']} protecting {stats['protected']}" if stats.get("protected") else "") + "):"]
    for name, c in stats["total"].items():
        trimmed_pct = 100 * c["trimmed"] / c["params"] if c["params"] else 0.0
        discarded_pct = 100 * c["discarded"] / c["trimmed"] if c["trimmed"] else 0.0
        line = (f"  {name}: kept {c['trimmed']:,} of {c['params']:,} after trimming ({trimmed_pct:.1f}%), "
                f"sign election discarded {c['discarded']:,} of them ({discarded_pct:.1f}%)")
        if c["kept_by_slack"]:
            line += f", slack kept {c['kept_by_slack']:,}"
        lines.append(line)
    return "\n".join(lines)
