"""Shaping a merge's recipe and conflict statistics (models.recipe_json / stats_json) for display."""

import json
from dataclasses import dataclass

import pandas as pd

from merges import method_label


@dataclass
class RecipeSummary:
    method: str  # display name: WAVG, TIES, TIES-SV, ...
    base_model: str | None
    inputs: pd.DataFrame  # one row per input model: its per-model parameters (weight, density, protect)
    parameters: dict  # merge-wide parameters: lambda, slack, normalize, ...


def recipe_summary(recipe_json: str | None) -> RecipeSummary | None:
    if not isinstance(recipe_json, str):
        return None
    recipe = json.loads(recipe_json)
    inputs = pd.DataFrame(
        [{"model": m.get("model"), **(m.get("parameters") or {})} for m in recipe.get("models") or []]
    )
    method = recipe.get("merge_method", "?")
    return RecipeSummary(
        method=method_label(method),
        base_model=recipe.get("base_model"),
        inputs=inputs,
        parameters=dict(recipe.get("parameters") or {}),
    )


def conflict_totals(stats_json: str | None) -> pd.DataFrame | None:
    """Per input model: parameters, entries kept by trimming, dropped by sign election, saved by slack."""
    if not isinstance(stats_json, str):
        return None
    stats = json.loads(stats_json)
    protected = stats.get("protected")
    rows = []
    for model, total in (stats.get("total") or {}).items():
        trimmed = total.get("trimmed", 0)
        rows.append(
            {
                "model": model + (" (protected)" if model == protected else ""),
                "parameters": total.get("params", 0),
                "kept by trimming": trimmed,
                "discarded by sign election": total.get("discarded", 0),
                "kept by slack": total.get("kept_by_slack", 0),
                "discarded (% of kept)": round(100 * total.get("discarded", 0) / trimmed, 2) if trimmed else None,
            }
        )
    return pd.DataFrame(rows)


def conflict_by_tensor(stats_json: str | None) -> pd.DataFrame | None:
    """Per tensor and input model, most conflicted first: where sign election drops the most."""
    if not isinstance(stats_json, str):
        return None
    rows = [
        {
            "tensor": tensor,
            "model": model,
            "kept by trimming": counts.get("trimmed", 0),
            "discarded": counts.get("discarded", 0),
            "kept by slack": counts.get("kept_by_slack", 0),
        }
        for tensor, per_model in (json.loads(stats_json).get("tensors") or {}).items()
        for model, counts in per_model.items()
    ]
    frame = pd.DataFrame(rows, columns=["tensor", "model", "kept by trimming", "discarded", "kept by slack"])
    share = frame["discarded"] / frame["kept by trimming"].where(frame["kept by trimming"] > 0)
    frame["discarded (% of kept)"] = (100 * share).round(2)
    return frame.sort_values("discarded (% of kept)", ascending=False, na_position="last").reset_index(drop=True)
