"""Sweep overhead: total sweep time over the sum of the trials' evaluation times, on the zoo.

    .venv/bin/python bench/sweep_bench.py [--model ties-uig] [--limit N] [--registry FILE]
    .venv/bin/python bench/sweep_bench.py --grid densities --modes reload   # the paper's 6x6 grid

Runs the same density grid (default 2x2; `--grid densities`: the 6x6 grid `harness sweep` uses)
into throwaway stores, the way `harness sweep` does it (one vLLM server, each trial's weights
reloaded into it) and the naive way (a fresh server per trial, `--server-mode fresh`); `--modes`
picks which. For each it prints the total time, the summed evaluation time of the trials
(lm-eval requests only: server starts and merges excluded) and their ratio; the target for the
reload way is at most 1.3. The last line gives the ratios and, when both ways ran, compares them. Needs the zoo
(`harness zoo build`); merges are built into a throwaway harness home, so the cache is cold for
both ways alike.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

SMALL_GRID = {"models.sft-flan.density": [0.2, 0.8], "models.ct-uig.density": [0.4, 1.0]}


def one_sweep(registry, model_id: str, grid, mode: str, limit: int, home: Path) -> tuple[float, float]:
    """(total seconds, summed trial evaluation seconds) of a sweep in a fresh harness home."""
    from harness.evaluate import default_data_dir
    from harness.evaluation import EvalSettings
    from harness.trials import run_sweep

    os.environ["HARNESS_HOME"] = str(home)  # a cold merge cache and no stored trials
    settings = EvalSettings(split="dev", limit=limit, backend="vllm", store_url=f"sqlite:///{home / 'results.db'}",
                            data_dir=default_data_dir(None, registry), progress=False)
    start = time.perf_counter()
    result = run_sweep(registry, model_id, grid, settings, server_mode=mode,
                       evaluate_test=False, progress=False)
    return time.perf_counter() - start, result.eval_s


def bench_grid(name: str, registry, entry):
    from harness.grids import Grid, builtin_grid_of

    return Grid("bench", SMALL_GRID) if name == "2x2" else builtin_grid_of(name, registry, entry)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ties-uig")
    parser.add_argument("--limit", type=int, help="items per dev task (default: the whole dev split, as a sweep runs)")
    parser.add_argument("--registry")
    parser.add_argument("--grid", choices=("2x2", "densities"), default="2x2",
                        help="2x2 (default) or the 6x6 densities grid of `harness sweep --grid densities`")
    parser.add_argument("--modes", default="reload,fresh", help="which ways to run (default: reload,fresh)")
    args = parser.parse_args()

    from harness.registry import load_registry

    registry = load_registry(args.registry)  # resolved now: zoo paths follow the current HARNESS_HOME
    entry = registry.resolve(args.model)
    grid = bench_grid(args.grid, registry, entry)
    modes = [mode for mode in args.modes.split(",") if mode]
    if not modes or set(modes) - {"reload", "fresh"}:
        parser.error("--modes takes reload, fresh or both, comma-separated")
    print(f"sweep of {entry.id}: {len(grid.points())} trials ({args.grid}), dev, "
          + (f"limit {args.limit}/task" if args.limit else "whole split"))
    ratios, totals = {}, {}
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
        for mode in modes:
            total_s, eval_s = one_sweep(registry, entry.id, grid, mode, args.limit, Path(tmp) / mode)
            ratios[mode], totals[mode] = total_s / eval_s, total_s
            print(f"{mode:>6}: total {total_s:7.1f} s, trial evaluation {eval_s:7.1f} s, "
                  f"total/eval {ratios[mode]:.2f}")
    last = "sweep_total_over_eval " + " ".join(f"{mode}={ratio:.2f}" for mode, ratio in ratios.items())
    last += " (target reload <= 1.3)"
    if len(totals) == 2:
        last += f"; fresh/reload total time {totals['fresh'] / totals['reload']:.2f}"
    print(last)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
