"""Sweep overhead, and sweeps on Ray: on the zoo, in throwaway stores and harness homes.

    .venv/bin/python bench/sweep_bench.py [--model ties-uig] [--limit N] [--registry FILE]
    .venv/bin/python bench/sweep_bench.py --grid densities --modes reload   # the paper's 6x6 grid
    .venv/bin/python bench/sweep_bench.py --executor ray --workers 2 [--limit N]

Runs the same density grid (default 2x2; `--grid densities`: the 6x6 grid `harness sweep` uses)
the way `harness sweep` does it (one vLLM server, each trial's weights reloaded into it) and the
naive way (a fresh server per trial, `--server-mode fresh`); `--modes` picks which. For each it
prints the total time, the summed evaluation time of the trials (lm-eval requests only: server
starts and merges excluded) and their ratio; the target for the reload way is at most 1.3. The
last line gives the ratios and, when both ways ran, compares them.

With `--executor ray --workers N` it runs the grid on the local executor and on N Ray workers
(harness.ray_trials; a local Ray instance on this machine's cores), both reloading weights, and
the last line gives each one's trials per hour and their ratio. Every run also prints a trial's
mean merge, weight-reload (as vLLM logs it) and evaluation times: the inputs of the README's
scaling model. Needs the zoo (`harness zoo build`); merges are built into a throwaway harness
home per run, so the merge cache is cold for every run alike.
"""

import argparse
import os
import re
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SMALL_GRID = {"models.sft-flan.density": [0.2, 0.8], "models.ct-uig.density": [0.4, 1.0]}
# vLLM's own log line for an in-place weight reload (vllm/model_executor/model_loader/reload/inplace.py)
RELOAD_LOG = re.compile(r"Reloading and processing weights took ([0-9.]+) seconds")


@dataclass
class SweepTimes:
    total_s: float
    eval_s: float  # trial evaluation, summed over the trials
    trials: int
    merge_s: float  # a trial's mean merge time (build_s as stored)
    reload_s: float | None  # a trial's mean weight reload as vLLM logs it (None: no reload logged)

    @property
    def trials_per_hour(self) -> float:
        return self.trials * 3600 / self.total_s


def one_sweep(registry, model_id: str, grid, mode: str, limit: int, home: Path, backend: str,
              ray=None) -> SweepTimes:
    """The times of a sweep in a fresh harness home (on Ray workers with `ray`: RaySettings)."""
    from harness.evaluate import default_data_dir
    from harness.evaluation import EvalSettings
    from harness.store import ResultStore, sweep_trials
    from harness.trials import run_sweep

    os.environ["HARNESS_HOME"] = str(home)  # a cold merge cache and no stored trials
    store = f"sqlite:///{home / 'results.db'}"
    settings = EvalSettings(split="dev", limit=limit, backend=backend, store_url=store,
                            data_dir=default_data_dir(None, registry), progress=False)
    start = time.perf_counter()
    result = run_sweep(registry, model_id, grid, settings, server_mode=mode,
                       evaluate_test=False, progress=False, ray=ray)
    total_s = time.perf_counter() - start
    rows = sweep_trials(ResultStore(store), result.sweep)
    reloads = [float(seconds) for log in home.glob("sweeps/logs/**/vllm-server-*.log")
               for seconds in RELOAD_LOG.findall(log.read_text(errors="replace"))]
    return SweepTimes(total_s, result.eval_s, len(result.trials), statistics.mean(rows["build_s"]),
                      statistics.mean(reloads) if reloads else None)


def bench_grid(name: str, registry, entry):
    from harness.grids import Grid, builtin_grid_of

    return Grid("bench", SMALL_GRID) if name == "2x2" else builtin_grid_of(name, registry, entry)


def runs_of(args, parser) -> list[tuple[str, str, object]]:
    """(label, server mode, RaySettings or None) of each sweep to run."""
    if args.executor == "local":
        if args.workers is not None:
            parser.error("--workers only applies with --executor ray")
        modes = [mode for mode in (args.modes or "reload,fresh").split(",") if mode]
        if not modes or set(modes) - {"reload", "fresh"}:
            parser.error("--modes takes reload, fresh or both, comma-separated")
        return [(mode, mode, None) for mode in modes]
    if args.modes is not None:
        parser.error("--executor ray compares the local and the Ray executor, both reloading: no --modes")
    from harness.ray_trials import RaySettings

    ray = RaySettings(workers=args.workers or 2)
    return [("local", "reload", None), (f"ray x{ray.workers}", "reload", ray)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ties-uig")
    parser.add_argument("--limit", type=int, help="items per dev task (default: the whole dev split, as a sweep runs)")
    parser.add_argument("--registry")
    parser.add_argument("--grid", choices=("2x2", "densities"), default="2x2",
                        help="2x2 (default) or the 6x6 densities grid of `harness sweep --grid densities`")
    parser.add_argument("--modes", help="local executor: which ways to run (default: reload,fresh)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="ray: compare the local executor with --workers Ray workers (trials per hour)")
    parser.add_argument("--workers", type=int, help="with --executor ray: Ray workers (default 2)")
    parser.add_argument("--backend", choices=("vllm", "hf"), default="vllm")
    args = parser.parse_args()

    from harness.registry import load_registry

    registry = load_registry(args.registry)  # resolved now: zoo paths follow the current HARNESS_HOME
    entry = registry.resolve(args.model)
    grid = bench_grid(args.grid, registry, entry)
    runs = runs_of(args, parser)
    print(f"sweep of {entry.id}: {len(grid.points())} trials ({args.grid}), dev, backend {args.backend}, "
          + (f"limit {args.limit}/task" if args.limit else "whole split"))
    times = {}
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        for label, mode, ray in runs:
            t = times[label] = one_sweep(registry, entry.id, grid, mode, args.limit, Path(tmp) / label.split()[0],
                                         args.backend, ray)
            reload = "-" if t.reload_s is None else f"{t.reload_s:.2f} s"
            print(f"{label:>8}: total {t.total_s:7.1f} s, trial evaluation {t.eval_s:7.1f} s (summed), "
                  f"total/eval {t.total_s / t.eval_s:.2f}, {t.trials_per_hour:.0f} trials/hour; per trial: "
                  f"merge {t.merge_s:.2f} s, reload {reload}, evaluation {t.eval_s / t.trials:.2f} s")
    print(last_line(times, args.executor))
    return 0


def last_line(times: dict[str, SweepTimes], executor: str) -> str:
    if executor == "ray":
        (local, ran_local), (ray, ran_ray) = times.items()
        return (f"trials_per_hour {local}={ran_local.trials_per_hour:.0f} {ray.replace(' ', '')}="
                f"{ran_ray.trials_per_hour:.0f} ray/local={ran_ray.trials_per_hour / ran_local.trials_per_hour:.2f}")
    line = "sweep_total_over_eval " + " ".join(f"{mode}={t.total_s / t.eval_s:.2f}" for mode, t in times.items())
    line += " (target reload <= 1.3)"
    if len(times) == 2:
        line += f"; fresh/reload total time {times['fresh'].total_s / times['reload'].total_s:.2f}"
    return line


if __name__ == "__main__":
    raise SystemExit(main())
