"""Running a sweep: every grid point (or every point a search asks for) as a trial, built, scored on
the selection split and stored; then the best.

For each point: derive a recipe from the model's (harness.grids), build it through the merge cache
(the trial is registered as a temporary registry entry `<id>@<params>`, so `materialize` caches it
like any merge), evaluate it on the selection split (dev) of the model's languages
(harness.trial_scoring), and store the trial (harness.store.TrialRow; score = mean over languages
of each language's average, tasks.averages). Trials already stored for the same sweep, model hash
and scoring identity (harness.evaluation.scoring_identity: the same items of the same data, few-shot
counts and backend) are skipped, so an interrupted sweep resumes where it stopped. A search
(harness.search) asks its points from an Optuna study kept in the store, under the same rules. Then
the best trial (first in grid or study order on a tie) is evaluated on test under the id `<id>@best`
and written to the tuned registry (harness.tuned).

The trials are scored one after another in this process (the local executor), or on Ray workers,
each with its own backend and merge cache (`ray=`: harness.ray_trials; a search keeps one trial per
worker in flight); either way a SweepJob says what scoring a trial means, and each trial is stored
as it is scored.

Selection reads dev scores only: selecting on test (`select_split="test"`) is refused unless the
caller says it knows (`allow_test_selection`, the CLI's --i-know-this-is-test); such a sweep gets a
name of its own (`<grid>/select-on-test`) and its trials record the split that chose them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tqdm import tqdm

from harness import HarnessError
from harness.build import materialize
from harness.evaluation import EvalReport, EvalSettings, ModelUnderTest, language_averages, scoring_identity
from harness.grids import Grid, apply_point, check_selection, point_label
from harness.paths import harness_home
from harness.search import Search, check_search_settings, completed_points, open_study, run_study
from harness.store import ResultStore, SweepId, TrialRow, mark_sweep_choice, stored_trial_scores, write_sweep_trial
from harness.trial_scoring import TrialEvaluator
from harness.tuned import register_best
from tasks import suite

if TYPE_CHECKING:
    from harness.ray_trials import RaySettings


@dataclass
class Trial:
    point: dict
    model_id: str  # `<id>@<label>`
    recipe: dict
    score: float | None = None
    lang_scores: dict | None = None
    model_hash: str | None = None
    status: str = "pending"  # pending | evaluated | stored
    eval_s: float = 0.0  # seconds spent scoring it (0 when read from the store)


@dataclass
class SweepResult:
    sweep: SweepId
    trials: list[Trial]
    best: Trial | None
    test_scores: dict | None  # language -> average on test (None: not evaluated)
    test_report: EvalReport | None  # the best trial's test evaluation (None: not evaluated)
    tuned_registry: Path | None
    total_s: float = 0.0
    eval_s: float = 0.0  # time spent scoring trials, summed over them (server starts and merges excluded)
    select_split: str = "dev"  # the split whose scores chose the best


class TrialPlanner:
    """Points of one registry merge as trials, each recipe validated before anything is built."""

    def __init__(self, registry, model_id: str):
        entry = registry.resolve(model_id)
        if entry.recipe is None:
            raise HarnessError(f"model {entry.id!r} is a checkpoint, not a merge: there is nothing to sweep")
        self.entry = entry
        kinds = {mid: registry.models[mid].kind for mid in entry.recipe_model_ids()}
        sft = [m["model"] for m in entry.recipe["models"] if kinds.get(m["model"]) == "sft"]
        self.sft_model = sft[0] if len(sft) == 1 else None

    def trial(self, point: dict, what: str = "grid point") -> Trial:
        """The trial of `point`; a recipe the merge library refuses is an error naming the point."""
        import merges

        recipe = apply_point(dict(self.entry.recipe), point, self.sft_model)
        try:
            merges.load_recipe(recipe)
        except merges.MergeError as err:
            raise HarnessError(f"{what} {point_label(point)}: {err}") from None
        return Trial(point, f"{self.entry.id}@{point_label(point)}", recipe)

    def check_space(self, search: Search) -> None:
        """Both ends of every range through the recipe checks (the bounds are inclusive, so every
        value between them passes too); numbers only: an integer parameter is no range to search."""
        for path, r in search.space.ranges.items():
            for end in (r.low, r.high):
                self.trial({path: end}, what="search range")


def plan_trials(registry, model_id: str, grid: Grid) -> list[Trial]:
    """Every grid point as a trial, each recipe validated before anything is built."""
    planner = TrialPlanner(registry, model_id)
    return [planner.trial(point) for point in grid.points()]


def with_trial(registry, base_id: str, trial: Trial):
    """A registry copy holding the trial as a merge entry (so materialize builds and caches it)."""
    base = registry.resolve(base_id)
    entry = dataclasses.replace(base, id=trial.model_id, recipe=trial.recipe, aliases=(), tokens=None,  # no series point
                                description=f"sweep trial of {base.id}: {point_label(trial.point)}")
    return dataclasses.replace(registry, models={**registry.models, trial.model_id: entry})


class TrialBackend(Protocol):
    """How a trial is built and scored: merged and evaluated (MergedTrials), or a test's stand-in."""

    def build(self, trial: Trial) -> str:
        """Build the trial's model; its model hash."""

    def evaluate(self, trial: Trial) -> tuple[dict[str, float], float]:
        """The built trial's score per language on the selection split, and the seconds spent scoring."""


class MergedTrials:
    """Trials merged through the merge cache and evaluated by a TrialEvaluator."""

    def __init__(self, registry, model_id: str, settings: EvalSettings, evaluator: TrialEvaluator, split: str):
        self.registry = registry
        self.entry = registry.resolve(model_id)
        self.settings = settings
        self.evaluator = evaluator
        self.split = split
        self.tasks = [task for lang in self.entry.langs for task in suite.task_names(lang, split)]
        self.built = {}  # trial model id -> harness.build.BuiltModel

    def build(self, trial: Trial) -> str:
        trial_registry = with_trial(self.registry, self.entry.id, trial)
        built = materialize(trial_registry, trial.model_id, device=self.settings.device, progress=False)
        self.built[trial.model_id] = built
        return built.model_hash

    def evaluate(self, trial: Trial) -> tuple[dict[str, float], float]:
        model = ModelUnderTest.from_built(self.built[trial.model_id])
        eval_before = self.evaluator.eval_s  # scoring only: a server start is not the trial's cost
        report = self.evaluator.evaluate(model, self.tasks, self.split)
        return language_scores(report, self.entry.langs), self.evaluator.eval_s - eval_before


class TrialScorer:
    """Scores trials of one sweep: a trial stored under the same model hash and scoring identity is
    read from the store, any other is evaluated and stored (one transaction per trial). The store is
    read again before each trial: another process (a Ray worker, harness.ray_trials) may have stored
    it meanwhile."""

    def __init__(self, store: ResultStore, sweep: SweepId, scoring: str, split: str, limit: int | None,
                 backend: TrialBackend):
        self.store = store
        self.sweep = sweep
        self.scoring = scoring
        self.split = split
        self.limit = limit
        self.backend = backend

    def score(self, trial: Trial) -> Trial:
        build_start = time.monotonic()
        trial.model_hash = self.backend.build(trial)
        build_s = time.monotonic() - build_start
        stored = stored_trial_scores(self.store, self.sweep, self.scoring).get(trial.model_hash)
        if stored is not None:
            trial.score, trial.lang_scores = stored
            trial.status = "stored"
            return trial
        trial.lang_scores, eval_s = self.backend.evaluate(trial)
        trial.eval_s = eval_s
        trial.score = sum(trial.lang_scores.values()) / len(trial.lang_scores)
        trial.status = "evaluated"
        write_sweep_trial(self.store, TrialRow(
            sweep=self.sweep, trial_model=trial.model_id, model_hash=trial.model_hash, params=trial.point,
            recipe=trial.recipe, split=self.split, limit=self.limit, score=trial.score,
            lang_scores=trial.lang_scores, scoring_hash=self.scoring, build_s=build_s,
            eval_s=eval_s,
        ))
        return trial


@dataclass
class SweepJob:
    """Everything a process needs to score the sweep's trials: this one (the local executor) or a
    Ray worker (harness.ray_trials), each with its own evaluator."""

    registry: object  # harness.registry.Registry
    model_id: str
    settings: EvalSettings
    server_mode: str  # reload | fresh (harness.trial_scoring)
    sweep: SweepId
    scoring: str  # harness.evaluation.scoring_identity of the selection split
    split: str  # the selection split
    log_dir: Path  # where vLLM server logs go

    def scorer(self, evaluator: TrialEvaluator) -> TrialScorer:
        backend = MergedTrials(self.registry, self.model_id, self.settings, evaluator, self.split)
        return TrialScorer(ResultStore(self.settings.store_url), self.sweep, self.scoring, self.split,
                           self.settings.limit, backend)


def score_grid(trials: list[Trial], scorer: TrialScorer, progress: bool = True) -> list[Trial]:
    """Every grid point's trial (plan_trials), in grid order."""
    bar = tqdm(trials, desc=f"sweep {scorer.sweep.label}", unit="trial", disable=not progress)
    for trial in bar:
        bar.set_postfix_str(point_label(trial.point)[:60])
        scorer.score(trial)
    return trials


def score_search(planner: TrialPlanner, search: Search, scorer: TrialScorer, progress: bool = True) -> list[Trial]:
    """The study's points until it has `search.settings.trials` completed trials, in study order; the
    points of an earlier run of the same study are read back from the store (built from the merge
    cache, not evaluated again). The ranges were checked by `planner.check_space`."""
    study = open_study(scorer.store.url, study_name(scorer.sweep, scorer.scoring), search)
    scored = {}  # trial model id -> this run's trial
    bar = tqdm(total=search.settings.trials, desc=f"search {scorer.sweep.label}", unit="trial", disable=not progress)
    bar.update(len(completed_points(study, search.space)))

    def score(point: dict) -> float:
        trial = scorer.score(planner.trial(point, what="search point"))
        scored[trial.model_id] = trial
        return trial.score

    with bar:
        run_study(study, search, score, progress=lambda done: bar.update(done - bar.n))
    return study_trials(planner, study, search, scored, lambda earlier: [scorer.score(t) for t in earlier])


def study_trials(planner: TrialPlanner, study, search: Search, scored: dict[str, Trial],
                 read_back: Callable[[list[Trial]], list[Trial]]) -> list[Trial]:
    """The study's completed trials in study order: this run's as `scored` (trial model id -> trial),
    an earlier run's through `read_back` (built from the merge cache, their scores read from the store)."""
    trials = [planner.trial(point) for point in completed_points(study, search.space)]
    earlier = iter(read_back([trial for trial in trials if trial.model_id not in scored]))
    return [scored[trial.model_id] if trial.model_id in scored else next(earlier) for trial in trials]


def scoring_plan(planner: TrialPlanner, plan: Grid | Search, progress: bool,
                 ray: RaySettings | None = None) -> Callable[[SweepJob, TrialEvaluator], list[Trial]]:
    """How a sweep's trials are scored: one after another here, or on Ray workers (harness.ray_trials).
    Every grid point, or every range of a search, is checked here, before anything is built or stored."""
    if isinstance(plan, Search):
        check_search_settings(plan.settings)
        planner.check_space(plan)
        if ray is not None:
            from harness.ray_trials import search_on_ray  # imports Ray, an optional extra

            return lambda job, evaluator: search_on_ray(planner, plan, job, ray, progress)
        return lambda job, evaluator: score_search(planner, plan, job.scorer(evaluator), progress)
    trials = [planner.trial(point) for point in plan.points()]
    if ray is not None:
        from harness.ray_trials import score_on_ray  # imports Ray, an optional extra

        return lambda job, evaluator: score_on_ray(trials, job, ray, progress)
    return lambda job, evaluator: score_grid(trials, job.scorer(evaluator), progress)


def study_name(sweep: SweepId, scoring: str) -> str:
    """The sweep and what its trials are scored on: scores on other items are another study."""
    return f"harness-sweep:{sweep.label}:{scoring[:16]}"


def sweep_name(plan: Grid | Search, select_split: str) -> str:
    """A sweep selecting on test is another sweep: its trials never mix with a dev sweep's."""
    return plan.name if select_split == "dev" else f"{plan.name}/select-on-{select_split}"


def run_sweep(registry, model_id: str, plan: Grid | Search, settings: EvalSettings, server_mode: str = "reload",
              evaluate_test: bool = True, progress: bool = True, select_split: str = "dev",
              allow_test_selection: bool = False, ray: RaySettings | None = None) -> SweepResult:
    """Build, evaluate and store every trial not stored yet; choose the best; test and register it.
    With `ray`, the trials are scored on Ray workers (harness.ray_trials), the test here."""
    check_selection(select_split, allow_test_selection)
    started = time.monotonic()
    entry = registry.resolve(model_id)
    if not entry.langs:
        raise HarnessError(f"model {entry.id!r} has no languages in the registry: no dev tasks to tune on")
    score_trials = scoring_plan(TrialPlanner(registry, entry.id), plan, progress, ray)
    sweep = SweepId(entry.id, sweep_name(plan, select_split))
    store = ResultStore(settings.store_url)
    selection_tasks = [task for lang in entry.langs for task in suite.task_names(lang, select_split)]
    scoring = scoring_identity(selection_tasks, dataclasses.replace(settings, split=select_split))
    log_dir = harness_home() / "sweeps" / "logs" / entry.id
    job = SweepJob(registry, entry.id, settings, server_mode, sweep, scoring, select_split, log_dir)
    with TrialEvaluator(settings, server_mode, log_dir) as evaluator:
        trials = score_trials(job, evaluator)
        best = max(trials, key=lambda t: t.score)  # max keeps the first of equal scores: grid or study order
        mark_sweep_choice(store, sweep, best.model_hash)
        trial_eval_s = sum(trial.eval_s for trial in trials)  # summed over workers on Ray
        test_scores, tuned, test_report = None, None, None
        if evaluate_test:
            best_id = f"{entry.id}@best"
            tuned = register_best(registry, entry.id, best)
            built = materialize(with_trial(registry, entry.id, best), best.model_id, device=settings.device, progress=False)
            model = dataclasses.replace(ModelUnderTest.from_built(built), id=best_id)
            test_tasks = [task for lang in entry.langs for task in suite.task_names(lang, "test")]
            test_report = evaluator.evaluate(model, test_tasks, "test")
            test_scores = language_scores(test_report, entry.langs)
    return SweepResult(sweep, trials, best, test_scores, test_report, tuned, time.monotonic() - started, trial_eval_s,
                       select_split)


def language_scores(report: EvalReport, langs) -> dict[str, float]:
    """Each language's average (tasks.averages); a language without one is an error."""
    averages = language_averages(report)
    missing = [lang for lang in langs if lang not in averages or averages[lang].value is None]
    if missing:
        raise HarnessError(f"no scores for language(s) {missing} in the evaluation of {report.model.id}")
    return {lang: averages[lang].value for lang in langs}
