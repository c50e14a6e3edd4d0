"""Downloads of a score table: CSV (the numbers), and Markdown and LaTeX in the paper's layout.

The Markdown and LaTeX files come from the jinja2 templates in `templates/`: model and kind
columns, one column per score, best value bold and second underlined, a dash where missing, and
(LaTeX) a rule between groups of models of one kind.
"""

import re
from pathlib import Path

import jinja2
import pandas as pd

from leaderboard.tables import DISPLAY_DECIMALS, KIND, ScoreTable, rank_marks

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=False,  # Markdown and LaTeX, not HTML: cells are escaped for their format below
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
)
MISSING = "–"
LATEX_MISSING = "--"


def to_csv(table: ScoreTable) -> str:
    """The table's numbers (percentage points, full precision); missing cells are empty."""
    return table.frame.to_csv()


def to_markdown(table: ScoreTable) -> str:
    marks = rank_marks(table)
    wrap = {"best": "**{}**", "second": "<u>{}</u>", "": "{}"}
    rows = []
    for model, row in table.frame.iterrows():
        cells = [_markdown_escape(str(model)), _markdown_escape(str(row[KIND]))]
        cells += [_cell(row[c], wrap[marks.at[model, c]], MISSING) for c in table.score_columns]
        rows.append({"cells": cells})
    header = ["Model", KIND, *table.score_columns]
    aligns = [":--", ":--"] + ["--:"] * len(table.score_columns)
    return TEMPLATES.get_template("table.md.j2").render(
        title=_markdown_escape(table.title), header=header, aligns=aligns, rows=rows
    )


def to_latex(table: ScoreTable) -> str:
    marks = rank_marks(table)
    wrap = {"best": r"\textbf{{{}}}", "second": r"\underline{{{}}}", "": "{}"}
    rows, previous_kind = [], None
    for model, row in table.frame.iterrows():
        cells = [_latex_escape(str(model)), _latex_escape(str(row[KIND]))]
        cells += [_cell(row[c], wrap[marks.at[model, c]], LATEX_MISSING) for c in table.score_columns]
        rows.append({"cells": cells, "group_start": previous_kind is not None and row[KIND] != previous_kind})
        previous_kind = row[KIND]
    header = ["Model", KIND, *(_latex_escape(c) for c in table.score_columns)]
    return TEMPLATES.get_template("table.tex.j2").render(
        title=table.title,
        caption=_latex_escape(table.title),
        column_spec="ll" + "c" * len(table.score_columns),
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
