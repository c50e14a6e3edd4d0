"""Downloads of a score table: CSV (the numbers), and Markdown and LaTeX in the paper's layout.

The Markdown and LaTeX files come from the jinja2 templates in `templates/`: model and kind
columns, one column per score, best value bold and second underlined, a dash where missing, and
(LaTeX) a rule between groups of models of one kind (not between merge methods), the split in the
caption and a \\label. Rows scored on fewer items than a column's full set are flagged and unranked.
A table carrying statistical tie groups (leaderboard.ties) marks the cells not significantly
different from their column's best with a dagger, and says how they were tested under the table.
"""

import re
from pathlib import Path

import jinja2
import pandas as pd

from leaderboard import ties as tie_groups
from leaderboard.tables import DISPLAY_DECIMALS, ITEMS, KIND, TIE_MARK, ScoreTable, rank_marks, tie_cells

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=False,  # Markdown and LaTeX, not HTML: cells are escaped for their format below
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)
CSV_DECIMALS = 2  # scores and stderr in points: finer digits are float noise, not precision
MISSING = "–"
LATEX_MISSING = "--"
LATEX_TIE_MARK = r"$^\dagger$"
TIE_NOTE = f"not significantly different from the column's best: {tie_groups.RULE}"


def to_csv(table: ScoreTable) -> str:
    """The table's numbers in points: per score column its value, stderr and items (n); the row's
    items or "limit N"; missing cells empty."""
    columns = {KIND: table.frame[KIND], ITEMS: table.frame[ITEMS]}
    for column in table.score_columns:
        columns[column] = table.cells.values[column].round(CSV_DECIMALS)
        columns[f"{column} stderr"] = table.cells.stderr[column].round(CSV_DECIMALS)
        columns[f"{column} n"] = table.cells.items[column].astype("Int64")
    return pd.DataFrame(columns, index=table.frame.index).to_csv()


def to_markdown(table: ScoreTable) -> str:
    marks, ties = rank_marks(table), tie_cells(table)
    wrap = {"best": "**{}**", "second": "<u>{}</u>", "": "{}"}
    rows = []
    for model, row in table.frame.iterrows():
        cells = [_markdown_escape(str(model)), _markdown_escape(str(row[KIND])), _markdown_escape(str(row[ITEMS]))]
        cells += [_cell(row[c], wrap[marks.at[model, c]], MISSING) + (TIE_MARK if ties.at[model, c] else "")
                  for c in table.score_columns]
        rows.append({"cells": cells})
    header = ["Model", KIND, ITEMS, *table.score_columns]
    aligns = [":--", ":--", "--:"] + ["--:"] * len(table.score_columns)
    note = f"{TIE_MARK} {TIE_NOTE}." if table.ties is not None else None
    return TEMPLATES.get_template("table.md.j2").render(
        title=_markdown_escape(table.title), header=header, aligns=aligns, rows=rows, note=note
    )


def to_latex(table: ScoreTable) -> str:
    marks, ties = rank_marks(table), tie_cells(table)
    wrap = {"best": r"\textbf{{{}}}", "second": r"\underline{{{}}}", "": "{}"}
    rows, previous_group = [], None
    for model, row in table.frame.iterrows():
        cells = [_latex_escape(str(model)), _latex_escape(str(row[KIND])), _latex_escape(str(row[ITEMS]))]
        cells += [_cell(row[c], wrap[marks.at[model, c]], LATEX_MISSING) + (LATEX_TIE_MARK if ties.at[model, c] else "")
                  for c in table.score_columns]
        # A rule before each kind (merges of every method are one group) and before the limited rows.
        group = (bool(table.limited[model]), table.kind_codes[model])
        rows.append({"cells": cells, "group_start": previous_group is not None and group != previous_group})
        previous_group = group
    header = ["Model", KIND, ITEMS, *(_latex_escape(c) for c in table.score_columns)]
    return TEMPLATES.get_template("table.tex.j2").render(
        title=table.title,
        caption=_latex_escape(table.title) + (f". {LATEX_TIE_MARK}: {_latex_escape(TIE_NOTE)}" if table.ties is not None else ""),
        label=f"tab:{table.name}",
        column_spec="llr" + "c" * len(table.score_columns),
        header=header,
        rows=rows,
    )


def _cell(value: float, wrap: str, missing: str) -> str:
    if pd.isna(value):
        return missing
    return wrap.format(f"{value:.{DISPLAY_DECIMALS}f}")


def _markdown_escape(text: str) -> str:
    return re.sub(r"([|*_`<>\\])", r"\\\1", text)


LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "|": r"\textbar{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def _latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIALS.get(ch, ch) for ch in text)
