"""The results store: one row per (model, task, split, metric), in any SQLAlchemy database.

Default: a SQLite file under the harness home (embedded, nothing to start). A team can share a
PostgreSQL database with `--store postgresql://...`. The leaderboard opens the store read-only.

Tables
- `results`: a metric value of one evaluated task, with everything needed to trust and reproduce it.
- `models`: what was evaluated (id, kind, languages, recipe, merge conflict statistics), by hash.
"""

import json
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
        except (sa.exc.ArgumentError, sa.exc.OperationalError, ModuleNotFoundError) as err:
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


def _create_tables(engine: sa.Engine) -> None:
    """Create missing tables; a second process creating them at the same moment is not an error."""
    try:
        metadata.create_all(engine)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError) as err:
        if "already exists" not in str(err) and "duplicate key" not in str(err):
            raise
        metadata.create_all(engine)  # the other process won the race; everything exists now


def _make_engine(url: str, readonly: bool) -> sa.Engine:
    if url.startswith("sqlite"):
        if readonly:
            path = sa.engine.make_url(url).database
            # A read-only URI connection never creates the file or takes a write lock.
            return sa.create_engine(
                "sqlite://", creator=lambda: __import__("sqlite3").connect(f"file:{path}?mode=ro", uri=True)
            )
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _wal(dbapi_conn, _record):  # concurrent writers wait for each other instead of failing
            dbapi_conn.execute("PRAGMA journal_mode=WAL")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)
