"""Running a sweep: every grid point as a trial, built, scored on dev and stored; then the best.

For each grid point: derive a recipe from the model's (harness.grids), build it through the merge
cache (the trial is registered as a temporary registry entry `<id>@<params>`, so `materialize`
caches it like any merge), evaluate it on the dev split of the model's languages
(harness.trial_scoring), and store the trial (harness.store.TrialRow; score = mean over languages
of each language's average, tasks.averages). Trials already stored for the same sweep, model hash
and scoring identity (harness.evaluation.scoring_identity: the same items of the same data, few-shot
counts and backend) are skipped, so an interrupted sweep resumes where it stopped. Then the best trial
(first in grid order on a tie) is evaluated on test under the id `<id>@best` and written to the
tuned registry (harness.tuned).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from harness import HarnessError
from harness.build import materialize
from harness.evaluation import EvalReport, EvalSettings, ModelUnderTest, language_averages, scoring_identity
from harness.grids import Grid, apply_point, point_label
from harness.paths import harness_home
from harness.store import ResultStore, SweepId, TrialRow, mark_sweep_choice, stored_trial_scores, write_sweep_trial
from harness.trial_scoring import TrialEvaluator
from harness.tuned import register_best
from tasks import suite


@dataclass
class Trial:
    point: dict
    model_id: str  # `<id>@<label>`
    recipe: dict
    score: float | None = None
    lang_scores: dict | None = None
    model_hash: str | None = None
    status: str = "pending"  # pending | evaluated | stored


@dataclass
class SweepResult:
    sweep: SweepId
    trials: list[Trial]
    best: Trial | None
    test_scores: dict | None  # language -> average on test (None: not evaluated)
    test_report: EvalReport | None  # the best trial's test evaluation (None: not evaluated)
    tuned_registry: Path | None
    total_s: float = 0.0
    eval_s: float = 0.0  # time spent scoring trials (server starts and merges excluded)


def plan_trials(registry, model_id: str, grid: Grid) -> list[Trial]:
    """Every grid point as a trial, each recipe validated before anything is built."""
    entry = registry.resolve(model_id)
    if entry.recipe is None:
        raise HarnessError(f"model {entry.id!r} is a checkpoint, not a merge: there is nothing to sweep")
    recipe = dict(entry.recipe)
    kinds = {mid: registry.models[mid].kind for mid in entry.recipe_model_ids()}
    sft = [m["model"] for m in recipe["models"] if kinds.get(m["model"]) == "sft"]
    trials = []
    for point in grid.points():
        derived = apply_point(recipe, point, sft[0] if len(sft) == 1 else None)
        _validate(derived, point)
        trials.append(Trial(point, f"{entry.id}@{point_label(point)}", derived))
    return trials


def _validate(recipe: dict, point: dict) -> None:
    import merges

    try:
        merges.load_recipe(recipe)
    except merges.MergeError as err:
        raise HarnessError(f"grid point {point_label(point)}: {err}") from None


def with_trial(registry, base_id: str, trial: Trial):
    """A registry copy holding the trial as a merge entry (so materialize builds and caches it)."""
    base = registry.resolve(base_id)
    entry = dataclasses.replace(base, id=trial.model_id, recipe=trial.recipe, aliases=(),
                                description=f"sweep trial of {base.id}: {point_label(trial.point)}")
    return dataclasses.replace(registry, models={**registry.models, trial.model_id: entry})


def run_sweep(registry, model_id: str, grid: Grid, settings: EvalSettings, server_mode: str = "reload",
              evaluate_test: bool = True, progress: bool = True) -> SweepResult:
    """Build, evaluate and store every trial not stored yet; choose the best; test and register it."""
    started = time.monotonic()
    entry = registry.resolve(model_id)
    if not entry.langs:
        raise HarnessError(f"model {entry.id!r} has no languages in the registry: no dev tasks to tune on")
    trials = plan_trials(registry, entry.id, grid)
    sweep = SweepId(entry.id, grid.name)
    store = ResultStore(settings.store_url)
    dev_tasks = [task for lang in entry.langs for task in suite.task_names(lang, "dev")]
    scoring = scoring_identity(dev_tasks, dataclasses.replace(settings, split="dev"))
    stored = stored_trial_scores(store, sweep, scoring)
    log_dir = harness_home() / "sweeps" / "logs" / entry.id
    with TrialEvaluator(settings, server_mode, log_dir) as evaluator:
        bar = tqdm(trials, desc=f"sweep {sweep.label}", unit="trial", disable=not progress)
        for trial in bar:
            bar.set_postfix_str(point_label(trial.point)[:60])
            trial_registry = with_trial(registry, entry.id, trial)
            build_start = time.monotonic()
            built = materialize(trial_registry, trial.model_id, device=settings.device, progress=False)
            build_s = time.monotonic() - build_start
            trial.model_hash = built.model_hash
            if built.model_hash in stored:
                trial.score, trial.lang_scores = stored[built.model_hash]
                trial.status = "stored"
                continue
            eval_before = evaluator.eval_s
            report = evaluator.evaluate(ModelUnderTest.from_built(built), dev_tasks, "dev")
            trial.lang_scores = language_scores(report, entry.langs)
            trial.score = sum(trial.lang_scores.values()) / len(trial.lang_scores)
            trial.status = "evaluated"
            write_sweep_trial(store, TrialRow(
                sweep=sweep, trial_model=trial.model_id, model_hash=built.model_hash, params=trial.point,
                recipe=trial.recipe, split="dev", limit=settings.limit, score=trial.score,
                lang_scores=trial.lang_scores, scoring_hash=scoring, build_s=build_s, eval_s=evaluator.eval_s - eval_before,
            ))
        best = max(trials, key=lambda t: t.score)  # max keeps the first of equal scores: grid order
        mark_sweep_choice(store, sweep, best.model_hash)
        trial_eval_s = evaluator.eval_s
        test_scores, tuned, test_report = None, None, None
        if evaluate_test:
            best_id = f"{entry.id}@best"
            tuned = register_best(registry, entry.id, best)
            built = materialize(with_trial(registry, entry.id, best), best.model_id, device=settings.device, progress=False)
            model = dataclasses.replace(ModelUnderTest.from_built(built), id=best_id)
            test_tasks = [task for lang in entry.langs for task in suite.task_names(lang, "test")]
            test_report = evaluator.evaluate(model, test_tasks, "test")
            test_scores = language_scores(test_report, entry.langs)
    return SweepResult(sweep, trials, best, test_scores, test_report, tuned, time.monotonic() - started, trial_eval_s)


def language_scores(report: EvalReport, langs) -> dict[str, float]:
    """Each language's average (tasks.averages); a language without one is an error."""
    averages = language_averages(report)
    missing = [lang for lang in langs if lang not in averages or averages[lang].value is None]
    if missing:
        raise HarnessError(f"no scores for language(s) {missing} in the evaluation of {report.model.id}")
    return {lang: averages[lang].value for lang in langs}
