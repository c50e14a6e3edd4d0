"""The second paper's setting on the zoo, end to end (issue #20): the zoo's INDV, COMB and merged LoRA
adapters are evaluated, the maintenance experiment is measured, the language vectors compared, and
the leaderboard shows all three from the stored numbers (the store: tests/zoo/conftest.py)."""

from harness.store import ResultStore, maintenance_times, vector_similarities
from tests.leaderboard.test_app import open_app, show
from tests.zoo.conftest import ADAPTERS, SIMILARITY_MODELS


def test_adapters_evaluated_timed_and_compared_show_in_the_leaderboard(zoo_store, monkeypatch):
    store = ResultStore(zoo_store.url)
    results = store.results(latest_only=True)
    assert set(ADAPTERS) <= set(results.loc[results["split"] == "test", "model"])
    kinds = store.models().drop_duplicates("model", keep="last").set_index("model")["kind"]
    assert kinds["lora-uig"] == "adapter" and kinds["lora-ties"] == "merge"

    times = maintenance_times(store)
    roles = set(zip(times["phase"], times["role"]))
    assert {("initial", "indv"), ("initial", "comb"), ("initial", "merge"),
            ("update", "indv"), ("update", "comb"), ("update", "merge")} <= roles
    assert (times["seconds"] > 0).all()

    similarities = vector_similarities(store)
    diagonal = similarities[similarities["model"] == similarities["other"]]
    assert len(diagonal) == len(SIMILARITY_MODELS) and diagonal["cosine"].round(6).eq(1.0).all()
    off = similarities[similarities["model"] != similarities["other"]]
    assert off["cosine"].between(-1, 1).all() and not off["cosine"].round(6).eq(1.0).any()
    store.engine.dispose()

    app = show(open_app(zoo_store.url, monkeypatch), "Maintenance")
    table = app.table[0].value
    assert {"COMB", "INDV sequential + merge", "INDV parallel + merge", "INDV one adapter + merge"} == set(table["approach"])
    assert {"lora-ties", "lora-knots-ties", "lora-ties@uig-x2"} <= set(table["model"])
    assert (table["total s"] > 0).all()
    app = show(app, "Language vectors")
    assert app.get("arrow_vega_lite_chart") or app.get("vega_lite_chart")
