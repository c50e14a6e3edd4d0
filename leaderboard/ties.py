"""Statistical tie groups: per column of a score table, the rows not significantly different from its best.

The test is the Compare view's: a paired bootstrap over the items both rows answered
(stats.paired_bootstrap, 95%), here between the column's best row (the highest score among the rows
scored on the column's full item set) and each other such row. A column compares several rows with
the best at once, so the tests are corrected with Holm's step-down procedure: with m rows left
undecided, each is tested at confidence 1 - 0.05/m; the rows whose interval excludes 0 are
significantly different and leave, and the rest are tested again with the smaller m, until no
interval excludes 0 (those rows are the best's tie group). With one row to compare this is the
Compare view's 95% test exactly.

What is compared: a cell is a weighted mean of per-task scores (tables.CellBasis: a task column is
one task; a language cell averages its tasks equally; the Average weighs the languages equally),
each task filled by one model (a recipe family's cell for a language is its member for that
language, so a family's Average spans its members). The pair is tested on the items both sides
logged, task by task: each item's score is scaled by (the task's weight / its shared items) x all
shared items, so the mean over the pooled items is the cell's weighted mean and the bootstrap
resamples items across the tasks. A cell whose tasks lack sample logs on either side is not tested.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from leaderboard import stats
from leaderboard.tables import ScoreTable

ALPHA = 0.05  # family-wise error rate per column (Holm)
RULE = (f"paired bootstrap over the items both models answered ({stats.DEFAULT_RESAMPLES} resamples, seed "
        f"{stats.DEFAULT_SEED}), {100 * (1 - ALPHA):.0f}% with Holm's correction "
        "for the number of models compared in the column")
TIE, DIFFERENT, UNTESTED = "tie", "different", "not tested (no sample logs)"

# (model, task) -> per-item scores (index doc_id), or None when the model logged no samples of it.
ItemScores = Callable[[str, str], "pd.Series | None"]


def sample_loader(scores: pd.DataFrame, logged_scores: Callable[[str | None, str, str, str], "pd.Series | None"]) -> ItemScores:
    """Per-item scores from each stored result's sample log, on the stored row's metric and filter.
    `logged_scores(run_dir, task, metric, filter)` is samples.logged_item_scores (the app wraps it to
    warn about a damaged log)."""
    latest = scores.drop_duplicates(["model", "task"], keep="last")
    logs = {(model, task): (run_dir, metric, filter_name) for model, task, run_dir, metric, filter_name
            in zip(latest["model"], latest["task"], latest["run_dir"], latest["metric"], latest["filter"])}
    loaded: dict[tuple[str, str], pd.Series | None] = {}

    def load(model: str, task: str) -> pd.Series | None:
        if (model, task) not in loaded:
            run_dir, metric, filter_name = logs.get((model, task), (None, None, None))
            loaded[(model, task)] = logged_scores(run_dir, task, metric, filter_name) if metric else None
        return loaded[(model, task)]

    return load


@dataclass(frozen=True)
class TieTest:
    column: str
    row: str
    best: str
    verdict: str  # TIE, DIFFERENT or UNTESTED
    diff: stats.PairedDiff | None = None  # row - best, at the confidence of the step that decided it
    confidence: float | None = None


def with_tie_groups(table: ScoreTable, item_scores: ItemScores) -> tuple[ScoreTable, list[TieTest]]:
    """The table with `ties` set (True: not significantly different from the column's best; False:
    significantly different; NaN: the best itself, not tested, or no value) and every test made."""
    ties = pd.DataFrame(np.nan, index=table.frame.index, columns=table.score_columns, dtype=object)
    tests: list[TieTest] = []
    if table.basis is not None:
        for column in table.score_columns:
            column_tests = column_ties(table, column, item_scores)
            for test in column_tests:
                ties.at[test.row, column] = {TIE: True, DIFFERENT: False}.get(test.verdict, np.nan)
            tests += column_tests
    return replace(table, ties=ties), tests


def column_ties(table: ScoreTable, column: str, item_scores: ItemScores) -> list[TieTest]:
    """Holm-corrected tests of each ranked row of a column against its best (module docstring)."""
    ranked = table.frame[column].where(~table.limited).dropna()
    if ranked.empty or column not in table.basis.weights:
        return []
    best = str(ranked.idxmax())
    paired, tests = {}, []
    for row in ranked.index.drop(best):
        items = paired_items(table, column, best, row, item_scores)
        if items is None:
            tests.append(TieTest(column, row, best, UNTESTED))
        else:
            paired[row] = items
    while paired:
        confidence = 1 - ALPHA / len(paired)
        diffs = {row: stats.paired_bootstrap(*items, confidence=confidence) for row, items in paired.items()}
        different = [row for row, diff in diffs.items() if diff.significant]
        if not different:
            tests += [TieTest(column, row, best, TIE, diff, confidence) for row, diff in diffs.items()]
            break
        tests += [TieTest(column, row, best, DIFFERENT, diffs[row], confidence) for row in different]
        paired = {row: items for row, items in paired.items() if row not in different}
    order = list(ranked.index)
    return sorted(tests, key=lambda test: order.index(test.row))


def paired_items(table: ScoreTable, column: str, row_a: str, row_b: str,
                 item_scores: ItemScores) -> tuple[np.ndarray, np.ndarray] | None:
    """The two cells' items, paired task by task and scaled so that each side's mean is its cell's
    weighted mean over the shared items (module docstring); None if a task lacks logs on either side
    or fewer than two items are shared in all."""
    parts = []
    for task, weight in table.basis.weights[column].items():
        model_a, model_b = table.basis.members[row_a].get(task), table.basis.members[row_b].get(task)
        a = item_scores(model_a, task) if model_a else None
        b = item_scores(model_b, task) if model_b else None
        if a is None or b is None:
            return None
        shared = a.index.intersection(b.index)
        if shared.empty:
            return None
        parts.append((weight / len(shared), a[shared].to_numpy(), b[shared].to_numpy()))
    total = sum(len(a) for _, a, _ in parts)
    if total < 2:
        return None
    # A single task has scale 1 exactly: the same numbers as the Compare view's test.
    scaled = [(scale * total * a, scale * total * b) for scale, a, b in parts]
    return np.concatenate([a for a, _ in scaled]), np.concatenate([b for _, b in scaled])


def tests_frame(tests: list[TieTest]) -> pd.DataFrame:
    """The tests as a table in points: what "intervals on demand" shows."""
    return pd.DataFrame(
        [
            {
                "Column": test.column,
                "Model": test.row,
                "Best": test.best,
                "Δ (points)": round(100 * test.diff.diff, 2) if test.diff else None,
                "Interval": f"[{100 * test.diff.low:+.2f}, {100 * test.diff.high:+.2f}]" if test.diff else "–",
                "Confidence": f"{100 * test.confidence:.2f}%" if test.confidence else "–",
                "n shared": test.diff.n if test.diff else None,
                "Verdict": test.verdict,
            }
            for test in tests
        ],
        columns=["Column", "Model", "Best", "Δ (points)", "Interval", "Confidence", "n shared", "Verdict"],
    )
