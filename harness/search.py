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
trials), so it depends only on the seed and the scores before it, and a resumed search draws the
points an uninterrupted one would (exactly for TPE; CMA-ES also mixes the trial number into its
draws, so a resumed CMA-ES search continues the study but may draw other points). Optuna is an
optional extra: `pip install .[search]`.
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
    """Ask, score and tell until the study has `search.settings.trials` completed trials.

    `score(point)` returns the trial's score on the selection split; `progress(done)` reports."""
    optuna = _optuna()
    _fail_stale_trials(study)
    while (done := len(_completed(study))) < search.settings.trials:
        study.sampler = _sampler(search.settings, done)
        trial = study.ask({path: optuna.distributions.FloatDistribution(r.low, r.high)
                           for path, r in search.space.ranges.items()})
        try:
            value = score(point_of(trial.params, search.space))
        except BaseException:  # an interrupted or failed trial must not stay "running"
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        study.tell(trial, value)
        progress(done + 1)


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


def _fail_stale_trials(study) -> None:
    """Trials still running belong to a process that died (one process runs a search at a time)."""
    optuna = _optuna()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def _sampler(settings: SearchSettings, done: int):
    """A sampler seeded from (seed, completed trials): each point depends on those and the scores only."""
    optuna = _optuna()
    seed = random.Random(f"{settings.seed}:{done}").randrange(2**31)
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
