"""Shaping `harness sweep` trials (store table `sweep_trials`) for the leaderboard's Sweeps view.

A trial row holds its grid point as JSON (`{"models.sft-flan.density": 0.2, ...}`) and its dev
score. The view draws a heatmap over the first two grid axes (a line over one axis); a sweep over
more axes is shown as a table only. A search (`harness sweep --search optuna`, stored under the
grid name `<space>/optuna-<sampler>-seed<S>`) draws its points off any grid, so the view shows its
best dev score so far against the trial number instead.
"""

import json
from dataclasses import dataclass

import pandas as pd

from harness.store import SweepId

SCORE = "dev score (%)"
CHOSEN = "chosen"


@dataclass
class SweepGrid:
    sweep: SweepId
    axes: list[str]  # grid parameter paths, in the order the sweep stored them
    trials: pd.DataFrame  # one row per grid point: an axis column each, SCORE, CHOSEN, limit, trial_model


def sweep_ids(trials: pd.DataFrame) -> list[SweepId]:
    """The stored sweeps, by model id, then grid name."""
    pairs = set(zip(trials["model"], trials["grid"])) if not trials.empty else set()
    return [SweepId(model, grid) for model, grid in sorted(pairs)]


def sweep_grid(trials: pd.DataFrame, sweep: SweepId) -> SweepGrid:
    """The trials of one sweep as a grid. Rows scored on other items than the newest trial's (another
    `--limit`, other data: harness.store `scoring_hash`) are left out: they do not belong on one map."""
    rows = trials[(trials["model"] == sweep.model) & (trials["grid"] == sweep.grid)].sort_values("id")
    newest_limit = rows["limit"].iloc[-1]
    same_limit = rows["limit"].isna() if pd.isna(newest_limit) else rows["limit"] == newest_limit
    rows = rows[same_limit & (rows["scoring_hash"] == rows["scoring_hash"].iloc[-1])]
    points = [json.loads(p) for p in rows["params_json"]]
    axes = list(dict.fromkeys(key for point in points for key in point))
    frame = pd.DataFrame([{axis: point.get(axis) for axis in axes} for point in points])
    frame[SCORE] = (100 * rows["score"]).round(2).to_numpy()
    frame[CHOSEN] = rows["chosen"].astype(bool).to_numpy()
    frame["items per task"] = ["all" if pd.isna(v) else str(int(v)) for v in rows["limit"]]
    frame["trial model"] = rows["trial_model"].to_numpy()
    return SweepGrid(sweep, axes, frame.reset_index(drop=True))


BEST_SO_FAR = "best so far (%)"
TRIAL = "trial"


def is_search(sweep: SweepId) -> bool:
    """Whether the trials come from a search (harness.search) rather than a grid."""
    return "/optuna-" in sweep.grid


def selects_on_test(sweep: SweepId) -> bool:
    """A sweep that chose its point on the test split (`--select-on test`): stored apart (harness.trials)."""
    return sweep.grid.endswith("/select-on-test")


def best_so_far(grid: SweepGrid) -> pd.DataFrame:
    """Trial number (1, 2, ... in the order they were stored), its dev score and the best so far."""
    scores = grid.trials[SCORE].reset_index(drop=True)
    return pd.DataFrame({TRIAL: range(1, len(scores) + 1), SCORE: scores, BEST_SO_FAR: scores.cummax()})


def axis_label(axis: str) -> str:
    """`models.sft-flan.density` -> `sft-flan density`; `parameters.slack` -> `slack`."""
    short = axis.removeprefix("parameters.").removeprefix("models.")
    head, _, param = short.rpartition(".")
    return f"{head} {param}" if head else short
