"""CSV, Markdown and LaTeX downloads in the paper's layout."""

import dataclasses

import pandas as pd

from leaderboard import export
from leaderboard.tables import Cells, ScoreTable

NAN = float("nan")
VALUES = pd.DataFrame({"Uyghur": [30.0, 65.0, 60.04, 61.0, 90.0], "Tamil": [35.0, 20.0, NAN, 20.0, 99.0]},
                      index=pd.Index(["base", "wavg_uig", "ties_uig", "ties-sv|x", "ties_uig@best"], name="Model"))
TABLE = ScoreTable(
    frame=pd.concat([pd.DataFrame({"Kind": ["Base", "Merge (WAVG)", "Merge (TIES)", "Merge (TIES-SV)", "Merge (TIES)"],
                                   "n": ["200", "200", "100", "200", "limit 5"]}, index=VALUES.index), VALUES], axis=1),
    score_columns=["Uyghur", "Tamil"],
    title="Average score per language (%), test split",
    name="models-test",
    cells=Cells(VALUES, VALUES * 0 + 1.23456789, VALUES * 0 + 100,
                pd.DataFrame({"Uyghur": [NAN, NAN, NAN, NAN, 5.0], "Tamil": [NAN] * 4 + [5.0]}, index=VALUES.index)),
    kind_codes=pd.Series(["base", "merge", "merge", "merge", "merge"], index=VALUES.index),
)


def test_csv_has_rounded_numbers_stderr_and_items_and_leaves_missing_empty():
    lines = export.to_csv(TABLE).splitlines()
    assert lines[0] == "Model,Kind,n,Uyghur,Uyghur stderr,Uyghur n,Tamil,Tamil stderr,Tamil n"
    assert lines[3] == "ties_uig,Merge (TIES),100,60.04,1.23,100,,,"  # no Tamil: no score, stderr or n
    assert lines[5].startswith("ties_uig@best,Merge (TIES),limit 5,90.0,")


def test_markdown_marks_best_bold_second_underlined_and_never_ranks_a_limited_row():
    lines = export.to_markdown(TABLE).splitlines()
    assert "| Model | Kind | n | Uyghur | Tamil |" in lines
    assert "| :-- | :-- | --: | --: | --: |" in lines
    assert "| base | Base | 200 | 30.0 | **35.0** |" in lines
    assert r"| wavg\_uig | Merge (WAVG) | 200 | **65.0** | <u>20.0</u> |" in lines
    assert r"| ties-sv\|x | Merge (TIES-SV) | 200 | <u>61.0</u> | <u>20.0</u> |" in lines
    assert r"| ties\_uig@best | Merge (TIES) | limit 5 | 90.0 | 99.0 |" in lines  # the highest, unranked


def test_latex_is_a_booktabs_table_with_a_rule_per_kind_the_split_and_a_label():
    text = export.to_latex(TABLE)
    assert r"\begin{tabular}{llrcc}" in text and r"\toprule" in text and r"\bottomrule" in text
    assert r"Model & Kind & n & Uyghur & Tamil \\" in text
    assert r"ties\_uig & Merge (TIES) & 100 & 60.0 & -- \\" in text
    assert r"ties-sv\textbar{}x & Merge (TIES-SV) & 200 & \underline{61.0} & \underline{20.0} \\" in text
    # Rules: under the header, between Base and the merges (not between WAVG, TIES and TIES-SV), before the limited row.
    assert text.count(r"\midrule") == 3
    assert "wavg\\_uig & Merge (WAVG) & 200 & \\textbf{65.0} & \\underline{20.0} \\\\\nties\\_uig &" in text
    assert r"\caption{Average score per language (\%), test split}" in text
    assert r"\label{tab:models-test}" in text


def test_tie_groups_are_marked_with_a_dagger_and_explained():
    tied = dataclasses.replace(TABLE, ties=pd.DataFrame({"Uyghur": [False, NAN, True, True, NAN], "Tamil": [NAN] * 5},
                                                        index=VALUES.index, dtype=object))
    markdown = export.to_markdown(tied)
    assert r"| ties\_uig | Merge (TIES) | 100 | 60.0† | – |" in markdown
    assert r"| ties-sv\|x | Merge (TIES-SV) | 200 | <u>61.0</u>† | <u>20.0</u> |" in markdown
    assert "† not significantly different from the column's best: paired bootstrap" in markdown and "Holm" in markdown
    latex = export.to_latex(tied)
    assert r"ties\_uig & Merge (TIES) & 100 & 60.0$^\dagger$ & -- \\" in latex
    assert r"$^\dagger$: not significantly different" in latex and "Holm" in latex
    assert "†" not in export.to_markdown(TABLE) and r"\dagger" not in export.to_latex(TABLE)  # no tie groups, no marks
