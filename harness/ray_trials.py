"""Scoring on Ray workers: a sweep's trials (`harness sweep --executor ray [--address ADDR] [--workers N]`,
a grid's points or an Optuna search's) and the models of `harness eval --model A --model B --executor ray`.

    driver (harness sweep / eval)                  Ray actors (TrialWorker), one per device
      the work: a grid's trials, points asked ---- an item ---->  build it (its node's merge cache)
      from a study, or models to evaluate
      ray.wait over the futures             <--- its result ---- score it on its own backend, store it

Each worker holds its own TrialEvaluator (harness.trial_scoring): a vLLM server it starts for its
first item and reloads each later item's weights into, or the hf backend in-process. It builds
(merges) its items itself, into the merge cache under its node's HARNESS_HOME, so the driver never
ships a checkpoint; it writes its results and trial rows to the command's store in its own
transactions (a SQLite file on one machine; PostgreSQL for several). What a worker does with an
item is its job's (a RayJob): harness.trials.SweepJob scores a trial, ModelsJob below evaluates a
model. The driver hands each free worker the next item and waits for whichever finishes first
(ray.wait): no worker idles while work remains.

The work is a fixed list (a grid's trials, the models) or a search's study: a point is asked from
the Optuna study whenever a worker is free and the study has fewer completed and running trials than
`--trials`, so at most one trial per worker is in flight, and each score is told to the study as it
comes back (harness.search.ask; the study in the store as on the local executor).

Resuming and faults: a worker reads the store before each trial (harness.trials.TrialScorer) and
each task (harness.evaluation), so what an earlier run, or a worker that died just after storing it,
stored is read back, not scored again; and write_sweep_trial replaces a trial's row in one
transaction, so no trial is stored twice. A worker that dies mid-item (killed, out of memory, its
node gone) is dropped and its item handed to the next free worker, up to MAX_ATTEMPTS times; the
work goes on, slower, with the workers left.

Without an address a local Ray instance starts on this machine's cores (no dashboard, a small
object store) and stops at the end; with one, the command joins that cluster and leaves it running.
On the CPU each worker gets an equal share of the cores (Ray's num_cpus), and its torch and vLLM
threads are held to that share; with --device cuda each worker gets one GPU. The workers load the
registry's checkpoints from the paths the driver resolved and use the driver's HARNESS_HOME path:
every node needs them at the same paths. Ray is an optional extra: `pip install .[ray]`.
"""

from __future__ import annotations

import os
import sys
from collections import Counter, deque
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from harness import HarnessError
from harness.build import materialize
from harness.checkpoints import check_tokenizer
from harness.evaluation import EvalReport, EvalSettings, ModelUnderTest
from harness.grids import point_label
from harness.paths import harness_home
from harness.search import Search, ask, completed_count, completed_points, fail_stale_trials, open_study, point_of
from harness.store import ResultStore
from harness.trial_scoring import TrialEvaluator
from harness.trials import SweepJob, Trial, TrialPlanner, study_name, study_trials
from merges.errors import MergeError
from tasks.errors import TaskError

CPU_WORKERS = 2  # default workers on the CPU (with --device cuda: one per GPU of the cluster)
MAX_ATTEMPTS = 3  # a trial whose worker dies this often is an error, not bad luck
OBJECT_STORE_BYTES = 100 * 2**20  # a local instance only passes trials and scores: Ray's minimum is 75 MiB
USER_ERRORS = (HarnessError, MergeError, TaskError)  # raised in a worker: the CLI's one-line errors


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None  # a running cluster (`auto`, `HOST:6379`); None: a local instance for the command
    workers: int | None = None  # None: CPU_WORKERS on the CPU, one per GPU with --device cuda

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise HarnessError(f"--workers must be a positive number, got {self.workers}")


class RayJob(Protocol):
    """What a worker needs to score a command's items: a SweepJob (trials) or a ModelsJob (models)."""

    settings: EvalSettings  # the backend, device and store
    server_mode: str  # reload | fresh (harness.trial_scoring)
    log_dir: Path  # where vLLM server logs go

    def scorer(self, evaluator: TrialEvaluator):
        """What scores one item on `evaluator`: an object with `score(item) -> result`."""


class TrialWorker:
    """A Ray actor that builds and scores the items of one job (trials, models) on its own backend."""

    def __init__(self, job: RayJob, slot: int, cpus: int):
        if job.settings.device == "cpu":
            hold_to_cores(slot, cpus)
        self.evaluator = TrialEvaluator(job.settings, job.server_mode, job.log_dir / f"worker-{slot}")
        self.scorer = job.scorer(self.evaluator)

    def pid(self) -> int:
        return os.getpid()

    def score(self, item):
        return self.scorer.score(item)

    def close(self) -> None:
        self.evaluator.__exit__(None, None, None)  # stops its vLLM server


def hold_to_cores(slot: int, cpus: int) -> None:
    """Keep a worker's threads on its share of the cores: torch's (hf backend, merges) and vLLM's
    (VLLM_CPU_OMP_THREADS_BIND, read by the server it starts). Slot i takes the i-th block of
    `cpus` cores this process may use, wrapping around."""
    import torch

    cores = sorted(os.sched_getaffinity(0))
    start = (slot * cpus) % len(cores)
    mine = (cores * 2)[start:start + min(cpus, len(cores))]
    torch.set_num_threads(len(mine))
    os.environ["OMP_NUM_THREADS"] = str(len(mine))
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, mine))


def score_on_ray(trials: list[Trial], job: SweepJob, settings: RaySettings, progress: bool = True) -> list[Trial]:
    """Every trial scored on Ray workers, in grid order; trials already stored are read back."""
    with ray_workers(job, settings) as workers:
        return workers.run_list(trials, "sweep on Ray", "trial", progress)


def search_on_ray(planner: TrialPlanner, search: Search, job: SweepJob, settings: RaySettings,
                  progress: bool = True) -> list[Trial]:
    """A search's points asked from its study as workers free up (at most one trial in flight per
    worker), each told its score when it comes back; then the study's trials in study order, those
    of an earlier run read back from the store by the workers (harness.trials.score_search's rules)."""
    study = open_study(ResultStore(job.settings.store_url).url, study_name(job.sweep, job.scoring), search)
    fail_stale_trials(study)
    with ray_workers(job, settings) as workers:
        work = StudyWork(study, search, planner)
        with tqdm(total=search.settings.trials, initial=len(completed_points(study, search.space)),
                  desc="search on Ray", unit="trial", disable=not progress) as bar:
            try:
                workers.run(work, bar, "trial")
            except BaseException:  # a failed or interrupted search leaves no trial "running"
                fail_stale_trials(study)
                raise
        return study_trials(planner, study, search, work.scored,
                            lambda earlier: workers.run_list(earlier, "read back", "trial", progress=False))


def evaluate_on_ray(registry, model_ids: list[str], tasks: dict[str, list[str]], eval_settings: EvalSettings,
                    settings: RaySettings, progress: bool = True) -> list[EvalReport]:
    """`harness eval` of several models on Ray workers: each worker builds the models it gets, near
    its data, and stores their results; the reports in the order of `model_ids`."""
    job = ModelsJob(registry, tasks, eval_settings, harness_home() / "logs" / "eval-on-ray")
    with ray_workers(job, settings) as workers:
        return workers.run_list(list(model_ids), "eval on Ray", "model", progress)


@dataclass
class ModelsJob:
    """Models to evaluate on Ray workers, as `harness eval` would here: each built (or taken from the
    merge cache) by the worker that gets it, and evaluated on its tasks with the command's settings."""

    registry: object  # harness.registry.Registry
    tasks: dict[str, list[str]]  # model id -> its tasks (harness.evaluate.choose_tasks)
    settings: EvalSettings
    log_dir: Path  # where vLLM server logs go
    server_mode: str = "reload"  # one server per worker, each model's weights reloaded into it

    def scorer(self, evaluator: TrialEvaluator) -> ModelScorer:
        return ModelScorer(self, evaluator)


class ModelScorer:
    """Builds a model and evaluates it on the worker's evaluator; its report."""

    def __init__(self, job: ModelsJob, evaluator: TrialEvaluator):
        self.job = job
        self.evaluator = evaluator

    def score(self, model_id: str) -> EvalReport:
        model = ModelUnderTest.from_built(materialize(self.job.registry, model_id, device=self.job.settings.device,
                                                      progress=False))
        check_tokenizer(model.id, model.checkpoint_dir)
        return self.evaluator.evaluate(model, self.job.tasks[model_id], self.job.settings.split)


# ---- the workers -------------------------------------------------------------------------------------

@contextmanager
def ray_workers(job: RayJob, settings: RaySettings) -> Iterator[Workers]:
    """The job's workers on a local Ray instance or the cluster at `settings.address`; stopped after."""
    ray = import_ray()
    connected_here = not ray.is_initialized()  # else the caller's Ray session: left as it is
    connect(ray, settings)
    actors = []
    try:
        actors = start_workers(ray, job, settings)
        yield Workers(ray, actors)
    finally:
        for actor in actors:
            ray.kill(actor)  # its vLLM server dies with it (harness.processes guards the server)
        if connected_here:
            ray.shutdown()  # stops a local instance; leaves a joined cluster running


def import_ray():
    try:
        import ray
    except ImportError:
        raise HarnessError("--executor ray needs Ray: pip install .[ray]") from None
    return ray


def connect(ray, settings: RaySettings) -> None:
    """Join the cluster at `settings.address`, or start a local instance on this machine's cores."""
    if ray.is_initialized():
        return
    env = {"env_vars": {"HARNESS_HOME": str(harness_home())}}
    if settings.address is not None:
        try:
            ray.init(address=settings.address, runtime_env=env, log_to_driver=False)
        except ConnectionError as err:
            raise HarnessError(f"cannot join the Ray cluster at {settings.address}: {err}") from None
        return
    ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
             runtime_env=env, log_to_driver=False)


def start_workers(ray, job: RayJob, settings: RaySettings) -> list:
    """The workers, each placed on its share of the cluster (cores, or a GPU), up and ready."""
    check_store_reaches_every_node(ray, job.settings.store_url)
    resources = ray.cluster_resources()
    if job.settings.device == "cuda":
        count = settings.workers or int(resources.get("GPU", 0))
        if count < 1:
            raise HarnessError("--device cuda with --executor ray: the Ray cluster has no GPU")
        shares = {"num_cpus": 1, "num_gpus": 1}
    else:
        count = settings.workers or CPU_WORKERS
        shares = {"num_cpus": max(1, int(resources.get("CPU", 1)) // count)}
    actor = ray.remote(TrialWorker).options(max_restarts=0, **shares)
    workers = [actor.remote(job, slot, shares["num_cpus"]) for slot in range(count)]
    try:
        ray.get([worker.pid.remote() for worker in workers])
    except ray.exceptions.RayActorError as err:
        raise HarnessError(f"a Ray worker failed to start: {first_line(err)}") from None
    return workers


def check_store_reaches_every_node(ray, store_url: str | None) -> None:
    """A SQLite file serves the workers of one machine only (a worker elsewhere would write a file of
    its own, and SQLite's locking does not work across machines)."""
    nodes = sum(node["Alive"] for node in ray.nodes())
    if nodes > 1 and (store_url is None or store_url.startswith("sqlite")):
        raise HarnessError(f"the Ray cluster has {nodes} nodes: give a store every node reaches, "
                           "e.g. --store postgresql+psycopg://USER:PASSWORD@HOST/DB (SQLite serves one machine)")


class Work(Protocol):
    """What the driver hands out, one item per free worker, and what it does with each result."""

    def next_item(self, in_flight: int) -> tuple[Hashable, object] | None:
        """A key and the next item to hand out, or None when there is none to start now
        (`in_flight`: items handed out and not back yet)."""

    def finish(self, key: Hashable, result: object) -> None:
        """Take the result of the item handed out under `key`."""


class ItemList:
    """A fixed list of items (a grid's trials, models): each handed out once; results in list order."""

    def __init__(self, items: list):
        self.items = items
        self.handed = 0  # items handed out so far
        self.results = {}  # index -> result

    def next_item(self, in_flight: int) -> tuple[int, object] | None:
        if self.handed == len(self.items):
            return None
        self.handed += 1
        return self.handed - 1, self.items[self.handed - 1]

    def finish(self, key: int, result: object) -> None:
        self.results[key] = result

    def ordered(self) -> list:
        return [self.results[index] for index in range(len(self.items))]


class StudyWork:
    """A search's points, asked from its Optuna study while it has fewer completed and running trials
    than it should end with; each result told to the study."""

    def __init__(self, study, search: Search, planner: TrialPlanner):
        self.study = study
        self.search = search
        self.planner = planner
        self.scored = {}  # trial model id -> this run's trial

    def next_item(self, in_flight: int) -> tuple[int, Trial] | None:
        if completed_count(self.study) + in_flight >= self.search.settings.trials:
            return None
        asked = ask(self.study, self.search)  # left running if it fails: search_on_ray marks it failed
        return asked.number, self.planner.trial(point_of(asked.params, self.search.space), what="search point")

    def finish(self, key: int, result: Trial) -> None:
        self.study.tell(key, result.score)
        self.scored[result.model_id] = result


class Workers:
    """Started workers; `run` hands out a Work's items to them."""

    def __init__(self, ray, actors: list):
        self.ray = ray
        self.actors = actors

    def run_list(self, items: list, desc: str, unit: str, progress: bool) -> list:
        """Every item scored; the results in the items' order."""
        work = ItemList(items)
        with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress) as bar:
            self.run(work, bar, unit)
        return work.ordered()

    def run(self, work: Work, bar: tqdm, unit: str) -> None:
        """Each item to the next free worker until the work has none left; an item whose worker died
        goes to another one. Alive workers are kept for a later `run`."""
        ray = self.ray
        retry = deque()  # (key, item) whose worker died
        attempts = Counter()
        idle = list(self.actors)
        running = {}  # future -> (worker, key, item)
        while True:
            while idle:
                handed = retry.popleft() if retry else work.next_item(len(running))
                if handed is None:
                    break
                key, item = handed
                attempts[key] += 1
                worker = idle.pop()
                running[worker.score.remote(item)] = (worker, key, item)
            if not running:
                if retry:
                    raise HarnessError(f"every Ray worker died; the {unit}s left are not scored (rerun to resume)")
                return
            [ready], _ = ray.wait(list(running), num_returns=1)
            worker, key, item = running.pop(ready)
            try:
                result = ray.get(ready)
            except ray.exceptions.RayActorError as err:  # the worker died: drop it, retry its item
                self.actors.remove(worker)
                retry_or_fail(item, unit, attempts[key], err)
                retry.append((key, item))
                continue
            except ray.exceptions.RayTaskError as err:  # the item failed: the worker's error, as is
                raise (err.cause if isinstance(err.cause, USER_ERRORS) else err) from None
            work.finish(key, result)
            idle.append(worker)
            bar.update()


def retry_or_fail(item: object, unit: str, attempts: int, err: Exception) -> None:
    label = point_label(item.point) if isinstance(item, Trial) else str(item)
    if attempts >= MAX_ATTEMPTS:
        raise HarnessError(f"{unit} {label}: its Ray worker died {attempts} times, last: {first_line(err)}")
    print(f"Ray worker died during {unit} {label} ({first_line(err)}); handing the {unit} to another worker",
          file=sys.stderr)


def first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
