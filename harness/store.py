"""The results store: one row per (model, task, split, metric), in any SQLAlchemy database.

Default: a SQLite file under the harness home (embedded, nothing to start). A team can share a
PostgreSQL database with `--store postgresql://...`. The leaderboard opens the store read-only.

Tables
- `results`: a metric value of one evaluated task, with everything needed to trust and reproduce it.
- `models`: what was evaluated (id, kind, languages, recipe, merge conflict statistics), by hash.
"""

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from harness import HarnessError
from harness.paths import default_store_url

metadata = sa.MetaData()

results_table = sa.Table(
    "results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),  # registry id
    sa.Column("model_hash", sa.String(64), nullable=False),
    sa.Column("task", sa.String(200), nullable=False),  # lm-eval task name
    sa.Column("lang", sa.String(8), nullable=False),
    sa.Column("split", sa.String(8), nullable=False),  # dev | test
    sa.Column("task_version", sa.String(32), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),  # e.g. acc, exact_match
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("stderr", sa.Float),
    sa.Column("n", sa.Integer, nullable=False),  # items scored
    sa.Column("backend", sa.String(32), nullable=False),  # vllm | hf | server
    sa.Column("harness_version", sa.String(32), nullable=False),
    sa.Column("lm_eval_version", sa.String(32), nullable=False),
    sa.Column("run_dir", sa.Text),  # raw lm-eval results JSON and per-sample logs
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_results_lookup", "model_hash", "task", "split", "task_version"),
)

models_table = sa.Table(
    "models",
    metadata,
    sa.Column("model_hash", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # base | ct | sft | ctsft | merge
    sa.Column("langs", sa.String(64), nullable=False),  # comma-separated language codes
    sa.Column("recipe_json", sa.Text),  # merges only
    sa.Column("stats_json", sa.Text),  # TIES-family conflict statistics, merges only
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass
class ResultRow:
    model: str
    model_hash: str
    task: str
    lang: str
    split: str
    task_version: str
    metric: str
    value: float
    stderr: float | None
    n: int
    backend: str
    harness_version: str
    lm_eval_version: str
    run_dir: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass
class ModelRecord:
    model_hash: str
    model: str
    kind: str
    langs: tuple[str, ...]
    recipe: dict | None = None
    stats: dict | None = None


class ResultStore:
    """Reads and writes results; every write of one task's rows is one transaction."""

    def __init__(self, url: str | None = None, readonly: bool = False):
        self.url = url or default_store_url()
        self.readonly = readonly
        try:
            self.engine = _make_engine(self.url, readonly)
            if not readonly:
                _create_tables(self.engine)
        except (sa.exc.ArgumentError, sa.exc.OperationalError, ModuleNotFoundError, OSError) as err:
            raise HarnessError(f"cannot open results store {self.url}: {' '.join(str(err).split())[:300]}") from None

    def has_result(self, model_hash: str, task: str, split: str, task_version: str) -> bool:
        query = sa.select(results_table.c.id).where(
            results_table.c.model_hash == model_hash,
            results_table.c.task == task,
            results_table.c.split == split,
            results_table.c.task_version == task_version,
        )
        with self.engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def stored_items(self, model_hash: str, task: str, split: str, task_version: str) -> int | None:
        """How many items the stored result of a task was scored on (None: not stored).

        A result from a `--limit` run must not stand in for a full evaluation, so callers
        compare this with the number of items they are about to score."""
        query = sa.select(sa.func.max(results_table.c.n)).where(
            results_table.c.model_hash == model_hash,
            results_table.c.task == task,
            results_table.c.split == split,
            results_table.c.task_version == task_version,
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def write_task_results(self, rows: list[ResultRow]) -> None:
        """Store one task's metrics, replacing an earlier result of the same task for that model."""
        if not rows:
            return
        keys = {(r.model_hash, r.task, r.split, r.task_version) for r in rows}
        with self.engine.begin() as conn:
            for model_hash, task, split, version in keys:
                conn.execute(
                    results_table.delete().where(
                        results_table.c.model_hash == model_hash,
                        results_table.c.task == task,
                        results_table.c.split == split,
                        results_table.c.task_version == version,
                    )
                )
            conn.execute(results_table.insert(), [asdict(r) for r in rows])

    def record_model(self, record: ModelRecord) -> None:
        values = {
            "model_hash": record.model_hash,
            "model": record.model,
            "kind": record.kind,
            "langs": ",".join(record.langs),
            "recipe_json": json.dumps(record.recipe) if record.recipe is not None else None,
            "stats_json": json.dumps(record.stats) if record.stats is not None else None,
            "created_at": datetime.now(timezone.utc),
        }
        with self.engine.begin() as conn:
            conn.execute(models_table.delete().where(models_table.c.model_hash == record.model_hash))
            conn.execute(models_table.insert(), [values])

    def results(self, split: str | None = None, latest_only: bool = True) -> pd.DataFrame:
        """All result rows; with latest_only, each model id's most recently evaluated build only."""
        if not self._has_table("results"):
            return pd.DataFrame(columns=[c.name for c in results_table.columns])
        query = sa.select(results_table)
        if split is not None:
            query = query.where(results_table.c.split == split)
        with self.engine.connect() as conn:
            frame = pd.read_sql(query, conn)
        if latest_only and not frame.empty:
            newest = frame.sort_values("created_at").groupby("model")["model_hash"].last()
            frame = frame[frame["model_hash"] == frame["model"].map(newest)]
        return frame.reset_index(drop=True)

    def models(self) -> pd.DataFrame:
        if not self._has_table("models"):
            return pd.DataFrame(columns=[c.name for c in models_table.columns])
        with self.engine.connect() as conn:
            return pd.read_sql(sa.select(models_table), conn)


    def _has_table(self, name: str) -> bool:
        if self.readonly and self.url.startswith("sqlite"):
            path = sa.engine.make_url(self.url).database
            if not path or not Path(path).exists():  # nothing stored yet: a read-only open cannot create it
                return False
        return sa.inspect(self.engine).has_table(name)


def _create_tables(engine: sa.Engine, attempts: int = 5) -> None:
    """Create missing tables; a second process creating them at the same moment is not an error.

    On SQLite the check-then-create runs under BEGIN IMMEDIATE, so it cannot race. PostgreSQL
    checks and creates in separate steps: when another process wins the race, check again."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError) as err:
            racing = "already exists" in str(err) or "duplicate key" in str(err)
            if not racing or attempt == attempts - 1:
                raise


def _set_wal(dbapi_conn, patience_s: float = 60.0) -> None:
    """Switch the file to write-ahead logging (readers never block the writer, nor it them).

    The switch needs a moment with no other connection inside a transaction; SQLite reports
    "locked" instead of waiting for that, so wait here."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _make_engine(url: str, readonly: bool) -> sa.Engine:
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if readonly:
            # A read-only URI connection never creates the file or takes a write lock.
            return sa.create_engine(
                "sqlite://", creator=lambda: __import__("sqlite3").connect(f"file:{path}?mode=ro", uri=True)
            )
        if path and path != ":memory:":  # a new HARNESS_HOME or --store folder: make it, as for the results
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # SQLAlchemy, not the sqlite3 module, decides where transactions begin (see _on_begin).
            dbapi_conn.isolation_level = None
            _set_wal(dbapi_conn)

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn):
            # Take the write lock when the transaction starts: a deferred transaction that reads and
            # then writes fails at once ("database is locked") when another process wrote meanwhile,
            # while BEGIN IMMEDIATE waits for the other writer (up to the 60 s timeout).
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


# ---- sweep trials (harness sweep) ----------------------------------------------------------------
# One row per evaluated grid point of a sweep: its parameters, its dev score (the mean of the
# language averages of the main metric) and, once the sweep finishes, which point was chosen.

sweep_trials_table = sa.Table(
    "sweep_trials",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("sweep", sa.String(200), nullable=False),  # "<model id>:<grid name>"
    sa.Column("model", sa.String(200), nullable=False),  # the swept registry id
    sa.Column("trial_model", sa.String(400), nullable=False),  # the trial's model id (results are stored under it)
    sa.Column("model_hash", sa.String(64), nullable=False),
    sa.Column("params_json", sa.Text, nullable=False),  # {"models.sft-flan.density": 0.2, ...}
    sa.Column("recipe_json", sa.Text, nullable=False),
    sa.Column("split", sa.String(8), nullable=False),  # dev
    sa.Column("limit", sa.Integer),  # items per task (None: whole split)
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("lang_scores_json", sa.Text, nullable=False),  # {"uig": 0.41, ...}
    sa.Column("build_s", sa.Float),
    sa.Column("eval_s", sa.Float),
    sa.Column("chosen", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_sweep_trials_lookup", "sweep", "model_hash"),
)


def write_sweep_trial(store: ResultStore, row: dict) -> None:
    """Store one trial, replacing an earlier row of the same sweep, model hash and limit."""
    values = {"chosen": False, "created_at": datetime.now(timezone.utc), **row}
    t = sweep_trials_table.c
    limit_matches = t.limit.is_(None) if values.get("limit") is None else t.limit == values["limit"]
    with store.engine.begin() as conn:
        conn.execute(sweep_trials_table.delete().where(t.sweep == values["sweep"], t.model_hash == values["model_hash"],
                                                       limit_matches))
        conn.execute(sweep_trials_table.insert(), [values])


def mark_sweep_choice(store: ResultStore, sweep: str, model_hash: str) -> None:
    """Mark the chosen trial of a sweep (and only it)."""
    t = sweep_trials_table.c
    with store.engine.begin() as conn:
        conn.execute(sweep_trials_table.update().where(t.sweep == sweep).values(chosen=(t.model_hash == model_hash)))


def sweep_trials(store: ResultStore, sweep: str | None = None) -> pd.DataFrame:
    """Trial rows (all sweeps, or one), oldest first; empty with the table's columns if none."""
    if not store._has_table("sweep_trials"):
        return pd.DataFrame(columns=[c.name for c in sweep_trials_table.columns])
    query = sa.select(sweep_trials_table).order_by(sweep_trials_table.c.id)
    if sweep is not None:
        query = query.where(sweep_trials_table.c.sweep == sweep)
    with store.engine.connect() as conn:
        return pd.read_sql(query, conn)
