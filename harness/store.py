"""The results store: one row per (model, task, split, metric), in any SQLAlchemy database.

Default: a SQLite file under the harness home (embedded, nothing to start). A team can share a
PostgreSQL database with `--store postgresql://...`. The leaderboard opens the store read-only.

Tables
- `results`: a metric value of one evaluated task, with everything needed to trust and reproduce it.
  A stored result stands for one `ResultKey`: the model build, the task and its version, the data
  it was scored on, the few-shot count, the backend and the evaluation options (chat template,
  system instruction, few-shot turns, batch size, the vLLM server's context length and extra
  arguments). A run that differs in any of them evaluates again (harness.results.needs_evaluation).
- `models`: what was evaluated (id, kind, languages, recipe, merge conflict statistics, and for a
  point of a checkpoint series its series and CT tokens seen), by hash.
- `sweep_trials`: one scored grid point (or search point) of a `harness sweep`.
- `vector_similarity`: the cosine similarity of two models' language vectors (`harness analyze similarity`).
- `maintenance_times`: the measured training and merge times of a `harness maintain` experiment.
A `harness sweep --search optuna` also keeps its Optuna study here, in Optuna's own tables
(`studies`, `trials`, ...; harness.search).

A store written by an older harness (metric and filter in one string "metric,filter"; a sweep named
"<model>:<grid>"; results without their data fingerprint and few-shot count, or without their
evaluation options; trials without their scoring identity) is upgraded in place when it is opened for writing; see `_upgrade_schema`.
"""

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from harness import HarnessError
from harness.lm_eval_run import DEFAULT_BATCH_SIZE
from harness.paths import default_store_url, harness_home

# `harness leaderboard --store URL` hands the URL to the app through this variable (not the command
# line, where a database password would show in the process list).
STORE_ENV = "HARNESS_LEADERBOARD_STORE"
EVAL_HINT = "evaluate a model first, e.g. `harness eval --model ties-uig`"
NO_FILTER = "none"  # lm-eval's filter name for a metric computed on the unfiltered model output

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
    sa.Column("filter", sa.String(64), nullable=False),  # lm-eval's filter: none, strict-match, ...
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("stderr", sa.Float),
    sa.Column("n", sa.Integer, nullable=False),  # items scored
    sa.Column("backend", sa.String(32), nullable=False),  # vllm | hf | server
    sa.Column("data_hash", sa.String(64), nullable=False),  # tasks.fingerprint.data_fingerprint of the docs scored
    sa.Column("num_fewshot", sa.Integer),  # few-shot examples per prompt (NULL only in rows from before the column)
    # The evaluation options (ResultKey); rows from before these columns get the defaults they were scored with.
    sa.Column("apply_chat_template", sa.Boolean, nullable=False, default=False),
    sa.Column("system_instruction", sa.Text, nullable=False, default=""),  # "": none
    sa.Column("fewshot_as_multiturn", sa.Boolean, nullable=False, default=False),
    sa.Column("batch_size", sa.Integer, nullable=False, default=DEFAULT_BATCH_SIZE),
    sa.Column("max_model_len", sa.Integer, nullable=False, default=0),  # 0: the model's own (vLLM), or hf
    sa.Column("vllm_args", sa.Text, nullable=False, default=""),  # extra server arguments, shell-quoted
    sa.Column("harness_version", sa.String(32), nullable=False),
    sa.Column("lm_eval_version", sa.String(32), nullable=False),
    # The raw lm-eval results JSON and per-sample logs: relative to $HARNESS_HOME when under it, so a
    # moved home keeps them (`stored_run_dir`); rows written before that hold absolute paths.
    sa.Column("run_dir", sa.Text),
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
    # A point of a checkpoint series (harness.registry): the series' id and the CT tokens seen; else NULL.
    sa.Column("series", sa.String(200)),
    sa.Column("tokens", sa.BigInteger),
)


@dataclass(frozen=True)
class ResultKey:
    """What a stored result was computed from; a result stands in only for a run with the same key."""

    model_hash: str
    task: str
    split: str
    task_version: str
    data_hash: str  # a fingerprint of the items scored and the few-shot exemplars
    num_fewshot: int  # as lm-eval applied it (the task's default when none was asked for)
    backend: str  # vllm | hf | server
    # The evaluation options (harness.evaluation.EvalSettings); the defaults are how every result
    # was scored before they were options, so those results stand in for runs with the defaults.
    apply_chat_template: bool = False
    system_instruction: str = ""  # "": none
    fewshot_as_multiturn: bool = False  # as applied: never without the chat template
    batch_size: int = DEFAULT_BATCH_SIZE
    max_model_len: int = 0  # the vLLM server's context length; 0: the model's own (capped), or not a vLLM run
    vllm_args: str = ""  # the extra vLLM server arguments, shell-quoted (shlex.join)

    def identity(self) -> dict:
        """The key's fields, less the evaluation options at their defaults: a sweep's scoring
        identity (harness.evaluation.scoring_identity) taken before the options existed stays valid."""
        return {name: value for name, value in asdict(self).items()
                if name not in EVAL_OPTIONS or value != ResultKey.__dataclass_fields__[name].default}

    def matches(self, table: sa.Table):
        """The SQL condition selecting this key's rows. A server the user started (`server`) is a
        vLLM server scored through the same client as one the harness starts (`vllm`), so the two
        stand in for each other; hf is a different engine."""
        fields = asdict(self)
        backends = VLLM_BACKENDS if fields.pop("backend") in VLLM_BACKENDS else (self.backend,)
        return sa.and_(table.c.backend.in_(backends), *(table.c[name] == value for name, value in fields.items()))


VLLM_BACKENDS = ("vllm", "server")
EVAL_OPTIONS = ("apply_chat_template", "system_instruction", "fewshot_as_multiturn", "batch_size", "max_model_len",
                "vllm_args")


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
    data_hash: str
    num_fewshot: int
    filter: str = NO_FILTER  # the lm-eval filter the metric was computed after
    run_dir: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    apply_chat_template: bool = False  # the evaluation options: ResultKey
    system_instruction: str = ""
    fewshot_as_multiturn: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    max_model_len: int = 0
    vllm_args: str = ""

    @property
    def key(self) -> ResultKey:
        return ResultKey(**{name: getattr(self, name) for name in ResultKey.__dataclass_fields__})


@dataclass
class ModelRecord:
    model_hash: str
    model: str
    kind: str
    langs: tuple[str, ...]
    recipe: dict | None = None
    stats: dict | None = None
    series: str | None = None  # the checkpoint series it is a point of (harness.registry)
    tokens: int | None = None  # CT tokens seen


class ResultStore:
    """Reads and writes results; every write of one task's rows is one transaction."""

    def __init__(self, url: str | None = None, readonly: bool = False):
        self.url = url or default_store_url()
        self.readonly = readonly
        try:
            self.engine = _make_engine(self.url, readonly)
            if not readonly:
                _create_tables(self.engine)
                _upgrade_schema(self.engine)
            elif self._exists() and _pending_upgrades(sa.inspect(self.engine)):
                raise HarnessError(f"results store {self.url} was written by an older harness: open it once for "
                                   "writing (e.g. `harness leaderboard` does) to upgrade it")
        except (sa.exc.ArgumentError, sa.exc.DBAPIError, sqlite3.DatabaseError, ModuleNotFoundError, OSError) as err:
            # DBAPIError covers a file that is not a database ("file is not a database") as well as
            # one the driver cannot reach.
            raise HarnessError(f"cannot open results store {self.url}: {_driver_message(err)}") from None

    def has_result(self, key: ResultKey) -> bool:
        query = sa.select(results_table.c.id).where(key.matches(results_table))
        with self.engine.connect() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def stored_items(self, key: ResultKey) -> int | None:
        """How many items the stored result of the key was scored on (None: not stored).

        A result from a `--limit` run must not stand in for a full evaluation, so callers
        compare this with the number of items they are about to score."""
        query = sa.select(sa.func.max(results_table.c.n)).where(key.matches(results_table))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def write_task_results(self, rows: list[ResultRow]) -> None:
        """Store one task's metrics, replacing an earlier result of the same key (results of the
        task on other data, few-shot counts or backends stay)."""
        if not rows:
            return
        with self.engine.begin() as conn:
            for key in {r.key for r in rows}:
                conn.execute(results_table.delete().where(key.matches(results_table)))
            conn.execute(results_table.insert(), [asdict(r) | {"run_dir": stored_run_dir(r.run_dir)} for r in rows])

    def record_model(self, record: ModelRecord) -> None:
        values = {
            "model_hash": record.model_hash,
            "model": record.model,
            "kind": record.kind,
            "langs": ",".join(record.langs),
            "recipe_json": json.dumps(record.recipe) if record.recipe is not None else None,
            "stats_json": json.dumps(record.stats) if record.stats is not None else None,
            "created_at": datetime.now(timezone.utc),
            "series": record.series,
            "tokens": record.tokens,
        }
        with self.engine.begin() as conn:
            conn.execute(models_table.delete().where(models_table.c.model_hash == record.model_hash))
            conn.execute(models_table.insert(), [values])

    def results(self, split: str | None = None, latest_only: bool = True) -> pd.DataFrame:
        """All result rows; with latest_only, each model id's most recently evaluated build only,
        and of each of its tasks the newest run (`_newest_runs`)."""
        if not self.has_table("results"):
            return pd.DataFrame(columns=[c.name for c in results_table.columns])
        query = sa.select(results_table)
        if split is not None:
            query = query.where(results_table.c.split == split)
        with self.engine.connect() as conn:
            frame = pd.read_sql(query, conn)
        if latest_only and not frame.empty:
            newest = frame.sort_values("created_at").groupby("model")["model_hash"].last()
            frame = _newest_runs(frame[frame["model_hash"] == frame["model"].map(newest)])
        frame["run_dir"] = frame["run_dir"].map(resolved_run_dir)
        return frame.reset_index(drop=True)

    def models(self) -> pd.DataFrame:
        if not self.has_table("models"):
            return pd.DataFrame(columns=[c.name for c in models_table.columns])
        with self.engine.connect() as conn:
            return pd.read_sql(sa.select(models_table), conn)

    def has_table(self, name: str) -> bool:
        return self._exists() and sa.inspect(self.engine).has_table(name)

    def _exists(self) -> bool:
        """False only for a read-only SQLite store whose file does not exist (a read-only open cannot create it)."""
        if self.readonly and self.url.startswith("sqlite"):
            path = sa.engine.make_url(self.url).database
            return bool(path) and Path(path).exists()
        return True


def stored_run_dir(run_dir: str | None) -> str | None:
    """A run folder as the store records it: relative to $HARNESS_HOME when under it."""
    if not run_dir:
        return run_dir
    try:
        return Path(run_dir).resolve().relative_to(harness_home().resolve()).as_posix()
    except ValueError:  # outside the home (e.g. a test's folder): kept absolute
        return run_dir


def resolved_run_dir(run_dir: str | None) -> str | None:
    """A stored run folder as a path to read: a relative one under the current $HARNESS_HOME; an
    absolute one (outside the home, or from a row written before paths were relative) as it is."""
    if not isinstance(run_dir, str) or not run_dir:
        return None
    path = Path(run_dir)
    return str(path if path.is_absolute() else harness_home() / path)


def _driver_message(err: Exception) -> str:
    """The database driver's own words on one line, without SQLAlchemy's statement and help link."""
    original = getattr(err, "orig", None) or err
    return " ".join(f"{type(original).__name__}: {original}".split())[:300]


def _newest_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model, task and split, the rows of the newest run only: a task stored from several data
    folders, few-shot counts, backends or evaluation options shows once, as last evaluated."""
    run = ["model", "task", "split", "data_hash", "num_fewshot", "backend", *EVAL_OPTIONS]
    newest = frame.sort_values("created_at").drop_duplicates(["model", "task", "split"], keep="last")[run]
    return frame.merge(newest, on=run)  # pandas matches NULL num_fewshot (rows from before the column) to NULL


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
        if not path or path == ":memory:":  # each connection would get its own empty database
            raise HarnessError(f"store {url!r} is an in-memory SQLite database: results written there are lost "
                               "when the command ends; give a file, e.g. sqlite:////path/results.db")
        if readonly:
            # A read-only URI connection never creates the file or takes a write lock.
            return sa.create_engine(
                "sqlite://", creator=lambda: __import__("sqlite3").connect(f"file:{path}?mode=ro", uri=True)
            )
        # A new HARNESS_HOME or --store folder: make it, as for the results.
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
    sa.Column("model", sa.String(200), nullable=False),  # the swept registry id
    # densities | weights | slack | file:<stem>, then /optuna-<sampler>-seed<S> for a search and
    # /select-on-test for a sweep that selected on test (harness.trials.sweep_name)
    sa.Column("grid", sa.String(200), nullable=False),
    sa.Column("trial_model", sa.String(400), nullable=False),  # the trial's model id (results are stored under it)
    sa.Column("model_hash", sa.String(64), nullable=False),
    sa.Column("params_json", sa.Text, nullable=False),  # {"models.sft-flan.density": 0.2, ...}
    sa.Column("recipe_json", sa.Text, nullable=False),
    # the split scored, whose scores chose the best: dev (test only with --i-know-this-is-test)
    sa.Column("split", sa.String(8), nullable=False),
    sa.Column("limit", sa.Integer),  # items per task (None: whole split)
    # harness.evaluation.scoring_identity of the trial's dev scoring: its tasks' items, data, few-shot
    # counts and backend ("" in rows from before the column: never reused)
    sa.Column("scoring_hash", sa.String(64), nullable=False, default=""),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("lang_scores_json", sa.Text, nullable=False),  # {"uig": 0.41, ...}
    sa.Column("build_s", sa.Float),
    sa.Column("eval_s", sa.Float),
    sa.Column("chosen", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_sweep_trials_lookup", "model", "grid", "model_hash"),
)


@dataclass(frozen=True)
class SweepId:
    """A sweep is one grid over one registry merge; running it again resumes it."""

    model: str  # the swept registry id
    grid: str  # the grid's name

    @property
    def label(self) -> str:
        """`ties-uig-flan:densities`, for people; the store keeps the two parts in their own columns."""
        return f"{self.model}:{self.grid}"


@dataclass
class TrialRow:
    """One scored grid point, as `write_sweep_trial` stores it."""

    sweep: SweepId
    trial_model: str  # `<id>@<point label>`: the trial's results are stored under this id
    model_hash: str
    params: dict  # the grid point: parameter path -> value
    recipe: dict
    split: str
    limit: int | None  # items per task (None: the whole split)
    score: float
    lang_scores: dict[str, float]
    scoring_hash: str  # harness.evaluation.scoring_identity of the trial's dev tasks and settings
    build_s: float | None = None
    eval_s: float | None = None


def write_sweep_trial(store: ResultStore, row: TrialRow) -> None:
    """Store one trial, replacing an earlier row of the same sweep, model hash and scoring identity."""
    t = sweep_trials_table.c
    with store.engine.begin() as conn:
        conn.execute(sweep_trials_table.delete().where(
            _is_sweep(row.sweep), t.model_hash == row.model_hash, t.scoring_hash == row.scoring_hash))
        conn.execute(sweep_trials_table.insert(), [{
            "model": row.sweep.model, "grid": row.sweep.grid, "trial_model": row.trial_model,
            "model_hash": row.model_hash, "params_json": json.dumps(row.params), "recipe_json": json.dumps(row.recipe),
            "split": row.split, "limit": row.limit, "score": row.score, "lang_scores_json": json.dumps(row.lang_scores),
            "scoring_hash": row.scoring_hash,
            "build_s": row.build_s, "eval_s": row.eval_s, "chosen": False, "created_at": datetime.now(timezone.utc),
        }])


def mark_sweep_choice(store: ResultStore, sweep: SweepId, model_hash: str) -> None:
    """Mark the chosen trial of a sweep (and only it)."""
    t = sweep_trials_table.c
    with store.engine.begin() as conn:
        conn.execute(sweep_trials_table.update().where(_is_sweep(sweep)).values(chosen=(t.model_hash == model_hash)))


def sweep_trials(store: ResultStore, sweep: SweepId | None = None) -> pd.DataFrame:
    """Trial rows (all sweeps, or one), oldest first; empty with the table's columns if none."""
    if not store.has_table("sweep_trials"):
        return pd.DataFrame(columns=[c.name for c in sweep_trials_table.columns])
    query = sa.select(sweep_trials_table).order_by(sweep_trials_table.c.id)
    if sweep is not None:
        query = query.where(_is_sweep(sweep))
    with store.engine.connect() as conn:
        return pd.read_sql(query, conn)


def stored_trial_scores(store: ResultStore, sweep: SweepId, scoring_hash: str) -> dict[str, tuple[float, dict]]:
    """model hash -> (score, language scores) of the sweep's trials stored under the same scoring
    identity (the same items of the same data, few-shot counts and backend): a trial scored on other
    items is not comparable, so it is scored again."""
    t = sweep_trials_table.c
    if not store.has_table("sweep_trials"):
        return {}
    query = sa.select(t.model_hash, t.score, t.lang_scores_json).where(_is_sweep(sweep), t.scoring_hash == scoring_hash)
    with store.engine.connect() as conn:
        return {row.model_hash: (float(row.score), json.loads(row.lang_scores_json)) for row in conn.execute(query)}


def _is_sweep(sweep: SweepId):
    t = sweep_trials_table.c
    return sa.and_(t.model == sweep.model, t.grid == sweep.grid)


# ---- language-vector similarity (harness analyze similarity) ------------------------------------
# One row per ordered pair of models (the diagonal included): the cosine and inner product of their
# language vectors (merges.similarity), both taken against the same base build. A pair computed
# again against the same builds replaces its row.

vector_similarity_table = sa.Table(
    "vector_similarity",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(200), nullable=False),  # registry id
    sa.Column("model_hash", sa.String(64), nullable=False),
    sa.Column("other", sa.String(200), nullable=False),  # registry id of the second model
    sa.Column("other_hash", sa.String(64), nullable=False),
    sa.Column("base", sa.String(200), nullable=False),  # registry id the vectors are taken against
    sa.Column("base_hash", sa.String(64), nullable=False),
    sa.Column("cosine", sa.Float, nullable=False),
    sa.Column("inner", sa.Float, nullable=False),  # <v_model, v_other>; on the diagonal, |v|^2
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_vector_similarity_lookup", "base_hash", "model_hash", "other_hash"),
)


# ---- maintenance times (harness maintain) -----------------------------------------------------------
# One row per timed step of a maintenance experiment (Dmonte et al.'s Table 2): training an adapter
# or making a merge, in the initial build or in the update of one language with more data. A new
# table: a store from before it gets it when opened for writing (create_all), and a read-only
# open of such a store reads no rows (`maintenance_times`), so it needs no entry in UPGRADES.

maintenance_table = sa.Table(
    "maintenance_times",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(64), nullable=False),  # <lang>-x<factor>, e.g. uig-x2
    sa.Column("lang", sa.String(8), nullable=False),  # the updated language
    sa.Column("factor", sa.Integer, nullable=False),  # its examples in the update, in budgets (zoo LoraSetting)
    sa.Column("phase", sa.String(8), nullable=False),  # initial | update
    sa.Column("role", sa.String(8), nullable=False),  # indv | comb | merge
    sa.Column("model", sa.String(200), nullable=False),  # the registry id of what was trained or merged
    sa.Column("evaluated_as", sa.String(400), nullable=False),  # the id its results are stored under
    sa.Column("seconds", sa.Float, nullable=False),  # measured wall time (training: the optimisation alone)
    sa.Column("steps", sa.Integer),  # training only
    sa.Column("examples", sa.Integer),  # training only
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class SimilarityRow:
    model: str
    model_hash: str
    other: str
    other_hash: str
    base: str
    base_hash: str
    cosine: float
    inner: float


def write_similarities(store: ResultStore, rows: list[SimilarityRow]) -> None:
    """Store one similarity matrix in one transaction, replacing earlier rows of the same pairs of builds."""
    t = vector_similarity_table.c
    now = datetime.now(timezone.utc)
    with store.engine.begin() as conn:
        for row in rows:
            conn.execute(vector_similarity_table.delete().where(
                t.model_hash == row.model_hash, t.other_hash == row.other_hash, t.base_hash == row.base_hash))
        conn.execute(vector_similarity_table.insert(), [asdict(row) | {"created_at": now} for row in rows])


def vector_similarities(store: ResultStore) -> pd.DataFrame:
    """Every stored pair, oldest first; empty with the table's columns if none (or a store from before the table)."""
    return _added_table_rows(store, vector_similarity_table)


def _added_table_rows(store: ResultStore, table: sa.Table) -> pd.DataFrame:
    """Every row of a table added after the first stores (no upgrade: see below), oldest first; a
    store from before it reads as no rows, with the table's columns."""
    if not store.has_table(table.name):
        return pd.DataFrame(columns=[c.name for c in table.columns])
    with store.engine.connect() as conn:
        return pd.read_sql(sa.select(table).order_by(table.c.id), conn)


@dataclass(frozen=True)
class TimedStep:
    """One measured step of a maintenance experiment, as `write_maintenance` stores it."""

    phase: str  # initial | update
    role: str  # indv | comb | merge
    model: str
    evaluated_as: str
    seconds: float
    steps: int | None = None
    examples: int | None = None


def write_maintenance(store: ResultStore, experiment: str, lang: str, factor: int, steps: list[TimedStep]) -> None:
    """Store an experiment's steps in one transaction, replacing the rows of an earlier run of it."""
    created = datetime.now(timezone.utc)
    with store.engine.begin() as conn:
        conn.execute(maintenance_table.delete().where(maintenance_table.c.experiment == experiment))
        conn.execute(maintenance_table.insert(), [
            {"experiment": experiment, "lang": lang, "factor": factor, **asdict(step), "created_at": created}
            for step in steps])


def maintenance_times(store: ResultStore) -> pd.DataFrame:
    """Every stored maintenance step, oldest first; empty with the table's columns if none."""
    return _added_table_rows(store, maintenance_table)


# ---- upgrading a store written by an older harness -------------------------------------------
# Before the typed columns, `results.metric` held "metric,filter" for a metric reported under several
# filters and the bare name for one reported under one filter, and a sweep trial named its sweep
# "<model id>:<grid name>" in a column `sweep`. Every task of this project reports its metrics
# unfiltered, so a bare name's filter is `none`. Later, results gained the data fingerprint and the
# few-shot count of their key (`ResultKey`), sweep trials the identity of what they were scored on,
# and results the evaluation options of their key; models, the checkpoint series they are points of.
# Each upgrade adds one column; a table lacking the column still needs that upgrade.
# A table added later (vector_similarity, maintenance_times) needs no upgrade: opening a store for writing creates
# the tables it lacks, and a read-only reader treats a missing table as empty.

@dataclass(frozen=True)
class Upgrade:
    table: str
    adds_column: str
    apply: Callable[[sa.Connection], None]


def _pending_upgrades(inspector) -> list[Upgrade]:
    """The upgrades the store still needs, oldest first."""
    return [upgrade for upgrade in UPGRADES if inspector.has_table(upgrade.table)
            and upgrade.adds_column not in {c["name"] for c in inspector.get_columns(upgrade.table)}]


def _upgrade_schema(engine: sa.Engine) -> None:
    """Bring old-layout tables to the current one, in place, one transaction per upgrade. The check is
    repeated inside the transaction so a second process upgrading at the same moment finds it done."""
    for upgrade in _pending_upgrades(sa.inspect(engine)):
        with engine.begin() as conn:
            if upgrade in _pending_upgrades(sa.inspect(conn)):
                upgrade.apply(conn)


def _upgrade_results(conn: sa.Connection) -> None:
    conn.execute(sa.text("ALTER TABLE results ADD COLUMN filter VARCHAR(64) NOT NULL DEFAULT 'none'"))
    t = results_table.c
    combined = conn.execute(sa.select(t.id, t.metric).where(t.metric.contains(","))).all()
    for row_id, stored in combined:
        metric, _, filter_name = stored.partition(",")
        conn.execute(results_table.update().where(t.id == row_id).values(metric=metric, filter=filter_name))


def _upgrade_sweep_trials(conn: sa.Connection) -> None:
    conn.execute(sa.text("ALTER TABLE sweep_trials ADD COLUMN grid VARCHAR(200) NOT NULL DEFAULT ''"))
    trials = sa.table("sweep_trials", sa.column("id"), sa.column("sweep"), sa.column("model"), sa.column("grid"))
    for row_id, sweep, model in conn.execute(sa.select(trials.c.id, trials.c.sweep, trials.c.model)).all():
        grid = sweep.removeprefix(f"{model}:")  # the grid name may itself hold a colon ("file:grid")
        conn.execute(trials.update().where(trials.c.id == row_id).values(grid=grid))
    conn.execute(sa.text("DROP INDEX ix_sweep_trials_lookup"))
    conn.execute(sa.text("ALTER TABLE sweep_trials DROP COLUMN sweep"))
    next(i for i in sweep_trials_table.indexes if i.name == "ix_sweep_trials_lookup").create(conn)


def _add_result_identity(conn: sa.Connection) -> None:
    """Old results did not record their data or few-shot count. They get data_hash "" (unknown) and a
    NULL few-shot count, which no run's key equals: such a task is evaluated again rather than an old
    score, perhaps from other data, standing in for it. The leaderboard still shows the old rows."""
    conn.execute(sa.text("ALTER TABLE results ADD COLUMN data_hash VARCHAR(64) NOT NULL DEFAULT ''"))
    conn.execute(sa.text("ALTER TABLE results ADD COLUMN num_fewshot INTEGER"))


def _add_trial_scoring_hash(conn: sa.Connection) -> None:
    """Old trials did not record what they were scored on (only `--limit`, the first N items): they get
    scoring_hash "" (unknown), which no run's equals, so they are scored again, never reused."""
    conn.execute(sa.text("ALTER TABLE sweep_trials ADD COLUMN scoring_hash VARCHAR(64) NOT NULL DEFAULT ''"))


def _add_eval_options(conn: sa.Connection) -> None:
    """Old results were all scored without a chat template or system instruction, with batch size
    DEFAULT_BATCH_SIZE and the vLLM server's default context and arguments: the columns' defaults
    say exactly that, so an old result still stands in for a run with the default options (and for
    no other)."""
    for column in ("apply_chat_template BOOLEAN NOT NULL DEFAULT false",
                   "system_instruction TEXT NOT NULL DEFAULT ''",
                   "fewshot_as_multiturn BOOLEAN NOT NULL DEFAULT false",
                   f"batch_size INTEGER NOT NULL DEFAULT {DEFAULT_BATCH_SIZE}",
                   "max_model_len INTEGER NOT NULL DEFAULT 0",
                   "vllm_args TEXT NOT NULL DEFAULT ''"):
        conn.execute(sa.text(f"ALTER TABLE results ADD COLUMN {column}"))


def _add_model_series(conn: sa.Connection) -> None:
    """Models recorded before checkpoint series were points of none: NULL series and tokens say so."""
    conn.execute(sa.text("ALTER TABLE models ADD COLUMN series VARCHAR(200)"))
    conn.execute(sa.text("ALTER TABLE models ADD COLUMN tokens BIGINT"))


UPGRADES = [
    Upgrade("results", "filter", _upgrade_results),
    Upgrade("sweep_trials", "grid", _upgrade_sweep_trials),
    Upgrade("results", "data_hash", _add_result_identity),
    Upgrade("sweep_trials", "scoring_hash", _add_trial_scoring_hash),
    Upgrade("results", "apply_chat_template", _add_eval_options),
    Upgrade("models", "tokens", _add_model_series),
]


# ---- reading results -------------------------------------------------------------------------------

def main_metric_rows(results: pd.DataFrame, main_metric: Callable[[str], str | None]) -> pd.DataFrame:
    """One row per (model, task): the task's main metric. A metric stored under several filters is
    read unfiltered (filter `none`) when stored so, else under its first filter in name order."""
    metric_of = {task: main_metric(task) for task in results["task"].unique()}  # once per task, not per row
    rows = results[results["metric"] == results["task"].map(metric_of)]
    rows = rows.assign(_filtered=rows["filter"] != NO_FILTER).sort_values(["_filtered", "filter"])
    return rows.drop_duplicates(["model", "task"]).drop(columns="_filtered").reset_index(drop=True)


def metric_label(metric: str, filter_name: str) -> str:
    """How tables name a stored metric: `acc` unfiltered, `exact_match (strict-match)` after a filter."""
    return metric if filter_name == NO_FILTER else f"{metric} ({filter_name})"


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases)."""
    parsed = sa.engine.make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    return Path(parsed.database or "")


def check_store_exists(url: str) -> None:
    """A SQLite store must be an existing file: opening it read-only never creates one."""
    try:
        path = sqlite_file(url)
    except sa.exc.ArgumentError:
        raise HarnessError(f"not a database URL: {url!r} (e.g. sqlite:////path/results.db)") from None
    if path is not None and not path.is_file():
        raise HarnessError(f"no results store at {path}: {EVAL_HINT}, or pass --store URL")
