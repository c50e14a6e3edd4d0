"""CSV, Markdown and LaTeX downloads in the paper's layout."""

import pandas as pd

from leaderboard import export
from leaderboard.tables import ScoreTable

TABLE = ScoreTable(
    frame=pd.DataFrame(
        {
            "Kind": ["Base", "Merge (TIES)", "Merge (TIES-SV)"],
            "Uyghur": [30.0, 60.04, 61.0],
            "Tamil": [35.0, float("nan"), 20.0],
        },
        index=pd.Index(["base", "ties_uig", "ties-sv|x"], name="Model"),
    ),
    score_columns=["Uyghur", "Tamil"],
    title="Average score per language (%)",
)


def test_csv_keeps_numbers_and_leaves_missing_empty():
    lines = export.to_csv(TABLE).splitlines()
    assert lines[0] == "Model,Kind,Uyghur,Tamil"
    assert lines[2] == "ties_uig,Merge (TIES),60.04,"


def test_markdown_marks_best_bold_second_underlined():
    text = export.to_markdown(TABLE)
    lines = text.splitlines()
    assert "| Model | Kind | Uyghur | Tamil |" in lines
    assert "| :-- | :-- | --: | --: |" in lines
    assert "| base | Base | 30.0 | **35.0** |" in lines
    assert r"| ties\_uig | Merge (TIES) | <u>60.0</u> | – |" in lines
    assert r"| ties-sv\|x | Merge (TIES-SV) | **61.0** | <u>20.0</u> |" in lines


def test_latex_is_a_booktabs_table_with_escapes_and_kind_rules():
    text = export.to_latex(TABLE)
    assert r"\begin{tabular}{llcc}" in text and r"\toprule" in text and r"\bottomrule" in text
    assert r"Model & Kind & Uyghur & Tamil \\" in text
    assert r"ties\_uig & Merge (TIES) & \underline{60.0} & -- \\" in text
    assert r"ties-sv\textbar{}x & Merge (TIES-SV) & \textbf{61.0} & \underline{20.0} \\" in text
    # A rule under the header and before each new kind group: Base | TIES | TIES-SV.
    assert text.count(r"\midrule") == 3
    assert "\\toprule\nModel & Kind & Uyghur & Tamil \\\\\n\\midrule\nbase &" in text
    assert r"\caption{Average score per language (\%)}" in text
