"""Scoring a sweep's grid on Ray: `harness sweep --executor ray [--address ADDR] [--workers N]`.

    driver (harness sweep)                         Ray actors (TrialWorker), one per device
      grid points as trials  ---- a trial ---->    merge it (its node's merge cache, harness.build)
      ray.wait over the futures <-- scored ----    score it on its own backend, store its trial row

Each worker holds its own TrialEvaluator (harness.trial_scoring): a vLLM server it starts for its
first trial and reloads each later trial's weights into, or the hf backend in-process. It merges
its trials itself, into the merge cache under its node's HARNESS_HOME, so the driver never ships a
checkpoint; it writes its results and trial rows to the command's store in its own transactions
(a SQLite file on one machine; PostgreSQL for several). The driver hands each free worker the next
trial and waits for whichever finishes first (ray.wait): no worker idles while trials remain.

Resuming and faults: every worker reads the store again before a trial, so a trial stored by an
earlier run, or by a worker that died just after storing it, is read back, not scored again; and
write_sweep_trial replaces a trial's row in one transaction, so no trial is stored twice. A worker
that dies mid-trial (killed, out of memory, its node gone) is dropped and its trial handed to the
next free worker, up to MAX_ATTEMPTS times; the sweep goes on, slower, with the workers left.

Without an address a local Ray instance starts on this machine's cores (no dashboard, a small
object store) and stops at the end; with one, the sweep joins that cluster and leaves it running.
On the CPU each worker gets an equal share of the cores (Ray's num_cpus), and its torch and vLLM
threads are held to that share; with --device cuda each worker gets one GPU. The workers load the
registry's checkpoints from the paths the driver resolved and use the driver's HARNESS_HOME path:
every node needs them at the same paths. Ray is an optional extra: `pip install .[ray]`.
"""

from __future__ import annotations

import os
import sys
from collections import Counter, deque
from dataclasses import dataclass

from tqdm import tqdm

from harness import HarnessError
from harness.grids import point_label
from harness.paths import harness_home
from harness.trial_scoring import TrialEvaluator
from harness.trials import SweepJob, Trial
from merges.errors import MergeError
from tasks.errors import TaskError

CPU_WORKERS = 2  # default workers on the CPU (with --device cuda: one per GPU of the cluster)
MAX_ATTEMPTS = 3  # a trial whose worker dies this often is an error, not bad luck
OBJECT_STORE_BYTES = 100 * 2**20  # a local instance only passes trials and scores: Ray's minimum is 75 MiB
USER_ERRORS = (HarnessError, MergeError, TaskError)  # raised in a worker: the CLI's one-line errors


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None  # a running cluster (`auto`, `HOST:6379`); None: a local instance for the sweep
    workers: int | None = None  # None: CPU_WORKERS on the CPU, one per GPU with --device cuda

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise HarnessError(f"--workers must be a positive number, got {self.workers}")


class TrialWorker:
    """A Ray actor that builds and scores trials of one sweep on its own backend."""

    def __init__(self, job: SweepJob, slot: int, cpus: int):
        if job.settings.device == "cpu":
            hold_to_cores(slot, cpus)
        self.evaluator = TrialEvaluator(job.settings, job.server_mode, job.log_dir / f"worker-{slot}")
        self.scorer = job.scorer(self.evaluator)

    def pid(self) -> int:
        return os.getpid()

    def score(self, trial: Trial) -> Trial:
        self.scorer.reread_store()  # another worker, or an earlier run, may have stored it
        return self.scorer.score(trial)

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
    ray = import_ray()
    connected_here = not ray.is_initialized()  # else the caller's Ray session: left as it is
    connect(ray, settings)
    workers = []
    try:
        workers = start_workers(ray, job, settings)
        return dispatch(ray, workers, trials, progress)
    finally:
        for worker in workers:
            ray.kill(worker)  # its vLLM server dies with it (harness.processes guards the server)
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


def start_workers(ray, job: SweepJob, settings: RaySettings) -> list:
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


def dispatch(ray, workers: list, trials: list[Trial], progress: bool) -> list[Trial]:
    """Each trial to the next free worker; a trial whose worker died goes to another one."""
    queue = deque(range(len(trials)))
    attempts = Counter()
    idle = list(workers)
    running = {}  # future -> (worker, trial index)
    scored = {}  # trial index -> the scored trial
    with tqdm(total=len(trials), desc="sweep on Ray", unit="trial", disable=not progress) as bar:
        while queue or running:
            while queue and idle:
                index = queue.popleft()
                attempts[index] += 1
                worker = idle.pop()
                running[worker.score.remote(trials[index])] = (worker, index)
            if not running:
                raise HarnessError(f"every Ray worker died; {len(queue)} trial(s) not scored (rerun to resume)")
            [ready], _ = ray.wait(list(running), num_returns=1)
            worker, index = running.pop(ready)
            try:
                scored[index] = ray.get(ready)
            except ray.exceptions.RayActorError as err:  # the worker died: drop it, retry its trial
                retry_or_fail(trials[index], attempts[index], err)
                queue.appendleft(index)
                continue
            except ray.exceptions.RayTaskError as err:  # the trial failed: the worker's error, as is
                raise (err.cause if isinstance(err.cause, USER_ERRORS) else err) from None
            idle.append(worker)
            bar.update()
    return [scored[index] for index in range(len(trials))]


def retry_or_fail(trial: Trial, attempts: int, err: Exception) -> None:
    label = point_label(trial.point)
    if attempts >= MAX_ATTEMPTS:
        raise HarnessError(f"trial {label}: its Ray worker died {attempts} times, last: {first_line(err)}")
    print(f"Ray worker died during trial {label} ({first_line(err)}); handing the trial to another worker",
          file=sys.stderr)


def first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
