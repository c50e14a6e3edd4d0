"""Checkpoint curves (the paper's Figure 2): each language's average against the CT tokens seen.

A point is a model the store records as a point of a checkpoint series (`harness curve`, or `harness
eval` of a registry checkpoint such as `ct-uig@step30`): its models-table row has the series' id and
the CT tokens seen. A line is a series' recipe family (`ct-uig` -> CT-X, `ties-uig-flan` -> TIES-X,
leaderboard.tables.family_of), or the series' id where it belongs to none (a multi-language merge).
A point's score is its language average as the overview computes it (leaderboard.tables.language_cells,
over the whole split's scores, so every point of a column averages the same tasks), with its stderr.
"""

import pandas as pd

from leaderboard import tables
from tasks.languages import LANGUAGES

COLUMNS = ["lang", "line", "kind", "model", "tokens", "score", "stderr", "low", "high", "n"]


def curve_points(scores: pd.DataFrame, kinds: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """One row per (language, point) with a language average: the COLUMNS, score and its 95% interval
    (low, high: ± 1.96 stderr) in %, n the items it averages; lines in the overview's kind order,
    each by tokens. Empty (with the COLUMNS) when no scored model is a series point."""
    if scores.empty or "tokens" not in models:
        return pd.DataFrame(columns=COLUMNS)
    builds = models.drop_duplicates("model_hash", keep="last").set_index("model_hash")
    scored = scores.drop_duplicates("model")[["model", "model_hash"]]
    points = [(model, builds.loc[model_hash]) for model, model_hash in scored.itertuples(index=False)
              if model_hash in builds.index and pd.notna(builds.at[model_hash, "tokens"])]
    if not points:
        return pd.DataFrame(columns=COLUMNS)
    cells = tables.language_cells(scores)
    rows = []
    for model, build in points:
        langs = [code for code in str(build["langs"] or "").split(",") if code in cells.values.columns]
        for lang in langs:
            score = cells.values.at[model, lang]
            if pd.isna(score):
                continue
            stderr = cells.stderr.at[model, lang]
            half = tables.INTERVAL_Z * stderr if pd.notna(stderr) else float("nan")
            rows.append({"lang": lang, "line": _line(build, kinds, model), "kind": kinds.at[model, "label"],
                         "model": model, "tokens": int(build["tokens"]), "score": round(score, 2),
                         "stderr": round(stderr, 2), "low": round(score - half, 2), "high": round(score + half, 2),
                         "n": int(cells.items.at[model, lang])})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    language_rank = frame["lang"].map({code: rank for rank, code in enumerate(LANGUAGES)})
    line_rank = frame["line"].map({line: min(tables.kind_order(kinds, m) for m in frame.loc[frame["line"] == line, "model"])
                                   for line in frame["line"].unique()})
    return (frame.assign(_lang=language_rank, _line=line_rank).sort_values(["_lang", "_line", "line", "tokens"])
            .drop(columns=["_lang", "_line"]).reset_index(drop=True))


def _line(build: pd.Series, kinds: pd.DataFrame, model: str) -> str:
    """The series' recipe family (CT-X, TIES-X, ...), else the series' id."""
    series = build["series"] if isinstance(build["series"], str) and build["series"] else model
    langs = tuple(code for code in str(build["langs"] or "").split(",") if code)
    family, _ = tables.family_of(series, build["kind"], kinds.at[model, "method"], langs)
    return family or series


def curve_table(points: pd.DataFrame) -> pd.DataFrame:
    """One language's points as lines by CT tokens seen (in %), for the page and the CSV."""
    table = points.pivot_table(index="line", columns="tokens", values="score", aggfunc="last", sort=False)
    return table.reindex(sorted(table.columns), axis=1).rename_axis(index=None, columns="CT tokens seen")
