"""Conflict analysis (the paper's Figures 3-4): the numbers from conflict_stats.json, and the
Model and Sweeps views that draw them."""

import json

import pandas as pd
import pytest
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
from streamlit.testing.v1 import AppTest

from harness.paths import PROJECT_ROOT
from harness.store import ModelRecord, ResultStore, SweepId, TrialRow, write_sweep_trial
from leaderboard import conflicts
from leaderboard.data import STORE_ENV
from tests.leaderboard.conftest import TIES_SV_STATS
from tests.leaderboard.test_app import open_app, show

APP = str(PROJECT_ROOT / "leaderboard" / "app.py")
KINDS = {"sft-flan": "sft", "ct-uig": "ct", "ct-tam": "ct", "base": "base"}


@pytest.mark.parametrize("tensor, kind, layer", [
    ("model.layers.3.self_attn.q_proj.weight", "attention", 3),
    ("model.layers.12.mlp.down_proj.weight", "MLP", 12),
    ("model.layers.0.post_attention_layernorm.weight", "other", 0),
    ("model.embed_tokens.weight", "embeddings", None),
    ("lm_head.weight", "embeddings", None),
    ("model.norm.weight", "other", None),
    ("transformer.h.5.attn.c_attn.weight", "attention", 5),  # GPT-2 names
    ("transformer.h.5.mlp.c_fc.weight", "MLP", 5),
    ("transformer.wte.weight", "embeddings", None),
])
def test_tensor_type_and_layer_from_the_name(tensor, kind, layer):
    assert conflicts.tensor_type(tensor) == kind
    assert conflicts.layer_of(tensor) == layer


def test_breakdown_of_one_merge_per_model_type_and_layer():
    parts = conflicts.breakdown(TIES_SV_STATS).set_index(["model", "part"])
    sft_total = parts.loc[("sft-flan", "all")]
    assert sft_total[["params", "trimmed", "discarded", "kept_by_slack"]].tolist() == [1000, 600, 30, 12]
    assert sft_total[conflicts.DISCARDED] == pytest.approx(3.0)  # 30 of 1000 parameters
    assert sft_total[conflicts.DISCARDED_OF_KEPT] == pytest.approx(5.0)  # 30 of the 600 trimming kept
    assert sft_total[conflicts.KEPT_BY_SLACK] == pytest.approx(2.0)  # 12 of 600
    assert parts.loc[("sft-flan", "MLP"), conflicts.DISCARDED] == pytest.approx(2.0)
    assert parts.loc[("sft-flan", "embeddings"), conflicts.DISCARDED] == pytest.approx(4.0)
    assert parts.loc[("ct-uig", "MLP"), conflicts.DISCARDED_OF_KEPT] == pytest.approx(40.0)
    # Only the MLP tensor is in a layer: the embeddings are not counted in layer 0.
    assert parts.loc[("sft-flan", "layer 0"), "params"] == 500
    assert list(parts.loc["sft-flan"].index) == ["all", "MLP", "embeddings", "layer 0"]


def stats(sft_counts: dict[str, tuple[int, int, int]], ct: str = "ct-uig", slack: float | None = None) -> dict:
    """conflict_stats.json of a merge of sft-flan and `ct`: (params, discarded, kept by slack) per tensor."""
    tensors = {tensor: {"sft-flan": {"params": p, "trimmed": p, "discarded": d, "kept_by_slack": s},
                        ct: {"params": p, "trimmed": p, "discarded": 0, "kept_by_slack": 0}}
               for tensor, (p, d, s) in sft_counts.items()}
    return {"method": "ties_sv" if slack is not None else "ties", "models": ["sft-flan", ct],
            "protected": "sft-flan" if slack is not None else None, "slack": slack, "tensors": tensors}


def recipe(sft_density: float, ct_density: float, ct: str = "ct-uig", slack: float | None = None) -> dict:
    method = "ties_sv" if slack is not None else "ties"
    return {"merge_method": method, "base_model": "base",
            "models": [{"model": "sft-flan", "parameters": {"weight": 1.0, "density": sft_density,
                                                              **({"protect": True} if slack is not None else {})}},
                       {"model": ct, "parameters": {"weight": 1.0, "density": ct_density}}],
            "parameters": {"slack": slack} if slack is not None else {}}


def two_tensors(attention: int, mlp: int, slack_kept: int = 0) -> dict[str, tuple[int, int, int]]:
    return {"model.layers.0.self_attn.q_proj.weight": (100, attention, slack_kept),
            "model.layers.1.mlp.up_proj.weight": (100, mlp, 0)}


MERGES = [  # model id, langs, recipe, stats
    ("ties-uig-flan@0.2", "uig", recipe(0.2, 0.2), stats(two_tensors(1, 3))),
    ("ties-uig-flan@0.8", "uig", recipe(0.8, 0.8), stats(two_tensors(10, 20))),
    ("ties-uig-flan@0.8,0.2", "uig", recipe(0.8, 0.2), stats(two_tensors(4, 4))),
    ("ties-tam-flan@0.8", "tam", recipe(0.8, 0.8, ct="ct-tam"), stats(two_tensors(2, 2), ct="ct-tam")),
    ("ties-sv-uig-flan@0.1", "uig", recipe(0.8, 0.8, slack=0.1), stats(two_tensors(5, 5, slack_kept=10), slack=0.1)),
    ("ties-sv-uig-flan@0.3", "uig", recipe(0.8, 0.8, slack=0.3), stats(two_tensors(1, 1, slack_kept=40), slack=0.3)),
]


def models_frame(extra: list[dict] = ()) -> pd.DataFrame:
    """The models table's rows for MERGES and the plain models (then `extra`), recorded a minute apart."""
    rows = [{"model": m, "model_hash": f"h-{m}", "kind": "merge", "langs": langs, "recipe_json": json.dumps(r),
             "stats_json": json.dumps(s)} for m, langs, r, s in MERGES]
    rows += [{"model": m, "model_hash": f"h-{m}", "kind": k, "langs": "", "recipe_json": None, "stats_json": None}
             for m, k in KINDS.items()]
    rows += list(extra)
    recorded = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(range(len(rows)), unit="min")
    return pd.DataFrame(rows).assign(created_at=recorded)


def test_merge_points_place_each_merge_by_its_sft_model_and_densities():
    # A WAVG merge (no statistics) and a merge whose SFT model the store cannot tell are left out.
    unknown_sft = {"model": "ties-x", "model_hash": "h-x", "kind": "merge", "langs": "uig",
                   "recipe_json": json.dumps(recipe(0.5, 0.5) | {"models": [
                       {"model": "a", "parameters": {"weight": 1.0, "density": 0.5}},
                       {"model": "b", "parameters": {"weight": 1.0, "density": 0.5}}]}),
                   "stats_json": json.dumps(stats(two_tensors(1, 1)))}
    wavg = {"model": "wavg-uig-flan", "model_hash": "h-w", "kind": "merge", "langs": "uig",
            "recipe_json": json.dumps({"merge_method": "linear", "models": [{"model": "sft-flan"}]}), "stats_json": None}
    # A newer build of a trial replaces the older one (its statistics: 50 of 200 discarded).
    rebuilt = {"model": "ties-uig-flan@0.2", "model_hash": "h-rebuilt", "kind": "merge", "langs": "uig",
               "recipe_json": json.dumps(recipe(0.2, 0.2)), "stats_json": json.dumps(stats(two_tensors(25, 25)))}
    points = conflicts.merge_points(models_frame([unknown_sft, wavg, rebuilt]))
    assert set(points["model"]) == {m for m, *_ in MERGES}
    assert set(points.loc[points["model"] == "ties-uig-flan@0.2", "model_hash"]) == {"h-rebuilt"}
    total = points[points["breakdown"] == "all"].set_index("model")
    assert total.loc["ties-uig-flan@0.8,0.2", [conflicts.SFT_DENSITY, conflicts.CT_DENSITY]].tolist() == [0.8, 0.2]
    assert total.loc["ties-uig-flan@0.8", conflicts.DISCARDED] == pytest.approx(15.0)  # 30 of 200
    assert total.loc["ties-sv-uig-flan@0.3", "slack"] == 0.3
    by_type = points[(points["breakdown"] == "type") & (points["model"] == "ties-uig-flan@0.8")].set_index("part")
    assert by_type.loc["attention", conflicts.DISCARDED] == pytest.approx(10.0)
    assert by_type.loc["MLP", conflicts.DISCARDED] == pytest.approx(20.0)


def test_density_curve_per_language_at_one_ct_density():
    points = conflicts.merge_points(models_frame())
    curve = conflicts.density_curve(points)  # the CT density equal to the SFT's: the paper's one k
    assert curve[["language", conflicts.SFT_DENSITY, conflicts.DISCARDED]].values.tolist() == [
        ["tam", 0.8, pytest.approx(2.0)], ["uig", 0.2, pytest.approx(2.0)], ["uig", 0.8, pytest.approx(15.0)]]
    at_02 = conflicts.density_curve(points, ct_density=0.2)
    assert at_02[conflicts.SFT_DENSITY].tolist() == [0.2, 0.8] and at_02[conflicts.DISCARDED].tolist()[1] == pytest.approx(4.0)


def test_slack_curve_shows_what_the_slack_kept_back():
    curve = conflicts.slack_curve(conflicts.merge_points(models_frame()))
    assert curve["slack"].tolist() == [0.1, 0.3]
    assert curve[conflicts.KEPT_BY_SLACK].tolist() == pytest.approx([5.0, 20.0])  # 10 and 40 of 200 trimmed


def chart_rows(chart) -> list[dict]:
    """The rows of the (single) dataset a Streamlit Vega-Lite chart carries (Arrow bytes in the proto)."""
    (dataset,) = chart.proto.datasets
    return convert_arrow_bytes_to_pandas_df(dataset.data.data).to_dict("records")


def test_model_page_draws_conflicts_by_type_and_layer_with_csv(store_url, monkeypatch):
    app = show(open_app(store_url, monkeypatch), "Model")
    app.selectbox(key="model").set_value("ties-sv-uig-flan").run()
    assert not app.exception, [e.value for e in app.exception]
    by_type, by_layer = app.get("vega_lite_chart")
    rows = {(r["model"], r["part"]): r[conflicts.DISCARDED] for r in chart_rows(by_type)}
    assert rows[("sft-flan", "embeddings")] == pytest.approx(4.0)
    assert rows[("ct-uig", "MLP")] == pytest.approx(24.0)
    assert {r["part"] for r in chart_rows(by_layer)} == {"layer 0"}
    (download,) = [b for b in app.get("download_button") if b.label == "Conflict statistics (CSV)"]
    assert download.proto.label == "Conflict statistics (CSV)"
    # Each chart is a figure like every other: PNG, SVG and its data as CSV beside it.
    labels = [b.label for b in app.get("download_button")]
    assert labels.count("PNG") == labels.count("SVG") == labels.count("Chart data (CSV)") == 2


@pytest.fixture
def sweep_store(tmp_path):
    """Two TIES density sweeps (Uyghur 2x2, Tamil on the diagonal) and a TIES-SV slack sweep, with
    each trial's statistics recorded as harness.evaluation records them (models table, by hash)."""
    url = f"sqlite:///{tmp_path / 'results.db'}"
    store = ResultStore(url)
    sweeps = {SweepId("ties-uig-flan", "densities"): [m for m in MERGES if m[0].startswith("ties-uig")],
              SweepId("ties-tam-flan", "densities"): [m for m in MERGES if m[0].startswith("ties-tam")],
              SweepId("ties-sv-uig-flan", "slack"): [m for m in MERGES if m[0].startswith("ties-sv")]}
    for sweep, trials in sweeps.items():
        for model, langs, trial_recipe, trial_stats in trials:
            store.record_model(ModelRecord(f"h-{model}", model, "merge", (langs,), trial_recipe, trial_stats))
            write_sweep_trial(store, TrialRow(
                sweep=sweep, trial_model=model, model_hash=f"h-{model}", params={"models.sft-flan.density": 0.8},
                recipe=trial_recipe, split="dev", limit=None, score=0.5, lang_scores={langs: 0.5}, scoring_hash="s"))
    for model, kind in KINDS.items():
        store.record_model(ModelRecord(f"h-{model}", model, kind, ()))
    store.engine.dispose()
    return url


def open_sweeps(url: str, monkeypatch) -> AppTest:
    monkeypatch.setenv(STORE_ENV, url)
    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    app.sidebar.radio(key="view").set_value("Sweeps").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_sweeps_view_draws_figure_3_per_language_and_the_sweeps_breakdown(sweep_store, monkeypatch):
    app = open_sweeps(sweep_store, monkeypatch)
    app.selectbox(key="sweep").set_value(SweepId("ties-uig-flan", "densities")).run()
    assert not app.exception, [e.value for e in app.exception]
    charts = app.get("vega_lite_chart")
    # The sweep's line (one axis), its conflicts by type and by layer, then Figure 3 and the slack chart.
    by_type, by_layer, figure3, slack = charts[-4:]
    type_rows = {(r[conflicts.SFT_DENSITY], r["part"]): r[conflicts.DISCARDED] for r in chart_rows(by_type)}
    assert type_rows == {(0.2, "attention"): pytest.approx(1.0), (0.2, "MLP"): pytest.approx(3.0),
                         (0.8, "attention"): pytest.approx(10.0), (0.8, "MLP"): pytest.approx(20.0)}
    assert {r["part"] for r in chart_rows(by_layer)} == {"layer 0", "layer 1"}
    lines = {(r["language"], r[conflicts.SFT_DENSITY]): r[conflicts.DISCARDED] for r in chart_rows(figure3)}
    assert lines == {("tam", 0.8): pytest.approx(2.0), ("uig", 0.2): pytest.approx(2.0), ("uig", 0.8): pytest.approx(15.0)}
    assert [r[conflicts.KEPT_BY_SLACK] for r in chart_rows(slack)] == pytest.approx([5.0, 20.0])
    # CT density 0.2: the trial at (0.2, 0.2) and the off-diagonal one at SFT 0.8 (4 of 100 per tensor).
    app.selectbox(key="sweep-ct-density").set_value(0.2).run()
    by_type = app.get("vega_lite_chart")[-4]
    type_rows = {(r[conflicts.SFT_DENSITY], r["part"]): r[conflicts.DISCARDED] for r in chart_rows(by_type)}
    assert type_rows[(0.8, "attention")] == pytest.approx(4.0) and set(type_rows) == {
        (0.2, "attention"), (0.2, "MLP"), (0.8, "attention"), (0.8, "MLP")}
    (download,) = [b for b in app.get("download_button") if b.label == "Conflict numbers (CSV)"]
    assert download.proto.label == "Conflict numbers (CSV)"
    labels = [b.label for b in app.get("download_button")]
    assert labels.count("PNG") == labels.count("SVG") == len(app.get("vega_lite_chart")) == 5


def test_slack_sweep_draws_the_share_kept_back(sweep_store, monkeypatch):
    app = open_sweeps(sweep_store, monkeypatch)
    app.selectbox(key="sweep").set_value(SweepId("ties-sv-uig-flan", "slack")).run()
    assert not app.exception, [e.value for e in app.exception]
    assert "Conflicts in this sweep (SFT model)" in [s.value for s in app.subheader]
    assert any("slack kept back" in c.value for c in app.caption)
