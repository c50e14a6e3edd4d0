"""Shaping `harness sweep` trials (store table `sweep_trials`) for the leaderboard's Sweeps view.

A trial row holds its grid point as JSON (`{"models.sft-flan.density": 0.2, ...}`) and its dev
score. The view draws a heatmap over the first two grid axes (a line over one axis); a sweep over
more axes is shown as a table only.
"""

import json
from dataclasses import dataclass

import pandas as pd

SCORE = "dev score (%)"
CHOSEN = "chosen"


@dataclass
class SweepGrid:
    sweep: str
    axes: list[str]  # grid parameter paths, in the order the sweep stored them
    trials: pd.DataFrame  # one row per grid point: an axis column each, SCORE, CHOSEN, limit, trial_model


def sweep_names(trials: pd.DataFrame) -> list[str]:
    return sorted(set(trials["sweep"])) if not trials.empty else []


def sweep_grid(trials: pd.DataFrame, sweep: str) -> SweepGrid:
    """The trials of one sweep as a grid. Rows scored with another `--limit` than the newest trial's
    are left out: scores on different item counts do not belong on one map."""
    rows = trials[trials["sweep"] == sweep].sort_values("id")
    newest_limit = rows["limit"].iloc[-1]
    same_limit = rows["limit"].isna() if pd.isna(newest_limit) else rows["limit"] == newest_limit
    rows = rows[same_limit]
    points = [json.loads(p) for p in rows["params_json"]]
    axes = list(dict.fromkeys(key for point in points for key in point))
    frame = pd.DataFrame([{axis: point.get(axis) for axis in axes} for point in points])
    frame[SCORE] = (100 * rows["score"]).round(2).to_numpy()
    frame[CHOSEN] = rows["chosen"].astype(bool).to_numpy()
    frame["items per task"] = ["all" if pd.isna(v) else str(int(v)) for v in rows["limit"]]
    frame["trial model"] = rows["trial_model"].to_numpy()
    return SweepGrid(sweep, axes, frame.reset_index(drop=True))


def axis_label(axis: str) -> str:
    """`models.sft-flan.density` -> `sft-flan density`; `parameters.slack` -> `slack`."""
    short = axis.removeprefix("parameters.").removeprefix("models.")
    head, _, param = short.rpartition(".")
    return f"{head} {param}" if head else short
