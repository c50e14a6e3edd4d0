"""Reading the results store for the leaderboard (read-only), with messages a user can act on."""

import os
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from harness import HarnessError
from harness.paths import default_store_url
from harness.store import (EVAL_HINT, STORE_ENV, ResultStore, check_store_exists, maintenance_times, sweep_trials,
                           vector_similarities)
from tasks.errors import TaskError
from tasks.suite import main_metric


@dataclass
class StoreSnapshot:
    url: str
    results: pd.DataFrame  # every split, each model id's latest build only
    models: pd.DataFrame
    sweeps: pd.DataFrame  # harness sweep trials, every sweep (store.sweep_trials)
    similarities: pd.DataFrame  # harness analyze similarity rows (store.vector_similarities)
    maintenance: pd.DataFrame  # harness maintain's measured steps, every experiment (store.maintenance_times)


def store_url() -> str:
    return os.environ.get(STORE_ENV) or default_store_url()


def read_store(url: str) -> StoreSnapshot:
    check_store_exists(url)
    store = ResultStore(url, readonly=True)
    try:
        return StoreSnapshot(url=url, results=store.results(latest_only=True), models=store.models(),
                             sweeps=sweep_trials(store), similarities=vector_similarities(store),
                             maintenance=maintenance_times(store))
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
