"""Reading the results store for the leaderboard (read-only), with messages a user can act on."""

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from harness import HarnessError
from harness.paths import default_store_url
from tasks.errors import TaskError
from tasks.suite import main_metric

# `harness leaderboard --store URL` hands the URL to the app through this variable (not the command
# line, where a database password would show in the process list).
STORE_ENV = "HARNESS_LEADERBOARD_STORE"
EVAL_HINT = "evaluate a model first, e.g. `harness eval --model ties-uig`"


@dataclass
class StoreSnapshot:
    url: str
    results: pd.DataFrame  # every split, each model id's latest build only
    models: pd.DataFrame
    sweeps: pd.DataFrame  # harness sweep trials, every sweep (store.sweep_trials)


def store_url() -> str:
    return os.environ.get(STORE_ENV) or default_store_url()


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases)."""
    parsed = sa.engine.make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    return Path(parsed.database or "")


def check_store_exists(url: str) -> None:
    """A SQLite store must be an existing file: opening it read-only never creates one."""
    try:
        path = sqlite_file(url)
    except sa.exc.ArgumentError:
        raise HarnessError(f"not a database URL: {url!r} (e.g. sqlite:////path/results.db)") from None
    if path is not None and not path.is_file():
        raise HarnessError(f"no results store at {path}: {EVAL_HINT}, or pass --store URL")


def read_store(url: str) -> StoreSnapshot:
    from harness.store import ResultStore, sweep_trials

    check_store_exists(url)
    store = ResultStore(url, readonly=True)
    try:
        return StoreSnapshot(url=url, results=store.results(latest_only=True), models=store.models(),
                             sweeps=sweep_trials(store))
    except sa.exc.SQLAlchemyError as err:
        raise HarnessError(f"cannot read results store {url}: {' '.join(str(err).split())[:200]}") from None
    finally:
        store.engine.dispose()


def main_metric_lookup() -> Callable[[str], str | None]:
    """`tasks.suite.main_metric`, returning None for a task it does not know."""

    def lookup(task: str) -> str | None:
        try:
            return main_metric(task)
        except TaskError:
            return None

    return lookup
