"""Shaping `harness analyze similarity` rows (store table `vector_similarity`) for the Language vectors page.

The store holds one row per ordered pair of models and base build. The page shows, for one base
model, the newest cosine of every pair computed against it as a square matrix (the paper's Figure 3);
a pair never computed is missing, not 0.
"""

from dataclasses import dataclass

import pandas as pd

CSV_DECIMALS = 4  # a cosine to four places: finer digits are float noise


@dataclass
class SimilarityMatrix:
    base: str
    cosine: pd.DataFrame  # square, models by id in both index and columns; NaN: not computed
    computed_at: pd.Timestamp  # the newest row's time


def bases(rows: pd.DataFrame) -> list[str]:
    """The base models with stored similarities, the most recently computed first."""
    if rows.empty:
        return []
    return list(rows.sort_values("id").drop_duplicates("base", keep="last").sort_values("id", ascending=False)["base"])


def similarity_matrix(rows: pd.DataFrame, base: str) -> SimilarityMatrix:
    """The newest cosine of each pair against `base` (any build of it), models sorted by id."""
    shown = rows[rows["base"] == base].sort_values("id").drop_duplicates(["model", "other"], keep="last")
    models = sorted(set(shown["model"]) | set(shown["other"]))
    matrix = shown.pivot(index="model", columns="other", values="cosine").reindex(index=models, columns=models)
    matrix.index.name, matrix.columns.name = None, None
    return SimilarityMatrix(base, matrix, pd.Timestamp(shown["created_at"].max()))


def long_form(matrix: SimilarityMatrix) -> pd.DataFrame:
    """One row per computed cell (model, other, cosine), for the heatmap."""
    frame = matrix.cosine.rename_axis(index="model", columns="other").stack().rename("cosine").reset_index()
    return frame.dropna(subset=["cosine"])


def to_csv(matrix: SimilarityMatrix) -> str:
    """The matrix as CSV, models as rows and columns; missing cells empty."""
    return matrix.cosine.round(CSV_DECIMALS).to_csv()
