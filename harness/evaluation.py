"""Evaluating a model on tasks and storing each task's rows as it completes; `harness eval`,
`harness sweep` and `harness regress` all evaluate through `evaluate`.

    tasks -> those not stored yet (harness.results.needs_evaluation)
      -> a backend: vLLM server, a running server, or in-process transformers (harness.lm_eval_run)
      -> per task: lm-eval -> raw files in a run folder -> store rows (harness.results) -> the store

Tasks are evaluated and stored one at a time, so a run that is interrupted (Ctrl-C, a crashed
server) resumes with the tasks not stored yet; if every task is stored, no backend opens.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from harness import HarnessError, lm_eval_run
from harness.environment import patched_environ
from harness.results import model_record, needs_evaluation, result_key, result_rows
from harness.store import ResultKey, ResultStore, main_metric_rows
from tasks import suite
from tasks.suite import SPLITS, TASKS_DIR
from tasks.averages import LanguageAverage, language_average


# ---- what is evaluated, and how --------------------------------------------------------------

@dataclass(frozen=True)
class ModelUnderTest:
    """A local checkpoint folder and the identity its results are stored under."""

    id: str
    path: Path
    model_hash: str
    kind: str
    langs: tuple[str, ...] = ()
    recipe: dict | None = None
    stats: dict | None = None

    @classmethod
    def from_built(cls, built) -> "ModelUnderTest":
        """From harness.build.BuiltModel."""
        entry = built.entry
        return cls(entry.id, Path(built.path), built.model_hash, entry.kind, tuple(entry.langs), entry.recipe, built.stats)


@dataclass
class EvalSettings:
    split: str = "test"
    limit: int | None = None
    num_fewshot: int | None = None
    backend: str = "vllm"  # vllm | hf (harness.lm_eval_run.BACKENDS)
    server_url: str | None = None  # use this running server instead of starting one
    store_url: str | None = None  # SQLAlchemy URL; None: the SQLite file under the harness home
    data_dir: Path | None = None  # local task data; None: the tasks read the hub datasets
    force: bool = False
    device: str = "cpu"  # cpu | cuda
    task_dir: Path = TASKS_DIR  # lm-eval include path holding the task YAML files
    num_concurrent: int = 2  # parallel HTTP requests to the server
    batch_size: int = 8  # prompts per request (API) or per forward pass (hf)
    max_retries: int = 3  # per API request, before the task fails
    progress: bool = True

    @property
    def backend_label(self) -> str:
        """What the store records: vllm, hf, or server (a server the harness did not start)."""
        return "server" if self.server_url else self.backend


@dataclass
class TaskOutcome:
    task: str
    version: str
    status: str  # evaluated | skipped (already stored)
    key: ResultKey  # the result the report shows for the task


@dataclass
class EvalReport:
    model: ModelUnderTest
    settings: EvalSettings
    run_dir: Path | None  # None when every task was already stored
    outcomes: list[TaskOutcome] = field(default_factory=list)
    store_url: str = ""

    @property
    def tasks(self) -> list[str]:
        return [outcome.task for outcome in self.outcomes]


# ---- the evaluation ----------------------------------------------------------------------------

def evaluate(model: ModelUnderTest, tasks: list[str], settings: EvalSettings) -> EvalReport:
    """Evaluate `model` on the tasks not stored yet and store each task's metrics as it completes."""
    if settings.split not in SPLITS:
        raise HarnessError(f"split must be one of {', '.join(SPLITS)}, got {settings.split!r}")
    if not tasks:
        raise HarnessError("no tasks to evaluate")
    store = ResultStore(settings.store_url)
    report = EvalReport(model=model, settings=settings, run_dir=None, store_url=store.url)
    with task_data(settings):
        pending = []
        for key, task, due in _keyed_tasks(store, model, tasks, settings):
            if due:
                pending.append((key, task))
            else:
                report.outcomes.append(TaskOutcome(key.task, str(task.VERSION), "skipped", key))
        if not pending:
            return report
        report.run_dir = lm_eval_run.new_run_dir(model)
        with lm_eval_run.open_backend(model, settings, report.run_dir) as backend:
            for key, task in tqdm(pending, desc=f"{model.id}: tasks", unit="task", disable=not settings.progress):
                rows = result_rows(backend.evaluate_task(key.task, task), key, model, report.run_dir)
                if not any(o.status == "evaluated" for o in report.outcomes):
                    store.record_model(model_record(model))  # with its first result, never without one
                store.write_task_results(rows)
                report.outcomes.append(TaskOutcome(key.task, str(task.VERSION), "evaluated", key))
    return report


def pending_tasks(model: ModelUnderTest, tasks: list[str], settings: EvalSettings) -> list[str]:
    """The tasks `evaluate` would run now; lets a caller that manages its own server (harness
    sweep) skip starting it."""
    with task_data(settings):
        return [key.task for key, _, due in _keyed_tasks(ResultStore(settings.store_url), model, tasks, settings) if due]


def _keyed_tasks(store: ResultStore, model: ModelUnderTest, tasks: list[str], settings: EvalSettings):
    """(result key, lm-eval task, whether it must be evaluated now) per task, in order; the one
    place `evaluate` and `pending_tasks` decide what is stored already."""
    for name, task in lm_eval_run.load_tasks(tasks, settings.task_dir).items():
        key = result_key(model, name, task, settings)
        yield key, task, needs_evaluation(store, key, task, settings)


def task_data(settings: EvalSettings):
    """The environment under which the tasks read their data: `settings.data_dir`, or the hub."""
    return patched_environ(suite.data_env(settings.data_dir))


# ---- what a run stored -------------------------------------------------------------------------

def stored_rows(report: EvalReport) -> pd.DataFrame:
    """The stored rows of the report's tasks under the run's keys (this run's and earlier ones'):
    never a result of the task from other data, few-shot counts or backends."""
    frame = ResultStore(report.store_url).results(split=report.settings.split, latest_only=False)
    keys = pd.DataFrame([asdict(outcome.key) for outcome in report.outcomes], columns=list(ResultKey.__dataclass_fields__))
    return frame.merge(keys, on=list(keys.columns))


def language_averages(report: EvalReport, rows: pd.DataFrame | None = None) -> dict[str, LanguageAverage]:
    """Per language of the report's tasks: the average over those tasks (tasks.averages)."""
    rows = stored_rows(report) if rows is None else rows
    main = main_metric_rows(rows, suite.main_metric)
    scores = dict(zip(main["task"], main["value"]))
    expected: dict[str, list[str]] = {}
    for task in report.tasks:
        expected.setdefault(suite.lang_of(task), []).append(task)
    return {lang: language_average(tasks, scores) for lang, tasks in expected.items()}
