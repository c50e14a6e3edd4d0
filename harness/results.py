"""lm-eval's results as store rows, and whether a task's result is stored already.

A task's result is stored already for a model build when the store holds it for the same model
hash, split and task version, scored on at least as many items as this run would score: a
`--limit` result does not stand in for a full one. `--force` evaluates it again anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness import __version__
from harness.store import ModelRecord, ResultRow, ResultStore
from tasks import suite

if TYPE_CHECKING:
    from harness.evaluation import EvalSettings, ModelUnderTest


def needs_evaluation(store: ResultStore, model: ModelUnderTest, name: str, task, settings: EvalSettings) -> bool:
    """Whether `harness eval` must evaluate the task now (see the module's docstring)."""
    if settings.force:
        return True
    stored_items = store.stored_items(model.model_hash, name, settings.split, str(task.VERSION))
    return stored_items is None or stored_items < items_to_score(task, settings.limit)


def items_to_score(task, limit: int | None) -> int:
    """Items a run scores: the split's size, or fewer with --limit."""
    size = len(task.eval_docs)
    return size if limit is None else min(limit, size)


def result_rows(results: dict, task: str, model: ModelUnderTest, settings: EvalSettings,
                run_dir: Path) -> list[ResultRow]:
    """One row per (metric, filter) lm-eval reports for the task; lm-eval names them `metric,filter`."""
    from lm_eval import __version__ as lm_eval_version

    values = results["results"][task]
    n = int(results["n-samples"][task]["effective"])
    rows = []
    for key, value in values.items():
        if "," not in key or "_stderr," in key:  # `alias`, and the stderr that goes with each metric
            continue
        metric, filter_name = key.split(",", 1)
        stderr = values.get(f"{metric}_stderr,{filter_name}")
        rows.append(ResultRow(
            model=model.id,
            model_hash=model.model_hash,
            task=task,
            lang=suite.lang_of(task),
            split=settings.split,
            task_version=str(results["versions"][task]),
            metric=metric,
            filter=filter_name,
            value=float(value),
            stderr=float(stderr) if isinstance(stderr, (int, float)) else None,  # lm-eval writes "N/A" if unknown
            n=n,
            backend=settings.backend_label,
            harness_version=__version__,
            lm_eval_version=lm_eval_version,
            run_dir=str(run_dir),
        ))
    return rows


def model_record(model: ModelUnderTest) -> ModelRecord:
    return ModelRecord(model.model_hash, model.id, model.kind, model.langs, model.recipe, model.stats)
