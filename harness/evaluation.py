"""Evaluating a model on tasks and storing each task's rows as it completes; `harness eval`,
`harness sweep` and `harness regress` all evaluate through `evaluate`.

    tasks -> those not stored yet (harness.results.needs_evaluation)
      -> a backend: vLLM server, a running server, or in-process transformers (harness.lm_eval_run)
      -> per task: lm-eval -> raw files in a run folder -> store rows (harness.results) -> the store

Tasks are evaluated and stored one at a time, so a run that is interrupted (Ctrl-C, a crashed
server) resumes with the tasks not stored yet; if every task is stored, no backend opens. The run
folder keeps only finished tasks' files (harness.lm_eval_run.run_folder).
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from harness import HarnessError, lm_eval_run
from harness.environment import patched_environ
from harness.results import model_record, needs_evaluation, result_key, result_rows, scored_items
from harness.store import ResultKey, ResultStore, main_metric_rows
from tasks import suite
from tasks.suite import SPLITS, TASKS_DIR
from tasks.averages import LanguageAverage, language_average, language_tasks


# ---- what is evaluated, and how --------------------------------------------------------------

@dataclass(frozen=True)
class ModelUnderTest:
    """A local checkpoint folder, or a LoRA adapter folder over a base model, and the identity its
    results are stored under."""

    id: str
    path: Path
    model_hash: str
    kind: str
    langs: tuple[str, ...] = ()
    recipe: dict | None = None
    stats: dict | None = None
    base: "ModelUnderTest | None" = None  # for an adapter (`path` is its PEFT folder): the model it applies to
    series: str | None = None  # a point of a checkpoint series (harness.registry): the series' id
    tokens: int | None = None  # and the CT tokens seen

    @classmethod
    def from_built(cls, built) -> "ModelUnderTest":
        """From harness.build.BuiltModel."""
        entry = built.entry
        base = cls.from_built(built.base) if built.base is not None else None
        return cls(entry.id, Path(built.path), built.model_hash, entry.kind, tuple(entry.langs), entry.recipe,
                   built.stats, base, entry.series_id, entry.tokens)

    @property
    def checkpoint_dir(self) -> Path:
        """The full checkpoint the backends load (config, tokenizer, weights): an adapter's base's."""
        return self.base.path if self.base is not None else self.path


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
    batch_size: int = lm_eval_run.DEFAULT_BATCH_SIZE  # prompts per request (API) or per forward pass (hf)
    max_retries: int = 3  # per API request, before the task fails
    progress: bool = True
    # How prompts are written (lm-eval's options of the same names); part of each result's key.
    apply_chat_template: bool = False  # render each prompt with the tokenizer's chat template
    system_instruction: str | None = None  # a system message (plain text before the prompt without a template)
    fewshot_as_multiturn: bool | None = None  # None: as lm-eval's CLI, on with the chat template, else off
    # The vLLM server the harness starts; part of each result's key too.
    max_model_len: int | None = None  # None: the model's context length, capped (harness.server)
    vllm_args: tuple[str, ...] = ()  # extra server arguments, e.g. ("--swap-space", "2")

    def __post_init__(self):
        """Bad option combinations fail here, before anything is built or served."""
        from harness.server import check_extra_args

        for name in ("limit", "batch_size", "max_model_len"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise HarnessError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
        if self.fewshot_as_multiturn and not self.apply_chat_template:
            raise HarnessError("--fewshot-as-multiturn writes the few-shot examples as chat turns: "
                               "it needs --apply-chat-template")
        if self.backend == "hf" and (self.max_model_len is not None or self.vllm_args):
            raise HarnessError("--max-model-len and --vllm-arg are vLLM server settings; "
                               "they cannot go with --backend hf")
        self.vllm_args = tuple(self.vllm_args)
        check_extra_args(list(self.vllm_args))

    @property
    def backend_label(self) -> str:
        """What the store records: vllm, hf, or server (a server the harness did not start)."""
        return "server" if self.server_url else self.backend

    @property
    def multiturn_fewshot(self) -> bool:
        """Whether few-shot examples are separate chat turns (lm-eval's `fewshot_as_multiturn`)."""
        return self.apply_chat_template if self.fewshot_as_multiturn is None else self.fewshot_as_multiturn


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
        for planned in _planned_tasks(store, model, tasks, settings):
            if planned.due:
                pending.append(planned)
            else:
                report.outcomes.append(TaskOutcome(planned.key.task, str(planned.task.VERSION), "skipped", planned.key))
        if not pending:
            return report
        with (lm_eval_run.run_folder(model) as report.run_dir,
              lm_eval_run.open_backend(model, settings, report.run_dir) as backend):
            for planned in tqdm(pending, desc=f"{model.id}: tasks", unit="task", disable=not settings.progress):
                key, task = planned.key, planned.task
                results = backend.evaluate_task(key.task, task, planned.items)
                rows = result_rows(results, key, len(planned.items), model, report.run_dir)
                if not any(o.status == "evaluated" for o in report.outcomes):
                    store.record_model(model_record(model))  # with its first result, never without one
                store.write_task_results(rows)
                report.outcomes.append(TaskOutcome(key.task, str(task.VERSION), "evaluated", key))
    return report


def pending_tasks(model: ModelUnderTest, tasks: list[str], settings: EvalSettings) -> list[str]:
    """The tasks `evaluate` would run now; lets a caller that manages its own server (harness
    sweep) skip starting it."""
    with task_data(settings):
        store = ResultStore(settings.store_url)
        return [planned.key.task for planned in _planned_tasks(store, model, tasks, settings) if planned.due]


@dataclass(frozen=True)
class PlannedTask:
    key: ResultKey  # what its result is stored under
    task: object  # the lm-eval Task, its data loaded
    items: list[int]  # indices of the items scored (harness.results.scored_items)
    due: bool  # whether it must be evaluated now (not stored under the key)


def _planned_tasks(store: ResultStore, model: ModelUnderTest, tasks: list[str], settings: EvalSettings):
    """Each task as a PlannedTask, in order; the one place `evaluate` and `pending_tasks` decide
    what is stored already."""
    for name, task in lm_eval_run.load_tasks(tasks, settings.task_dir).items():
        items = scored_items(task, settings.limit)
        key = result_key(model.model_hash, name, task, items, settings)
        yield PlannedTask(key, task, items, needs_evaluation(store, key, len(items), settings))


def scoring_identity(tasks: list[str], settings: EvalSettings) -> str:
    """sha256 (hex) of what scoring `tasks` under `settings` means for any model: per task its
    result key less the model (version, fingerprint of the scored items and exemplars, few-shot
    count, backend, the evaluation options not at their defaults: ResultKey.identity) and the number
    of items. Sweep trials are reused only under the same identity."""
    with task_data(settings):
        keys = []
        for name, task in lm_eval_run.load_tasks(tasks, settings.task_dir).items():
            items = scored_items(task, settings.limit)
            keys.append({**result_key("", name, task, items, settings).identity(), "items": len(items)})
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()


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
    """Per language of the report's default-suite tasks: its average over all of its default-suite
    tasks on the split (tasks.averages.language_tasks), missing where the run lacks one of them or its
    score. Tasks outside the default suite (`--suite all`) are scored but not averaged, so a
    language's average covers the same benchmarks whatever the suite of the run."""
    rows = stored_rows(report) if rows is None else rows
    main = main_metric_rows(rows, suite.main_metric)
    scores = dict(zip(main["task"], main["value"]))
    langs = dict.fromkeys(suite.lang_of(task) for task in report.tasks if suite.in_default_suite(task))
    return {lang: language_average(language_tasks(lang, report.settings.split, report.tasks), scores) for lang in langs}
