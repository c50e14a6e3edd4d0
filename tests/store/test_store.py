"""The results store, against SQLite and a real PostgreSQL: what `harness eval` writes and the leaderboard reads."""

import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from harness import HarnessError
from harness.store import ModelRecord, ResultKey, ResultRow, ResultStore


def row(task="lrm_sib_uig_dev", metric="acc", value=0.5, model="ties-uig", model_hash="h1", version="1.0", **extra):
    return ResultRow(
        model=model, model_hash=model_hash, task=task, lang="uig", split="dev", task_version=version,
        metric=metric, value=value, stderr=0.1, n=10, backend="vllm", harness_version="0.1.0",
        lm_eval_version="0.4.13", data_hash="d1", num_fewshot=0, **({"run_dir": "/runs/1"} | extra),
    )


def key(model_hash="h1", task="lrm_sib_uig_dev", split="dev", version="1.0", data_hash="d1", num_fewshot=0, backend="vllm"):
    return ResultKey(model_hash, task, split, version, data_hash, num_fewshot, backend)


def test_rows_round_trip_and_has_result_keys_on_hash_task_split_version(store_url):
    store = ResultStore(store_url)
    store.write_task_results([row(metric="acc", value=0.25), row(metric="f1", value=0.5)])
    frame = store.results()
    assert sorted(zip(frame["metric"], frame["value"])) == [("acc", 0.25), ("f1", 0.5)]
    assert set(frame["backend"]) == {"vllm"} and set(frame["n"]) == {10}
    assert store.has_result(key())
    assert not store.has_result(key(version="2.0"))  # a new task version re-evaluates
    assert not store.has_result(key(split="test"))
    assert not store.has_result(key(model_hash="h2"))
    assert not store.has_result(key(data_hash="d2"))  # other data
    assert not store.has_result(key(num_fewshot=5))
    assert not store.has_result(key(backend="hf"))
    assert store.has_result(key(backend="server"))  # a vLLM server the user started scores as ours does
    assert store.stored_items(key()) == 10
    assert store.stored_items(key(version="2.0")) is None


def test_rewriting_a_task_replaces_its_rows_and_keeps_other_tasks(store_url):
    store = ResultStore(store_url)
    store.write_task_results([row(value=0.1)])
    store.write_task_results([row(task="lrm_mlic_tc_uig_dev", value=0.7)])
    store.write_task_results([row(value=0.9)])  # --force
    frame = store.results().sort_values("task")
    assert list(zip(frame["task"], frame["value"])) == [("lrm_mlic_tc_uig_dev", 0.7), ("lrm_sib_uig_dev", 0.9)]


def test_a_failed_task_write_leaves_the_earlier_result_intact(store_url):
    store = ResultStore(store_url)
    store.write_task_results([row(value=0.3)])
    with pytest.raises(Exception):
        store.write_task_results([row(value=0.8), row(metric="f1", value=None)])  # value is NOT NULL
    frame = store.results()
    assert list(zip(frame["metric"], frame["value"])) == [("acc", 0.3)]


def test_latest_only_keeps_each_models_newest_build(store_url):
    store = ResultStore(store_url)
    old = datetime.now(timezone.utc) - timedelta(days=1)
    store.write_task_results([row(model_hash="old", value=0.1, created_at=old)])
    store.write_task_results([row(model_hash="new", value=0.2)])
    store.write_task_results([row(model="ct-uig", model_hash="ct", value=0.3)])
    latest = store.results(latest_only=True)
    assert sorted(zip(latest["model"], latest["model_hash"])) == [("ct-uig", "ct"), ("ties-uig", "new")]
    assert len(store.results(latest_only=False)) == 3
    assert len(store.results(split="test")) == 0


def test_model_records_keep_recipe_and_conflict_stats(store_url):
    store = ResultStore(store_url)
    stats = {"method": "ties", "models": ["sft-flan", "ct-uig"], "total": {"ct-uig": {"params": 10, "trimmed": 6}}}
    store.record_model(ModelRecord("h1", "ties-uig", "merge", ("uig",), {"merge_method": "ties"}, stats))
    store.record_model(ModelRecord("h1", "ties-uig", "merge", ("uig",), {"merge_method": "ties"}, stats))  # idempotent
    store.record_model(ModelRecord("h2", "ct-uig", "ct", ("uig",)))
    models = store.models().set_index("model_hash")
    assert len(models) == 2
    assert models.loc["h1", "langs"] == "uig" and models.loc["h1", "kind"] == "merge"
    import json

    assert json.loads(models.loc["h1", "stats_json"]) == stats
    assert models.loc["h2", "recipe_json"] is None or models.loc["h2", "recipe_json"] != models.loc["h2", "recipe_json"]


WRITER = textwrap.dedent("""
    import sys
    from harness.store import ResultRow, ResultStore
    url, who, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = ResultStore(url)  # both processes may create the tables at the same moment
    for i in range(tasks):
        store.write_task_results([
            ResultRow(model=who, model_hash=who, task=f"lrm_sib_uig_dev_{i}", lang="uig", split="dev",
                      task_version="1.0", metric=metric, value=i / tasks, stderr=None, n=1, backend="hf",
                      harness_version="t", lm_eval_version="t", data_hash="d", num_fewshot=0)
            for metric in ("acc", "acc_norm")
        ])
""")


def test_two_processes_writing_at_once_lose_no_rows(store_url):
    tasks = 40
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, store_url, who, str(tasks)], stderr=subprocess.PIPE, text=True)
        for who in ("model-a", "model-b")
    ]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    frame = ResultStore(store_url).results(latest_only=False)
    assert frame.groupby("model").size().to_dict() == {"model-a": 2 * tasks, "model-b": 2 * tasks}


def test_readonly_sqlite_store_never_creates_a_file(tmp_path):
    path = tmp_path / "none.db"
    store = ResultStore(f"sqlite:///{path}", readonly=True)
    assert store.results().empty
    assert not path.exists()


def test_unusable_store_url_is_a_one_line_error(tmp_path):
    with pytest.raises(HarnessError, match="cannot open results store"):
        ResultStore("nosuchdb://x/y")
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(HarnessError, match="cannot open results store"):
        ResultStore(f"sqlite:///{tmp_path}/a-file/results.db")


def test_a_sqlite_store_in_a_new_folder_creates_the_folder(tmp_path):
    # A fresh HARNESS_HOME, or --store pointing into a folder not made yet, must just work.
    path = tmp_path / "new" / "home" / "results.db"
    ResultStore(f"sqlite:///{path}").write_task_results([row()])
    assert ResultStore(f"sqlite:///{path}", readonly=True).stored_items(key()) == 10


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_store_is_refused_because_its_results_would_be_lost(url):
    for readonly in (False, True):
        with pytest.raises(HarnessError, match="in-memory SQLite database: results written there are lost"):
            ResultStore(url, readonly=readonly)


def test_run_folders_under_the_home_are_stored_relative_so_a_moved_home_keeps_them(tmp_path, monkeypatch):
    old_home, new_home = tmp_path / "old-home", tmp_path / "new-home"
    monkeypatch.setenv("HARNESS_HOME", str(old_home))
    url = f"sqlite:///{tmp_path / 'results.db'}"
    store = ResultStore(url)
    store.write_task_results([row(run_dir=str(old_home / "results" / "ties-uig" / "run1")),
                              row(task="lrm_sib_tam_dev", run_dir="/elsewhere/run2")])
    with store.engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT task, run_dir FROM results")).all())
    assert stored["lrm_sib_uig_dev"] == "results/ties-uig/run1"
    assert stored["lrm_sib_tam_dev"] == "/elsewhere/run2"  # outside the home: kept absolute
    monkeypatch.setenv("HARNESS_HOME", str(new_home))  # the home moved
    read = store.results().set_index("task")["run_dir"]
    assert read["lrm_sib_uig_dev"] == str(new_home / "results" / "ties-uig" / "run1")
    assert read["lrm_sib_tam_dev"] == "/elsewhere/run2"
