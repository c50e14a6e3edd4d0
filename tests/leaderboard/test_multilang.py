"""Multi-language merges (the paper's Table 5): found from what the registry recorded (kind, langs,
recipe), compared per language with the one-language merges and the baselines."""

import pytest

from harness.store import ModelRecord, ResultStore
from leaderboard import multilang, tables
from tests.leaderboard.conftest import result_row
from tests.leaderboard.test_app import open_app, show

MVF, UIG = "Mongolian (traditional script)", "Uyghur"


def ties(*inputs: str) -> dict:
    return {"merge_method": "ties", "base_model": "base",
            "models": [{"model": m, "parameters": {"weight": 1.0, "density": 0.6}} for m in inputs]}


# model id -> kind, langs, recipe, TC accuracy per language (test split). The multi-language merge's
# id follows no naming scheme: it is found by its record (a merge over two languages).
MODELS = {
    "base": ("base", (), None, {"mvf": 0.20, "uig": 0.30, "tam": 0.10}),
    "sft-flan": ("sft", (), None, {"mvf": 0.30, "uig": 0.40}),
    "sft-mt": ("sft", (), None, {"uig": 0.42}),
    "ct-mvf": ("ct", ("mvf",), None, {"mvf": 0.35}),
    "ct-uig": ("ct", ("uig",), None, {"uig": 0.45}),
    "ties-mvf-flan": ("merge", ("mvf",), ties("sft-flan", "ct-mvf"), {"mvf": 0.50}),
    "ties-uig-flan": ("merge", ("uig",), ties("sft-flan", "ct-uig"), {"uig": 0.60}),
    "ties-uig-mt": ("merge", ("uig",), ties("sft-mt", "ct-uig"), {"uig": 0.70}),  # another SFT model: not its counterpart
    "my-two-language-merge": ("merge", ("mvf", "uig"), ties("sft-flan", "ct-mvf", "ct-uig"), {"mvf": 0.45, "uig": 0.62}),
}


@pytest.fixture
def multi_store(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'results.db'}"
    store = ResultStore(url)
    for model, (kind, langs, recipe, scores) in MODELS.items():
        store.record_model(ModelRecord(f"h-{model}", model, kind, langs, recipe))
        for lang, value in scores.items():
            short = "sib_tam" if lang == "tam" else f"mlic_tc_{lang}"
            store.write_task_results([result_row(model, f"h-{model}", short, value)])
    store.engine.dispose()
    return url


def snapshot(url: str):
    from leaderboard import data

    snap = data.read_store(url)
    return tables.main_scores(snap.results, "test", data.main_metric_lookup()), snap.models


def test_multi_language_merges_are_found_by_record_with_their_one_language_counterparts(multi_store):
    scores, models = snapshot(multi_store)
    (merge,) = multilang.multi_language_merges(scores, models)
    assert merge.model == "my-two-language-merge" and merge.langs == ("mvf", "uig") and merge.method == "ties"
    # Same method over a subset of its inputs: ties-uig-flan, not ties-uig-mt (another SFT model).
    assert merge.singles == {"mvf": "ties-mvf-flan", "uig": "ties-uig-flan"}
    compared = multilang.comparison(scores, merge)
    assert compared.loc[MVF, [multilang.MULTI, multilang.SINGLE, multilang.DELTA]].tolist() == pytest.approx([45, 50, -5])
    assert compared.loc[UIG, multilang.DELTA] == pytest.approx(2.0)
    assert compared.loc[tables.AVERAGE, multilang.DELTA] == pytest.approx(-1.5)


def test_multi_language_view_compares_with_families_per_language(multi_store, monkeypatch):
    app = show(open_app(multi_store, monkeypatch), "Multi-language")
    assert app.selectbox(key="multilang-langs").value == ("mvf", "uig")
    table = app.table[0].value
    assert list(table.columns) == ["Kind", "n", UIG, MVF, tables.AVERAGE]  # these only (no Tamil), in the project's order
    assert table.loc["my-two-language-merge", [MVF, UIG, tables.AVERAGE]].tolist() == pytest.approx([45.0, 62.0, 53.5])
    assert table.loc["TIES-X", [MVF, UIG]].tolist() == pytest.approx([50.0, 60.0])
    assert table.loc["CT-X", [MVF, UIG]].tolist() == pytest.approx([35.0, 45.0])
    assert {"base", "sft-flan", "TIES-X-mt"} <= set(table.index)
    compared = next(t.value for t in app.table if "one-language merge" in t.value.columns)  # after the tie tests
    assert compared.loc[UIG, "one-language merge"] == "ties-uig-flan"
    assert compared.loc[UIG, multilang.DELTA] == pytest.approx(2.0)
    assert [b.label for b in app.get("download_button")] == ["CSV", "Markdown", "LaTeX"]


def test_multi_language_view_without_such_merges_says_how_to_get_one(store_url, monkeypatch):
    app = show(open_app(store_url, monkeypatch), "Multi-language")
    assert "ties-mvf-uig-flan" in app.info[0].value
