"""The Language vectors page: the stored cosine matrix as a heatmap and a table, downloadable as CSV;
the newest value of each pair, one base at a time, a pair never computed missing (not 0)."""

import io
import json

import pandas as pd
import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from harness.paths import PROJECT_ROOT
from harness.store import ResultStore, SimilarityRow, vector_similarities, write_similarities
from leaderboard import similarity
from leaderboard.data import STORE_ENV

APP = str(PROJECT_ROOT / "leaderboard" / "app.py")


def pairs(cosines: dict[tuple[str, str], float], base: str = "base", build: str = "1") -> list[SimilarityRow]:
    """Both orders of each pair and the diagonal, as `harness analyze similarity` stores them."""
    models = sorted({m for pair in cosines for m in pair})
    values = {**cosines, **{(b, a): v for (a, b), v in cosines.items()}, **{(m, m): 1.0 for m in models}}
    return [SimilarityRow(model=a, model_hash=f"{a}-{build}", other=b, other_hash=f"{b}-{build}", base=base,
                          base_hash=f"{base}-h", cosine=v, inner=v) for (a, b), v in values.items()]


@pytest.fixture
def similarity_store(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'results.db'}"
    store = ResultStore(url)
    write_similarities(store, pairs({("ct-tam", "ct-tel"): 0.9}, build="old"))  # an older build's value
    write_similarities(store, pairs({("ct-tam", "ct-tel"): 0.52, ("ct-tam", "ct-uig"): 0.43, ("ct-tel", "ct-uig"): -0.38}))
    write_similarities(store, pairs({("ct-uig", "lora-uig"): 0.25}))  # lora-uig met ct-uig only
    write_similarities(store, pairs({("lora-a", "lora-b"): 0.7}, base="other-base"))
    store.engine.dispose()
    return url


def test_matrix_holds_the_newest_value_of_each_pair_and_leaves_the_rest_missing(similarity_store):
    rows = vector_similarities(ResultStore(similarity_store, readonly=True))
    assert similarity.bases(rows) == ["other-base", "base"]
    matrix = similarity.similarity_matrix(rows, "base").cosine
    assert list(matrix.index) == list(matrix.columns) == ["ct-tam", "ct-tel", "ct-uig", "lora-uig"]
    assert matrix.at["ct-tam", "ct-tel"] == matrix.at["ct-tel", "ct-tam"] == 0.52
    assert matrix.at["ct-tel", "ct-uig"] == -0.38 and matrix.at["lora-uig", "lora-uig"] == 1.0
    assert pd.isna(matrix.at["ct-tam", "lora-uig"])
    assert len(similarity.long_form(similarity.similarity_matrix(rows, "base"))) == 16 - 4


def open_page(url: str, monkeypatch) -> AppTest:
    monkeypatch.setenv(STORE_ENV, url)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.sidebar.radio(key="view").set_value("Language vectors").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_page_draws_a_heatmap_table_and_csv_per_base(similarity_store, monkeypatch):
    app = open_page(similarity_store, monkeypatch)
    assert app.selectbox(key="vectors-base").value == "other-base"  # the most recently computed
    app.selectbox(key="vectors-base").set_value("base").run()
    assert not app.exception, [e.value for e in app.exception]
    element = app.get("vega_lite_chart")[0].proto
    chart = json.loads(element.spec)
    marks = [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in chart["layer"]]
    assert marks == ["rect", "text"]
    drawn = convert_arrow_bytes_to_pandas_df(element.datasets[0].data.data)
    cells = {(m, o): c for m, o, c in zip(drawn["model"], drawn["other"], drawn["cosine"])}
    assert cells[("ct-tel", "ct-uig")] == -0.38 and ("ct-tam", "lora-uig") not in cells
    table = app.table[0].value
    assert table.at["ct-tam", "ct-tel"] == 0.52 and pd.isna(table.at["ct-tam", "lora-uig"])
    csv = pd.read_csv(io.StringIO(similarity.to_csv(similarity.similarity_matrix(
        vector_similarities(ResultStore(similarity_store, readonly=True)), "base"))), index_col=0)
    assert csv.at["ct-uig", "ct-tel"] == -0.38 and pd.isna(csv.at["lora-uig", "ct-tam"])
    assert [b.proto.label for b in app.get("download_button")] == ["PNG", "SVG", "Chart data (CSV)", "CSV"]
    assert "against `base`" in app.caption[0].value


def test_a_store_without_similarities_says_how_to_compute_them(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    ResultStore(url).engine.dispose()
    app = open_page(url, monkeypatch)
    assert "harness analyze similarity" in app.info[0].value
