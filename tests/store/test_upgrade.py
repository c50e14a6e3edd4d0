"""A store written by the harness before typed columns ("metric,filter" in one string, sweeps named
"<model>:<grid>") is upgraded when opened for writing and shows the same leaderboard."""

import dataclasses
import json
import math

import pytest
import sqlalchemy as sa

from harness import HarnessError
from harness.store import EVAL_OPTIONS, ResultKey, ResultRow, ResultStore, SweepId, TrialRow, sweep_trials, write_sweep_trial
from leaderboard import data, sweeps, tables

# The tables as the harness wrote them before the upgrade (SQLAlchemy's DDL of the old schema).
OLD_SCHEMA = """
CREATE TABLE results (
    id {id} NOT NULL, model VARCHAR(200) NOT NULL, model_hash VARCHAR(64) NOT NULL, task VARCHAR(200) NOT NULL,
    lang VARCHAR(8) NOT NULL, split VARCHAR(8) NOT NULL, task_version VARCHAR(32) NOT NULL,
    metric VARCHAR(64) NOT NULL, value FLOAT NOT NULL, stderr FLOAT, n INTEGER NOT NULL,
    backend VARCHAR(32) NOT NULL, harness_version VARCHAR(32) NOT NULL, lm_eval_version VARCHAR(32) NOT NULL,
    run_dir TEXT, created_at {time} NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_results_lookup ON results (model_hash, task, split, task_version);
CREATE TABLE models (
    model_hash VARCHAR(64) NOT NULL, model VARCHAR(200) NOT NULL, kind VARCHAR(16) NOT NULL,
    langs VARCHAR(64) NOT NULL, recipe_json TEXT, stats_json TEXT, created_at {time} NOT NULL,
    PRIMARY KEY (model_hash));
CREATE TABLE sweep_trials (
    id {id} NOT NULL, sweep VARCHAR(200) NOT NULL, model VARCHAR(200) NOT NULL, trial_model VARCHAR(400) NOT NULL,
    model_hash VARCHAR(64) NOT NULL, params_json TEXT NOT NULL, recipe_json TEXT NOT NULL, split VARCHAR(8) NOT NULL,
    "limit" INTEGER, score FLOAT NOT NULL, lang_scores_json TEXT NOT NULL, build_s FLOAT, eval_s FLOAT,
    chosen BOOLEAN NOT NULL, created_at {time} NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_sweep_trials_lookup ON sweep_trials (sweep, model_hash)
"""
WHEN = "2026-01-02 03:04:05.000000"
# (model, task, metric as the old harness stored it, value): a metric under several filters was
# stored as "metric,filter", under one filter by its bare name.
OLD_RESULTS = [
    ("ties-uig-flan", "lrm_mlic_tc_uig_test", "acc", 0.80),
    ("ties-uig-flan", "lrm_mlic_math_uig_test", "exact_match,strict-match", 0.30),
    ("ties-uig-flan", "lrm_mlic_math_uig_test", "exact_match,flexible-extract", 0.40),
    ("base", "lrm_mlic_tc_uig_test", "acc", 0.50),
    ("base", "lrm_mlic_tc_uig_test", "acc_norm", 0.99),
    ("base", "lrm_mlic_math_uig_test", "exact_match", 0.10),
    ("sft-flan", "lrm_mlic_tc_uig_test", "acc", 0.60),  # no math: its Uyghur average is missing
]
OLD_TRIALS = [  # (sweep, model hash, params, score, chosen)
    ("ties-uig-flan:file:grid", "h1", {"models.sft-flan.density": 0.2}, 0.30, False),
    ("ties-uig-flan:file:grid", "h2", {"models.sft-flan.density": 0.8}, 0.50, True),
    ("ties-uig-flan:densities", "h3", {"models.sft-flan.density": 0.01}, 0.10, True),
]


@pytest.fixture
def old_store(store_url) -> str:
    engine = sa.create_engine(store_url)
    postgres = engine.dialect.name == "postgresql"
    schema = OLD_SCHEMA.format(id="SERIAL" if postgres else "INTEGER",
                               time="TIMESTAMP WITH TIME ZONE" if postgres else "DATETIME")
    with engine.begin() as conn:
        for statement in schema.split(";"):
            conn.execute(sa.text(statement))
        for model, task, metric, value in OLD_RESULTS:
            conn.execute(sa.text(
                "INSERT INTO results (model, model_hash, task, lang, split, task_version, metric, value, stderr, n, "
                "backend, harness_version, lm_eval_version, run_dir, created_at) VALUES (:model, :hash, :task, 'uig', "
                "'test', '1.0', :metric, :value, 0.05, 50, 'vllm', '0.1.0', '0.4.13', NULL, :when)"),
                {"model": model, "hash": f"hash-{model}", "task": task, "metric": metric, "value": value, "when": WHEN})
        conn.execute(sa.text("INSERT INTO models (model_hash, model, kind, langs, recipe_json, created_at) "
                             "VALUES ('hash-ties-uig-flan', 'ties-uig-flan', 'merge', 'uig', :recipe, :when)"),
                     {"recipe": json.dumps({"merge_method": "ties"}), "when": WHEN})
        for sweep, model_hash, params, score, chosen in OLD_TRIALS:
            conn.execute(sa.text(
                "INSERT INTO sweep_trials (sweep, model, trial_model, model_hash, params_json, recipe_json, split, "
                "\"limit\", score, lang_scores_json, chosen, created_at) VALUES (:sweep, 'ties-uig-flan', :trial, "
                ":hash, :params, '{}', 'dev', 2, :score, :langs, :chosen, :when)"),
                {"sweep": sweep, "trial": f"ties-uig-flan@{model_hash}", "hash": model_hash,
                 "params": json.dumps(params), "score": score, "langs": json.dumps({"uig": score}), "chosen": chosen,
                 "when": WHEN})
    engine.dispose()
    return store_url


def overview(url: str) -> tables.ScoreTable:
    snapshot = data.read_store(url)
    scores = tables.main_scores(snapshot.results, "test", data.main_metric_lookup())
    return tables.overview_table(scores, tables.model_kinds(scores, snapshot.models))


def test_an_old_store_is_upgraded_and_shows_the_same_leaderboard(old_store):
    ResultStore(old_store).engine.dispose()  # opening for writing upgrades it
    table = overview(old_store).frame
    assert table.loc["ties-uig-flan", "Uyghur"] == pytest.approx(60.0)  # TC 80, math 40 (flexible-extract)
    assert table.loc["base", "Uyghur"] == pytest.approx(30.0)  # TC 50 (acc, not acc_norm), math 10
    assert math.isnan(table.loc["sft-flan", "Uyghur"])
    assert table.loc["ties-uig-flan", "Kind"] == "Merge (TIES)"

    rows = ResultStore(old_store).results()
    typed = set(zip(rows["model"], rows["metric"], rows["filter"]))
    assert ("ties-uig-flan", "exact_match", "strict-match") in typed and ("base", "exact_match", "none") in typed
    assert not rows["metric"].str.contains(",").any()


def test_upgraded_sweeps_keep_their_grids_and_choices(old_store):
    store = ResultStore(old_store)
    ResultStore(old_store)  # a second open finds nothing to upgrade
    snapshot = data.read_store(old_store)
    assert sweeps.sweep_ids(snapshot.sweeps) == [SweepId("ties-uig-flan", "densities"),
                                                 SweepId("ties-uig-flan", "file:grid")]
    grid = sweeps.sweep_grid(snapshot.sweeps, SweepId("ties-uig-flan", "file:grid"))
    assert grid.trials[sweeps.SCORE].tolist() == [30.0, 50.0] and grid.trials[sweeps.CHOSEN].tolist() == [False, True]

    # New rows go in beside the upgraded ones.
    write_sweep_trial(store, TrialRow(SweepId("ties-uig-flan", "file:grid"), "ties-uig-flan@h4", "h4",
                                      {"models.sft-flan.density": 0.4}, {}, "dev", 2, 0.2, {"uig": 0.2}, "s"))
    assert sweep_trials(store, SweepId("ties-uig-flan", "file:grid"))["model_hash"].tolist() == ["h1", "h2", "h4"]
    store.write_task_results([ResultRow(model="ct-uig", model_hash="hash-ct", task="lrm_mlic_tc_uig_test", lang="uig",
                                        split="test", task_version="1.0", metric="acc", value=0.7, stderr=None, n=50,
                                        backend="hf", harness_version="t", lm_eval_version="t", data_hash="d",
                                        num_fewshot=0)])
    assert len(store.results()) == len(OLD_RESULTS) + 1


def test_the_read_only_leaderboard_names_an_old_store_instead_of_misreading_it(old_store):
    with pytest.raises(HarnessError, match="written by an older harness"):
        data.read_store(old_store)


def test_upgraded_results_never_stand_in_for_a_new_run(old_store):
    """Old rows did not record their data or few-shot count: unknown, so a run evaluates them again."""
    store = ResultStore(old_store)
    rows = store.results(latest_only=False)
    assert set(rows["data_hash"]) == {""} and rows["num_fewshot"].isna().all()
    for num_fewshot in (0, 5):
        assert store.stored_items(ResultKey("hash-base", "lrm_mlic_tc_uig_test", "test", "1.0", "d", num_fewshot,
                                            "vllm")) is None


def test_results_from_before_the_evaluation_options_stand_in_for_runs_with_the_defaults_only(store_url):
    """They were all scored with the defaults (no chat template or system instruction, batch size 8,
    the vLLM server's own context and arguments); the upgrade records exactly that."""
    store = ResultStore(store_url)
    row = ResultRow(model="ct-uig", model_hash="hash-ct", task="lrm_mlic_tc_uig_test", lang="uig", split="test",
                    task_version="1.0", metric="acc", value=0.7, stderr=None, n=50, backend="vllm",
                    harness_version="t", lm_eval_version="t", data_hash="d", num_fewshot=0)
    store.write_task_results([row])
    with store.engine.begin() as conn:  # back to the layout before the options
        for option in EVAL_OPTIONS:
            conn.execute(sa.text(f"ALTER TABLE results DROP COLUMN {option}"))
    store.engine.dispose()

    upgraded = ResultStore(store_url)
    assert upgraded.stored_items(row.key) == 50
    for option in (dict(apply_chat_template=True), dict(system_instruction="Be brief."),
                   dict(apply_chat_template=True, fewshot_as_multiturn=True), dict(batch_size=4),
                   dict(max_model_len=512), dict(vllm_args="--swap-space 2")):
        assert upgraded.stored_items(dataclasses.replace(row.key, **option)) is None, option
    stored = upgraded.results().iloc[0]
    assert (not stored["apply_chat_template"], stored["system_instruction"], stored["batch_size"],
            stored["max_model_len"], stored["vllm_args"]) == (True, "", 8, 0, "")


def test_a_store_from_before_the_similarity_table_reads_empty_and_gains_it_when_opened_for_writing(store_url):
    from harness.store import SimilarityRow, vector_similarities, write_similarities

    ResultStore(store_url).engine.dispose()
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:  # as a harness before `harness analyze similarity` left it
        conn.execute(sa.text("DROP TABLE vector_similarity"))
    engine.dispose()
    assert data.read_store(store_url).similarities.empty  # the read-only leaderboard: no table, no rows
    store = ResultStore(store_url)  # opening for writing creates the table
    write_similarities(store, [SimilarityRow("ct-a", "ha", "ct-b", "hb", "base", "h0", 0.5, 2.0)])
    assert vector_similarities(store)[["model", "other", "cosine"]].values.tolist() == [["ct-a", "ct-b", 0.5]]
    store.engine.dispose()


def test_models_from_before_checkpoint_series_are_points_of_none_and_new_ones_keep_their_tokens(old_store):
    from harness.store import ModelRecord

    store = ResultStore(old_store)  # opening for writing adds the models' series and tokens
    old = store.models().set_index("model")
    assert old.loc["ties-uig-flan", ["series", "tokens"]].isna().all()
    store.record_model(ModelRecord("hash-ct-uig@step30", "ct-uig@step30", "ct", ("uig",), series="ct-uig",
                                   tokens=61440))
    new = store.models().set_index("model")
    assert (new.loc["ct-uig@step30", "series"], new.loc["ct-uig@step30", "tokens"]) == ("ct-uig", 61440)
    store.engine.dispose()
