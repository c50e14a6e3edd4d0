"""lm-eval's results as store rows, and whether a task's result is stored already.

A task's result is stored already for a model build when the store holds it under the same key
(harness.store.ResultKey: model hash, split, task version, data fingerprint, few-shot count and
backend), scored on at least as many items as this run would score: a `--limit` result does not
stand in for a full one. A result from other data (the zoo's synthetic copy when this run reads
the real datasets), another few-shot count or another backend never stands in. `--force`
evaluates it again anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness import __version__
from harness.store import ModelRecord, ResultKey, ResultRow, ResultStore
from tasks import suite
from tasks.fingerprint import data_fingerprint

if TYPE_CHECKING:
    from harness.evaluation import EvalSettings, ModelUnderTest


def result_key(model: ModelUnderTest, name: str, task, settings: EvalSettings) -> ResultKey:
    """The key this run stores the task's result under; `task` is the lm-eval Task, its data loaded
    (under harness.evaluation.task_data, so from the run's data folder or the hub)."""
    return ResultKey(
        model_hash=model.model_hash,
        task=name,
        split=settings.split,
        task_version=str(task.VERSION),
        data_hash=data_fingerprint(task.eval_docs, task.fewshot_docs() or []),
        num_fewshot=fewshot_count(task, settings.num_fewshot),
        backend=settings.backend_label,
    )


def fewshot_count(task, requested: int | None) -> int:
    """The few-shot count lm-eval's simple_evaluate applies: the task's default (0 if it has none)
    unless one is requested, and never more than 0 for a task whose default is 0."""
    default = task.get_config("num_fewshot")
    if requested is None or default == 0:
        return default or 0
    return requested


def needs_evaluation(store: ResultStore, key: ResultKey, task, settings: EvalSettings) -> bool:
    """Whether `harness eval` must evaluate the task now (see the module's docstring)."""
    if settings.force:
        return True
    stored_items = store.stored_items(key)
    return stored_items is None or stored_items < items_to_score(task, settings.limit)


def items_to_score(task, limit: int | None) -> int:
    """Items a run scores: the split's size, or fewer with --limit."""
    size = len(task.eval_docs)
    return size if limit is None else min(limit, size)


def result_rows(results: dict, key: ResultKey, model: ModelUnderTest, run_dir: Path) -> list[ResultRow]:
    """One row per (metric, filter) lm-eval reports for the task; lm-eval names them `metric,filter`.
    The rows are stored under `key`, the one `needs_evaluation` looked up."""
    from lm_eval import __version__ as lm_eval_version

    task = key.task
    values = results["results"][task]
    n = int(results["n-samples"][task]["effective"])
    rows = []
    for reported, value in values.items():
        if "," not in reported or "_stderr," in reported:  # `alias`, and the stderr that goes with each metric
            continue
        metric, filter_name = reported.split(",", 1)
        stderr = values.get(f"{metric}_stderr,{filter_name}")
        rows.append(ResultRow(
            model=model.id,
            model_hash=key.model_hash,
            task=task,
            lang=suite.lang_of(task),
            split=key.split,
            task_version=key.task_version,
            metric=metric,
            filter=filter_name,
            value=float(value),
            stderr=float(stderr) if isinstance(stderr, (int, float)) else None,  # lm-eval writes "N/A" if unknown
            n=n,
            backend=key.backend,
            harness_version=__version__,
            lm_eval_version=lm_eval_version,
            data_hash=key.data_hash,
            num_fewshot=key.num_fewshot,
            run_dir=str(run_dir),
        ))
    return rows


def model_record(model: ModelUnderTest) -> ModelRecord:
    return ModelRecord(model.model_hash, model.id, model.kind, model.langs, model.recipe, model.stats)
