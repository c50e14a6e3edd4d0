"""`harness sweep`: tune a merge's hyperparameters on dev, report the best on test.

    harness sweep --model ties-uig --grid densities [--limit N]
    harness sweep --model ties-uig --grid-file grid.yaml
    harness sweep --model ties-uig --grid densities --search optuna --trials 12 [--sampler cmaes] [--seed 1]
    harness sweep --model ties-uig --grid densities --executor ray [--address ADDR] [--workers N]

What a grid is: harness/grids.py; a search over ranges instead of a grid: harness/search.py.
How the trials are built, scored, stored and resumed, and how the best is chosen (on dev only,
unless --i-know-this-is-test): harness/trials.py. One vLLM server for all trials (`--server-mode reload`) or
one per trial (`fresh`): harness/trial_scoring.py. The trials on Ray workers, a grid's or a search's
(`--executor ray`): harness/ray_trials.py. Where the best is registered: harness/tuned.py.

The sweep's modules (and with them pandas, SQLAlchemy, lm-eval) are imported by `run`, not here:
`harness sweep --help` stays fast.
"""

from pathlib import Path

from harness import HarnessError
from harness.evaluate import add_eval_options, add_executor_options, ray_settings
from harness.grids import BUILTIN_GRIDS, SELECTION_SPLITS, builtin_grid_of, check_selection, load_grid_file, point_label
from harness.lm_eval_run import BACKENDS
from harness.paths import add_store_option
from harness.search import SAMPLERS


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="registry id or alias of a merge, e.g. ties-uig")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--grid", choices=BUILTIN_GRIDS,
                        help="built-in grid: densities (k_sft x k_ct), weights (WAVG), slack (TIES-SV)")
    source.add_argument("--grid-file", type=Path, metavar="YAML",
                        help="grid file: parameter path -> list of values, e.g. models.sft-flan.density: [0.2, 0.4]; "
                             "with --search: -> range, e.g. models.sft-flan.density: {low: 0.1, high: 1.0}")
    parser.add_argument("--search", choices=("optuna",),
                        help="search ranges with Optuna instead of trying every grid point (a built-in grid: "
                             "its lowest to highest value per axis); needs `pip install .[search]`")
    parser.add_argument("--trials", type=int, metavar="N", help="with --search: completed trials the study ends with")
    parser.add_argument("--sampler", choices=SAMPLERS, help="with --search: tpe (default) or cmaes")
    parser.add_argument("--seed", type=int, help="with --search: the sampler's seed (default 0)")
    parser.add_argument("--select-on", choices=SELECTION_SPLITS, default="dev",
                        help="the split whose scores choose the best (default dev; test is refused without "
                             "--i-know-this-is-test)")
    parser.add_argument("--i-know-this-is-test", action="store_true",
                        help="allow --select-on test: the best's test score is then no held-out estimate")
    parser.add_argument("--limit", type=int, help="a fixed, seeded sample of N items per task, dev and test (quick runs)")
    parser.add_argument("--backend", choices=BACKENDS, default="vllm", help="vllm (default) or hf (in-process)")
    parser.add_argument("--server-mode", choices=("reload", "fresh"), default="reload",
                        help="reload: one vLLM server, weights reloaded per trial (default); fresh: a server per trial")
    add_store_option(parser)
    parser.add_argument("--data-dir", type=Path, help="local task data folder (default: the registry's data_dir)")
    parser.add_argument("--no-test", action="store_true", help="stop after choosing the best; no test evaluation")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    add_executor_options(parser, "trials")
    add_eval_options(parser)


def run(args) -> int:
    from harness.evaluate import default_data_dir, eval_options
    from harness.evaluation import EvalSettings
    from harness.registry import load_registry
    from harness.store import ResultStore
    from harness.trials import run_sweep

    check_selection(args.select_on, args.i_know_this_is_test)
    ray = ray_settings(args)
    options = eval_options(args)
    EvalSettings(backend=args.backend, limit=args.limit, **options)  # bad evaluation options fail before anything is built
    registry = load_registry(args.registry)
    entry = registry.resolve(args.model)
    plan = sweep_plan(args, registry, entry)
    ResultStore(args.store).engine.dispose()  # an unusable store fails now, before a trial is built
    settings = EvalSettings(split=args.select_on, limit=args.limit, backend=args.backend, store_url=args.store,
                            data_dir=default_data_dir(args.data_dir, registry), device=args.device, **options)
    result = run_sweep(registry, entry.id, plan, settings, server_mode=args.server_mode, evaluate_test=not args.no_test,
                       select_split=args.select_on, allow_test_selection=args.i_know_this_is_test, ray=ray)
    print_result(result, on_ray=ray is not None)
    return 0


def sweep_plan(args, registry, entry):
    """The grid to sweep, or with --search the ranges to search (harness.search.Search)."""
    from harness.search import Search, SearchSettings, load_space_file, space_of_grid

    search_options = {"--trials": args.trials, "--sampler": args.sampler, "--seed": args.seed}
    if args.search is None:
        given = [flag for flag, value in search_options.items() if value is not None]
        if given:
            raise HarnessError(f"{', '.join(given)} only apply with --search optuna")
        return load_grid_file(args.grid_file) if args.grid_file is not None else builtin_grid_of(args.grid, registry, entry)
    if args.trials is None:
        raise HarnessError("--search optuna needs --trials N, the number of trials to run")
    settings = SearchSettings(args.trials, args.sampler or "tpe", 0 if args.seed is None else args.seed)
    if args.grid_file is not None:
        return Search(load_space_file(args.grid_file), settings)
    return Search(space_of_grid(builtin_grid_of(args.grid, registry, entry)), settings)


def print_result(result, on_ray: bool = False) -> None:
    chosen_on = "" if result.select_split == "dev" else f", best chosen on {result.select_split} (no held-out score)"
    print(f"\nsweep {result.sweep.label}: {len(result.trials)} trial(s), "
          f"{sum(t.status == 'evaluated' for t in result.trials)} evaluated, "
          f"{sum(t.status == 'stored' for t in result.trials)} already stored{chosen_on}")
    width = max(len(point_label(t.point)) for t in result.trials)
    for trial in result.trials:
        mark = "  <- best" if trial is result.best else ""
        print(f"  {point_label(trial.point):<{width}}  {result.select_split} {trial.score:.4f}{mark}")
    if result.test_scores is not None:
        scores = ", ".join(f"{lang} {value:.4f}" for lang, value in result.test_scores.items())
        print(f"best on test: {scores}")
        model_id = result.sweep.model
        print(f"registered {model_id}@best in {result.tuned_registry}; "
              f"evaluate it with: harness eval --registry {result.tuned_registry} --model {model_id}@best")
    if on_ray:  # the workers score at the same time: their summed scoring time may exceed the sweep's
        print(f"sweep time {result.total_s:.1f} s; trial scoring {result.eval_s:.1f} s summed over the Ray workers")
    else:
        print(f"sweep time {result.total_s:.1f} s, of which trial scoring {result.eval_s:.1f} s")
