"""lm-eval's results as store rows, and whether a task's result is stored already.

A task's result is stored already for a model build when the store holds it under the same key
(harness.store.ResultKey: model hash, split, task version, data fingerprint, few-shot count,
backend and evaluation options) and scored on as many items as this run scores. The data
fingerprint is taken over exactly the items this run scores (all of the split, or the fixed
`--limit` sample of tasks.sample) and the few-shot exemplars, so a stored result stands in only for
a run over the identical item set: a 10-item result never for a 5-item run nor for a full one, a
result from other data (the zoo's synthetic copy when this run reads the real datasets), another
few-shot count, backend, chat template, system instruction, batch size or vLLM server setting
never. `--force` evaluates it again anyway.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from harness import HarnessError, __version__
from harness.store import EVAL_OPTIONS, ModelRecord, ResultKey, ResultRow, ResultStore
from tasks import suite
from tasks.fingerprint import data_fingerprint
from tasks.sample import limit_sample

if TYPE_CHECKING:
    from harness.evaluation import EvalSettings, ModelUnderTest


def result_key(model_hash: str, name: str, task, items: list[int], settings: EvalSettings) -> ResultKey:
    """The key this run stores the task's result under; `task` is the lm-eval Task, its data loaded
    (under harness.evaluation.task_data, so from the run's data folder or the hub), `items` the
    indices it scores (`scored_items`)."""
    docs = task.eval_docs
    return ResultKey(
        model_hash=model_hash,
        task=name,
        split=settings.split,
        task_version=str(task.VERSION),
        data_hash=data_fingerprint((docs[i] for i in items), task.fewshot_docs() or []),
        num_fewshot=fewshot_count(task, settings.num_fewshot),
        backend=settings.backend_label,
        apply_chat_template=settings.apply_chat_template,
        system_instruction=settings.system_instruction or "",
        fewshot_as_multiturn=settings.multiturn_fewshot,
        batch_size=settings.batch_size,
        max_model_len=settings.max_model_len or 0,
        vllm_args=shlex.join(settings.vllm_args),
    )


def scored_items(task, limit: int | None) -> list[int]:
    """Indices of the task's items a run scores: all of them, or the `--limit` sample (tasks.sample),
    stratified by the correct choice for a multiple-choice task."""
    docs = task.eval_docs
    if limit is None or limit >= len(docs):
        return list(range(len(docs)))
    choice_task = task.OUTPUT_TYPE == "multiple_choice"
    return limit_sample([task.doc_to_target(doc) if choice_task else None for doc in docs], limit)


def fewshot_count(task, requested: int | None) -> int:
    """The few-shot count lm-eval's simple_evaluate applies: the task's default (0 if it has none)
    unless one is requested, and never more than 0 for a task whose default is 0."""
    default = task.get_config("num_fewshot")
    if requested is None or default == 0:
        return default or 0
    return requested


def needs_evaluation(store: ResultStore, key: ResultKey, items: int, settings: EvalSettings) -> bool:
    """Whether `harness eval` must evaluate the task now (see the module's docstring). The item count
    matters for results stored before the fingerprint covered only the scored items: those of a
    first-N `--limit` run carry the fingerprint of the whole split, so only their count tells them
    from a full result."""
    return settings.force or store.stored_items(key) != items


def result_rows(results: dict, key: ResultKey, items: int, model: ModelUnderTest, run_dir: Path) -> list[ResultRow]:
    """One row per (metric, filter) lm-eval reports for the task; lm-eval names them `metric,filter`.
    The rows are stored under `key`, the one `needs_evaluation` looked up for `items` items."""
    from lm_eval import __version__ as lm_eval_version

    task = key.task
    values = results["results"][task]
    n = int(results["n-samples"][task]["effective"])
    if n != items:  # the key's fingerprint would name items the result was not scored on
        raise HarnessError(f"lm-eval scored {n} items of task {task}, the run asked for {items}")
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
            **{option: getattr(key, option) for option in EVAL_OPTIONS},
        ))
    return rows


def model_record(model: ModelUnderTest) -> ModelRecord:
    return ModelRecord(model.model_hash, model.id, model.kind, model.langs, model.recipe, model.stats,
                       model.series, model.tokens)
