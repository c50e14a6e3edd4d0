"""Search beyond grids: `harness sweep --search optuna --trials N`, an Optuna study over ranges.

A search space names the same parameter paths as a grid (harness.grids), each with a range instead
of a list of values; a search file is a YAML mapping of them:

    models.sft-flan.density: {low: 0.1, high: 1.0}
    models.ct-uig.density: {low: 0.1, high: 1.0}

With a built-in grid (`--grid densities`) the space spans each of its axes, lowest to highest value.
Ranges are inclusive and hold numbers only; each end goes through the same recipe checks as a grid
point (harness.trials.TrialPlanner) before the study starts, so a range outside a parameter's bounds
fails with one line naming it.

The study lives in the results store (Optuna's RDBStorage takes the same SQLAlchemy URL), named
after the sweep and its scoring identity, so rerunning the command after a crash continues it:
`--trials N` is the number of completed trials the study ends with, not the number added. A trial
left running by a dead process is marked failed and its point asked again.

Reproducible with a seed: each point is drawn by a sampler seeded from (seed, number of completed
and running trials). One trial at a time (the local executor, or one Ray worker) a point depends
only on the seed and the scores before it, and a resumed search draws the points an uninterrupted
one would (exactly for TPE; CMA-ES also mixes the trial number into its draws, so a resumed CMA-ES
search continues the study but may draw other points). With several trials in flight on Ray workers
(harness.ray_trials: ask and tell as workers free up) the points also depend on which trial finished
first: not reproducible from the seed alone. Optuna is an optional extra: `pip install .[search]`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import HarnessError
from harness.files import read_yaml
from harness.grids import Grid

SAMPLERS = ("tpe", "cmaes")
# TPE draws its first points at random before it models the scores; Optuna's default (10) would
# leave a 12-trial search almost all random, so a third of such a search explores.
TPE_STARTUP_TRIALS = 4
# Suggested values are rounded: merges 1e-4 apart in a density or weight are the same merge for any
# purpose, and the trial ids (`<id>@sft-flan.density=0.3746,...`) stay readable.
DECIMALS = 4


@dataclass(frozen=True)
class Range:
    low: float
    high: float


@dataclass(frozen=True)
class SearchSpace:
    name: str  # as a grid's: the built-in grid's name or `file:<stem>`
    ranges: dict[str, Range]  # parameter path -> range, in file order


@dataclass(frozen=True)
class SearchSettings:
    trials: int  # completed trials the study ends with
    sampler: str = "tpe"  # tpe | cmaes
    seed: int = 0


@dataclass(frozen=True)
class Search:
    """What `run_sweep` searches instead of a grid: a space and how to search it."""

    space: SearchSpace
    settings: SearchSettings

    @property
    def name(self) -> str:
        """The sweep's name: another sampler or seed is another study, with trials of its own."""
        return f"{self.space.name}/optuna-{self.settings.sampler}-seed{self.settings.seed}"


def check_search_settings(settings: SearchSettings) -> None:
    """Bad settings, or a missing package, fail before anything is built."""
    if settings.trials < 1:
        raise HarnessError(f"--trials must be a positive number of trials, got {settings.trials}")
    if settings.sampler not in SAMPLERS:
        raise HarnessError(f"unknown sampler {settings.sampler!r}; samplers: {', '.join(SAMPLERS)}")
    _optuna()
    if settings.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401  Optuna's CMA-ES sampler needs it, and says so only when sampling
        except ModuleNotFoundError:
            raise HarnessError("--sampler cmaes needs the cmaes package: pip install .[search]") from None


def space_of_grid(grid: Grid) -> SearchSpace:
    """Each axis of a built-in grid as the range from its lowest to its highest value."""
    ranges = {}
    for path, values in grid.axes.items():
        if len(values) < 2:
            raise HarnessError(f"grid {grid.name}: {path} has one value, no range to search")
        ranges[path] = parse_range(path, {"low": min(values), "high": max(values)}, f"grid {grid.name}")
    return SearchSpace(grid.name, ranges)


def load_space_file(path: Path) -> SearchSpace:
    """A YAML mapping of parameter path -> {low, high}."""
    data = read_yaml(path, "search file")
    if not isinstance(data, dict) or not data:
        raise HarnessError(f"{path}: a search file is a mapping of parameter -> {{low: ..., high: ...}}")
    return SearchSpace(f"file:{path.stem}", {str(key): parse_range(str(key), value, str(path))
                                             for key, value in data.items()})


def parse_range(key: str, value: object, where: str) -> Range:
    """`{low: a, high: b}` with finite numbers a < b, else an error naming `key`."""
    if not isinstance(value, dict) or set(value) != {"low", "high"}:
        raise HarnessError(f"{where}: {key} must be a range {{low: ..., high: ...}}, got {value!r}")
    for end in ("low", "high"):
        number = value[end]
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise HarnessError(f"{where}: {key} {end} must be a finite number, got {number!r}")
    if not value["low"] < value["high"]:
        raise HarnessError(f"{where}: {key} needs low < high, got low {value['low']!r}, high {value['high']!r}")
    return Range(float(value["low"]), float(value["high"]))


# ---- the study ---------------------------------------------------------------------------------------

def open_study(store_url: str, name: str, search: Search):
    """Create the study in the store, or load it to continue; a study over other ranges is refused."""
    optuna = _optuna()
    storage = optuna.storages.RDBStorage(store_url, engine_kwargs=_engine_kwargs(store_url))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    space = {path: [r.low, r.high] for path, r in search.space.ranges.items()}
    stored = study.user_attrs.get("space")
    if stored is None:
        study.set_user_attr("space", space)
    elif stored != space:
        raise HarnessError(f"study {name!r} in the store searched other ranges ({stored}); "
                           f"change the file's name or --seed to start another study")
    return study


def run_study(study, search: Search, score: Callable[[dict], float], progress: Callable[[int], None]) -> None:
    """Ask, score and tell, one trial at a time, until the study has `search.settings.trials`
    completed trials (harness.ray_trials keeps one trial per Ray worker in flight instead).

    `score(point)` returns the trial's score on the selection split; `progress(done)` reports."""
    fail_stale_trials(study)
    while (done := completed_count(study)) < search.settings.trials:
        trial = ask(study, search)
        try:
            value = score(point_of(trial.params, search.space))
        except BaseException:  # an interrupted or failed trial must not stay "running"
            tell_failed(study, trial.number)
            raise
        study.tell(trial, value)
        progress(done + 1)


def ask(study, search: Search):
    """The study's next trial (optuna.Trial), drawn by a sampler seeded from the seed and the number of
    trials completed or running: with one trial at a time, each point depends only on the seed and
    the scores before it; with several in flight, also on which of them finished first."""
    optuna = _optuna()
    study.sampler = _sampler(search.settings, completed_count(study) + len(_running(study)))
    return study.ask({path: optuna.distributions.FloatDistribution(r.low, r.high)
                      for path, r in search.space.ranges.items()})


def tell_failed(study, number: int) -> None:
    study.tell(number, state=_optuna().trial.TrialState.FAIL)


def completed_count(study) -> int:
    return len(_completed(study))


def completed_points(study, space: SearchSpace) -> list[dict]:
    """The points of the study's completed trials, oldest first."""
    return [point_of(t.params, space) for t in _completed(study)]


def point_of(params: dict, space: SearchSpace) -> dict:
    """A suggestion as a grid point: in the space's order, rounded, within the range."""
    point = {}
    for path, r in space.ranges.items():
        point[path] = min(max(round(params[path], DECIMALS), r.low), r.high)
    return point


def _completed(study):
    return study.get_trials(deepcopy=False, states=(_optuna().trial.TrialState.COMPLETE,))


def fail_stale_trials(study) -> None:
    """Trials still running belong to a process that died, or to a search that failed (one process
    runs a search at a time): marked failed, their points are asked again."""
    for trial in _running(study):
        tell_failed(study, trial.number)


def _running(study):
    return study.get_trials(deepcopy=False, states=(_optuna().trial.TrialState.RUNNING,))


def _sampler(settings: SearchSettings, asked: int):
    """A sampler seeded from (seed, trials completed or running). Optuna's TPE penalises the points of
    running trials (its constant liar, on by default), so trials in flight on several Ray workers are
    not drawn at the same place; with none running, as on the local executor, that changes nothing."""
    optuna = _optuna()
    seed = random.Random(f"{settings.seed}:{asked}").randrange(2**31)
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS)
    return optuna.samplers.CmaEsSampler(seed=seed)


def _engine_kwargs(store_url: str) -> dict:
    # Wait for the sweep's own writes to the same SQLite file, as harness.store's engine does.
    return {"connect_args": {"timeout": 60}} if store_url.startswith("sqlite") else {}


def _optuna():
    try:
        import optuna
    except ModuleNotFoundError:
        raise HarnessError("--search optuna needs Optuna: pip install .[search]") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial: the sweep's bar shows progress
    return optuna
