"""Conflict analysis of TIES-family merges (the paper's Figures 3-4), for the Model and Sweeps views.

The data is each merge's `conflict_stats.json` (merges/stats.py) as the store keeps it: the models
table's `stats_json`, one record per built merge. Sweep trials are in that table too (a trial is
recorded under its model hash with its first result, harness.evaluation), so a sweep's trials need
nothing stored beside them: `sweep_trials.model_hash` finds their statistics.

The paper's question is what sign election takes from the SFT model (the one that knows the tasks):
- per merge, the share of the SFT model's parameters that sign election discarded, plotted against
  its density, one line per language (Figure 3);
- the same per layer and per tensor type: attention, MLP, embeddings (embed_tokens and lm_head:
  vocabulary tensors count the shared rows only), other (norms, ...);
- for TIES-SV, the share of the SFT model's trimmed entries that the slack kept back.

The SFT model of a merge is its input whose kind is `sft` in the models table, else the input
TIES-SV protects; a merge with neither is left out. Pure pandas: the charts of these frames are
leaderboard.figures' conflict builders (drawn by the views, written by `harness report`).
"""

import json
import re

import pandas as pd

import merges

# Tensor types, in display order; the patterns are matched against the tensor name.
TENSOR_TYPES = {
    "attention": re.compile(r"(self_attn|attention|attn)\."),
    "MLP": re.compile(r"(mlp|feed_forward|ffn)\."),
    "embeddings": re.compile(r"(embed_tokens|lm_head|wte|word_embeddings)\."),
}
OTHER_TYPE = "other"
_LAYER = re.compile(r"\.(?:layers|h|blocks)\.(\d+)\.")
COUNTS = ["params", "trimmed", "discarded", "kept_by_slack"]

# Shares (%), one way each: discarded of all the model's parameters (the figures' y axis), discarded
# of what trimming kept (the conflict rate among the entries that took part), kept back by the slack.
DISCARDED = "discarded (% of parameters)"
DISCARDED_OF_KEPT = "discarded (% of kept by trimming)"
KEPT_BY_SLACK = "kept by slack (% of kept by trimming)"
SFT_DENSITY, CT_DENSITY = "SFT density", "CT density"
ALL = "all"  # the `part` of a merge's totals


def tensor_type(tensor: str) -> str:
    """`model.layers.3.self_attn.q_proj.weight` -> attention; norms and anything unmatched -> other."""
    name = f"{tensor}."
    return next((kind for kind, pattern in TENSOR_TYPES.items() if pattern.search(name)), OTHER_TYPE)


def layer_of(tensor: str) -> int | None:
    """The transformer block a tensor belongs to (None: embeddings, final norm, lm_head)."""
    found = _LAYER.search(f".{tensor}.")
    return int(found.group(1)) if found else None


def tensor_counts(stats: dict, models: list[str] | None = None) -> pd.DataFrame:
    """One row per (tensor, input model; only `models` if given): its layer, type and counts."""
    return _with_tensor_kinds(pd.DataFrame(_count_rows(stats, models), columns=["tensor", "model", *COUNTS]))


def _count_rows(stats: dict, models: list[str] | None, **extra) -> list[dict]:
    return [{"tensor": tensor, "model": model, **extra, **{count: values.get(count, 0) for count in COUNTS}}
            for tensor, per_model in (stats.get("tensors") or {}).items() for model, values in per_model.items()
            if models is None or model in models]


def _with_tensor_kinds(counts: pd.DataFrame) -> pd.DataFrame:
    """Each row's layer and tensor type (worked out once per distinct tensor name)."""
    names = counts["tensor"].unique()
    layers = pd.Series([layer_of(n) for n in names], index=names, dtype="Int64")
    types = pd.Series([tensor_type(n) for n in names], index=names, dtype=object)
    return counts.assign(layer=counts["tensor"].map(layers).astype("Int64"), type=counts["tensor"].map(types))


def with_shares(frame: pd.DataFrame) -> pd.DataFrame:
    """The three shares (%) of each row's counts, missing where the denominator is 0."""
    params = frame["params"].where(frame["params"] > 0)
    trimmed = frame["trimmed"].where(frame["trimmed"] > 0)
    return frame.assign(**{
        DISCARDED: (100 * frame["discarded"] / params).round(3),
        DISCARDED_OF_KEPT: (100 * frame["discarded"] / trimmed).round(3),
        KEPT_BY_SLACK: (100 * frame["kept_by_slack"] / trimmed).round(3),
    })


def parts(counts: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per `keys` group of tensor counts: the totals (breakdown and part `all`), then each tensor
    type (part: the type), then each layer (part `layer N`), with the shares."""
    totals = counts.groupby(keys)[COUNTS].sum().reset_index().assign(breakdown=ALL, part=ALL)
    by_type = (counts.groupby([*keys, "type"])[COUNTS].sum().reset_index()
               .rename(columns={"type": "part"}).assign(breakdown="type"))
    by_layer = counts.dropna(subset=["layer"]).groupby([*keys, "layer"])[COUNTS].sum().reset_index()
    by_layer = by_layer.assign(breakdown="layer", part="layer " + by_layer["layer"].astype(str))
    frame = pd.concat([totals, by_type, by_layer], ignore_index=True)
    type_rank = {name: i for i, name in enumerate([*TENSOR_TYPES, OTHER_TYPE])}
    frame["_breakdown"] = frame["breakdown"].map({ALL: 0, "type": 1, "layer": 2})
    frame["_type"] = frame["part"].map(type_rank).fillna(0)
    frame = frame.sort_values([*keys, "_breakdown", "_type", "layer"], kind="stable", na_position="first")
    frame["layer"] = frame["layer"].astype("Int64")
    return with_shares(frame[[*keys, "breakdown", "part", "layer", *COUNTS]].reset_index(drop=True))


def breakdown(stats: dict) -> pd.DataFrame:
    """One merge's statistics per input model: its totals, per tensor type and per layer (`parts`)."""
    return parts(tensor_counts(stats), ["model"])


POINT_COLUMNS = ["model", "model_hash", "method", "language", "sft model", SFT_DENSITY, CT_DENSITY, "slack"]


def merge_points(models: pd.DataFrame) -> pd.DataFrame:
    """The SFT model's conflict numbers of every merge with statistics in the models table (sweep
    trials included; each model id's newest build): one row per merge and part (its totals, each tensor type, each layer), with
    the merge's id, method, language(s) (`mvf+uig` for a merge of several), the SFT model's density,
    the CT models' density (missing where they differ) and the slack."""
    kinds = dict(zip(models["model"], models["kind"]))
    points, counts = [], []
    # Each model id's newest build only (as the results show it): an older build of a trial is not a point of its own.
    records = models.dropna(subset=["stats_json", "recipe_json"]).sort_values("created_at", kind="stable")
    for record in records.drop_duplicates("model", keep="last").itertuples():
        point = _merge_point(record, kinds)
        if point is None:
            continue
        points.append(point)
        counts += _count_rows(json.loads(record.stats_json), [point["sft model"]], model_hash=record.model_hash)
    if not points:
        return pd.DataFrame(columns=[*POINT_COLUMNS, "breakdown", "part", "layer", *COUNTS,
                                     DISCARDED, DISCARDED_OF_KEPT, KEPT_BY_SLACK])
    per_part = parts(_with_tensor_kinds(pd.DataFrame(counts)), ["model_hash"])
    return pd.DataFrame(points, columns=POINT_COLUMNS).merge(per_part, on="model_hash", how="inner", sort=False)


def _merge_point(record, kinds: dict[str, str]) -> dict | None:
    """A merge record's identity and place in the figures: id, method, language, SFT model and densities."""
    try:
        recipe = merges.load_recipe(json.loads(record.recipe_json))
    except merges.MergeError:  # a record whose recipe this version cannot read: nothing to place it by
        return None
    sft = sft_input(recipe, kinds)
    if sft is None:
        return None
    density = {spec.model: spec.density for spec in recipe.models}
    others = {d for m, d in density.items() if m != sft}
    return {"model": record.model, "model_hash": record.model_hash, "method": recipe.merge_method,
            "language": "+".join(code for code in str(record.langs or "").split(",") if code) or "–",
            "sft model": sft, SFT_DENSITY: density[sft],
            CT_DENSITY: others.pop() if len(others) == 1 else float("nan"), "slack": recipe.slack}


def sft_input(recipe, kinds: dict[str, str]) -> str | None:
    """The recipe's SFT model: its one input of kind `sft`, else the model TIES-SV protects."""
    sft = [spec.model for spec in recipe.models if kinds.get(spec.model) == "sft"]
    return sft[0] if len(sft) == 1 else recipe.protected


def at_ct_density(points: pd.DataFrame, ct_density: float | None) -> pd.DataFrame:
    """The points whose CT models have the given density; None: the CT density equals the SFT's (one
    density k for every model, the paper's setting)."""
    if ct_density is None:
        return points[(points[CT_DENSITY] - points[SFT_DENSITY]).abs() < 1e-9]
    return points[(points[CT_DENSITY] - ct_density).abs() < 1e-9]


def density_curve(points: pd.DataFrame, ct_density: float | None = None) -> pd.DataFrame:
    """Figure 3: TIES merges' SFT discarded share (totals) per language and SFT density, at one CT
    density (`at_ct_density`); where several merges share a point (a sweep's trial and the merge it
    chose, two sweeps), their mean."""
    rows = at_ct_density(points[(points["method"] == "ties") & (points["breakdown"] == ALL)], ct_density)
    return (rows.groupby(["language", SFT_DENSITY], as_index=False)[[DISCARDED, DISCARDED_OF_KEPT]].mean()
            .sort_values(["language", SFT_DENSITY], ignore_index=True))


def slack_curve(points: pd.DataFrame) -> pd.DataFrame:
    """TIES-SV merges' share of the SFT model's trimmed entries the slack kept back, and the share
    still discarded, per language and slack (means over merges at the same point)."""
    rows = points[(points["method"] == "ties_sv") & (points["breakdown"] == ALL)]
    return (rows.groupby(["language", "slack"], as_index=False)[[KEPT_BY_SLACK, DISCARDED]].mean()
            .sort_values(["language", "slack"], ignore_index=True))
