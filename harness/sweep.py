"""`harness sweep`: tune a merge's hyperparameters on dev, report the best on test.

    harness sweep --model ties-uig --grid densities [--limit N]
    harness sweep --model ties-uig --grid-file grid.yaml

For each grid point: derive a recipe from the model's, build it through the merge cache (the
trial is registered as a temporary registry entry `<id>@<params>`, so `materialize` caches it
like any merge), evaluate it on the dev split of the model's languages, and store the trial
(store table `sweep_trials`: parameters, score = mean over languages of the per-language
average of each task's main metric). Trials already stored for the same sweep, model hash and
`--limit` are skipped, so an interrupted sweep resumes where it stopped. Then the best trial
(first in grid order on a tie) is evaluated on test under the id `<id>@best` and written to the
tuned registry `harness_home()/sweeps/tuned-<registry>.yaml`: a complete copy of the registry
plus every `<id>@best`, so `harness eval --registry <that file> --model ties-uig-flan@best` works.

Grid parameters (keys of a grid file; values are lists):
    models.<name>.<param>          a model's weight or density; `models.a,b.density` ties several
    parameters.<param>             a global parameter: lambda, slack, seed, ...
    sft_weight                     WAVG: the SFT model's weight w; the other models share 1 - w
Built-in grids: `densities` (k_sft x k_ct over 0.01, 0.2, 0.4, 0.6, 0.8, 1.0; CT models tied),
`weights` (sft_weight 0.1 ... 0.9), `slack` (TIES-SV slack 0.0 ... 0.5).

Server: with the vllm backend one server is started for the first trial that needs scoring and
kept up; each later trial's weights are loaded into it in place (`harness.server.reload_weights`,
vLLM dev mode), so a trial costs its merge and its evaluation, not a server start. A trial
whose config or tokenizer differs from the served one gets a fresh server. `--server-mode fresh`
starts a server per trial (the naive way; bench/sweep_bench.py compares the two).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness import HarnessError
from harness.evaluate import EvalSettings
from harness.paths import harness_home

DENSITIES = [0.01, 0.2, 0.4, 0.6, 0.8, 1.0]  # the paper's k_sft, k_ct grid
WAVG_WEIGHTS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
SLACKS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
BUILTIN_GRIDS = ("densities", "weights", "slack")
SERVED_NAME = "sweep-trial"


# ---- grids ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Grid:
    name: str
    axes: dict[str, list]  # parameter path -> values, in grid order

    def points(self) -> list[dict]:
        keys = list(self.axes)
        return [dict(zip(keys, values)) for values in itertools.product(*(self.axes[k] for k in keys))]


def builtin_grid_of(name: str, registry, entry) -> Grid:
    """A built-in grid over a registry merge, its input models' kinds taken from the registry."""
    if entry.recipe is None:
        raise HarnessError(f"model {entry.id!r} is a checkpoint, not a merge: there is nothing to sweep")
    kinds = {mid: registry.models[mid].kind for mid in entry.recipe_model_ids()}
    return builtin_grid(name, entry.recipe, kinds)


def builtin_grid(name: str, recipe: dict, kinds: dict[str, str]) -> Grid:
    """The paper's grids, over the SFT model and the other (CT) models of `recipe`."""
    method = recipe.get("merge_method")
    names = [m["model"] for m in recipe["models"] if m["model"] != recipe.get("base_model")]
    sft = [n for n in names if kinds.get(n) == "sft"]
    others = [n for n in names if n not in sft]
    if name == "densities":
        if method not in ("ties", "ties_sv", "dare_ties", "dare_linear") or len(sft) != 1 or not others:
            raise HarnessError(f"--grid densities needs a TIES/DARE merge of one SFT model and CT models; "
                               f"this recipe is {method} of {names}")
        return Grid(name, {f"models.{sft[0]}.density": DENSITIES, f"models.{','.join(others)}.density": DENSITIES})
    if name == "weights":
        if method != "linear" or len(sft) != 1:
            raise HarnessError(f"--grid weights needs a linear (WAVG) merge with one SFT model; this recipe is {method}")
        return Grid(name, {"sft_weight": WAVG_WEIGHTS})
    if name == "slack":
        if method != "ties_sv":
            raise HarnessError(f"--grid slack needs a ties_sv merge; this recipe is {method}")
        return Grid(name, {"parameters.slack": SLACKS})
    raise HarnessError(f"unknown grid {name!r}; built-in grids: {', '.join(BUILTIN_GRIDS)}")


def load_grid_file(path: Path) -> Grid:
    """A YAML mapping of parameter path -> non-empty list of values."""
    if not path.is_file():
        raise HarnessError(f"grid file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise HarnessError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict) or not data:
        raise HarnessError(f"{path}: a grid file is a mapping of parameter -> list of values")
    for key, values in data.items():
        if not isinstance(values, list) or not values:
            raise HarnessError(f"{path}: {key} must have a non-empty list of values, got {values!r}")
    return Grid(f"file:{path.stem}", {str(k): list(v) for k, v in data.items()})


def apply_point(recipe: dict, point: dict, sft_model: str | None = None) -> dict:
    """A copy of `recipe` with the point's parameters set; unknown paths are an error naming them."""
    out = copy.deepcopy(recipe)
    models = {m["model"]: m for m in out["models"]}
    for path, value in point.items():
        if path == "sft_weight":
            _set_wavg_weight(out, value, sft_model)
            continue
        head, _, rest = path.partition(".")
        if head == "parameters" and rest and "." not in rest:
            out.setdefault("parameters", {})[rest] = value
        elif head == "models" and rest.count(".") >= 1:
            names, _, param = rest.rpartition(".")
            for name in names.split(","):
                if name not in models:
                    raise HarnessError(f"grid parameter {path}: the recipe has no model {name!r} "
                                       f"(it has {', '.join(models)})")
                models[name].setdefault("parameters", {})[param] = value
        else:
            raise HarnessError(f"grid parameter {path!r}: expected models.<name>.<param>, "
                               "parameters.<param> or sft_weight")
    return out


def _set_wavg_weight(recipe: dict, weight, sft_model: str | None) -> None:
    """The SFT model gets `weight`, the other models share 1 - weight equally."""
    entries = [m for m in recipe["models"] if m["model"] != recipe.get("base_model")]
    if sft_model is None or len(entries) < 2:
        raise HarnessError("grid parameter sft_weight needs a merge of one SFT model and other models")
    sft = sft_model
    others = [m for m in entries if m["model"] != sft]
    for m in entries:
        share = weight if m["model"] == sft else (1 - weight) / len(others)
        m.setdefault("parameters", {})["weight"] = share


def point_label(point: dict) -> str:
    """`sft-flan.density=0.2,ct-uig.density=0.4`: the trial's id suffix and display label."""
    parts = []
    for path, value in point.items():
        short = path.removeprefix("models.").removeprefix("parameters.")
        parts.append(f"{short}={value}")
    return ",".join(parts)


# ---- trials --------------------------------------------------------------------------------------

@dataclass
class Trial:
    point: dict
    model_id: str  # `<id>@<label>`
    recipe: dict
    score: float | None = None
    lang_scores: dict | None = None
    model_hash: str | None = None
    status: str = "pending"  # pending | evaluated | stored


@dataclass
class SweepResult:
    sweep: str
    trials: list[Trial]
    best: Trial | None
    test_scores: dict | None  # language -> average on test (None: not evaluated)
    tuned_registry: Path | None
    total_s: float = 0.0
    eval_s: float = 0.0  # time spent scoring trials (server starts and merges excluded)


class SweepSettings(EvalSettings):
    """EvalSettings for trials scored on a server the sweep started: stored as backend `vllm`."""

    @property
    def backend_label(self) -> str:
        return "vllm" if self.server_url else self.backend


def plan_trials(registry, model_id: str, grid: Grid) -> list[Trial]:
    """Every grid point as a trial, each recipe validated before anything is built."""
    entry = registry.resolve(model_id)
    if entry.recipe is None:
        raise HarnessError(f"model {entry.id!r} is a checkpoint, not a merge: there is nothing to sweep")
    recipe = dict(entry.recipe)
    kinds = {mid: registry.models[mid].kind for mid in entry.recipe_model_ids()}
    sft = [m["model"] for m in recipe["models"] if kinds.get(m["model"]) == "sft"]
    trials = []
    for point in grid.points():
        derived = apply_point(recipe, point, sft[0] if len(sft) == 1 else None)
        _validate(derived, point)
        trials.append(Trial(point, f"{entry.id}@{point_label(point)}", derived))
    return trials


def _validate(recipe: dict, point: dict) -> None:
    import merges

    try:
        merges.load_recipe(recipe)
    except merges.MergeError as err:
        raise HarnessError(f"grid point {point_label(point)}: {err}") from None


def with_trial(registry, base_id: str, trial: Trial):
    """A registry copy holding the trial as a merge entry (so materialize builds and caches it)."""
    base = registry.resolve(base_id)
    entry = dataclasses.replace(base, id=trial.model_id, recipe=trial.recipe, aliases=(),
                                description=f"sweep trial of {base.id}: {point_label(trial.point)}")
    return dataclasses.replace(registry, models={**registry.models, trial.model_id: entry})


# ---- evaluating trials: one server, weights reloaded ---------------------------------------------

def _identity_files(folder: Path) -> str:
    """What must match to serve a checkpoint on a server started from another: config and tokenizer."""
    digest = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "generation_config.json"):
        path = Path(folder) / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"-") + b"\n")
    return digest.hexdigest()


@contextmanager
def _environment(changes: dict[str, str]):
    saved = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class TrialEvaluator:
    """Scores models on a vLLM server it keeps up (reload mode), on a fresh server per model
    (fresh mode), or in-process (hf backend). Use as a context manager."""

    def __init__(self, settings: EvalSettings, server_mode: str, log_dir: Path):
        self.settings = settings
        self.server_mode = server_mode  # reload | fresh
        self.log_dir = log_dir
        self.server = None
        self.served_identity: str | None = None
        self.server_starts = 0
        self.eval_s = 0.0

    def __enter__(self) -> "TrialEvaluator":
        return self

    def __exit__(self, *exc) -> None:
        self._stop()

    def evaluate(self, model, tasks: list[str], split: str):
        from harness.evaluate import evaluate, pending_tasks

        settings = dataclasses.replace(self.settings, split=split)
        if settings.backend == "vllm" and pending_tasks(model, tasks, settings):  # else: no server needed
            self._serve(model)
            settings = SweepSettings(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(EvalSettings)})
            settings.server_url = self.server.url
        start = time.monotonic()
        report = evaluate(model, tasks, settings)
        self.eval_s += time.monotonic() - start
        if self.server_mode == "fresh":
            self._stop()
        return report

    def _serve(self, model) -> None:
        from harness.server import DEV_MODE_ENV, ServerConfig, VLLMServer, reload_weights

        identity = _identity_files(model.path)
        if self.server is not None and self.server.is_running() and identity == self.served_identity:
            reload_weights(self.server.url, model.path)
            return
        self._stop()
        config = ServerConfig(model_dir=model.path, served_name=SERVED_NAME, device=self.settings.device,
                              log_path=self.log_dir / f"vllm-server-{self.server_starts}.log")
        with _environment(DEV_MODE_ENV if self.server_mode == "reload" else {}):
            self.server = VLLMServer(config).start()
        self.server_starts += 1
        self.served_identity = identity

    def _stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


# ---- the sweep -----------------------------------------------------------------------------------

def run_sweep(registry, model_id: str, grid: Grid, settings: EvalSettings, server_mode: str = "reload",
              evaluate_test: bool = True, progress: bool = True) -> SweepResult:
    """Build, evaluate and store every trial not stored yet; choose the best; test and register it."""
    from tqdm import tqdm

    from harness import store as store_module
    from harness.build import materialize
    from harness.evaluate import ModelUnderTest
    from harness.store import ResultStore
    from tasks import suite

    started = time.monotonic()
    entry = registry.resolve(model_id)
    if not entry.langs:
        raise HarnessError(f"model {entry.id!r} has no languages in the registry: no dev tasks to tune on")
    trials = plan_trials(registry, entry.id, grid)
    sweep = f"{entry.id}:{grid.name}"
    store = ResultStore(settings.store_url)
    stored = _stored_trials(store, sweep, settings.limit)
    dev_tasks = [task for lang in entry.langs for task in suite.task_names(lang, "dev")]
    log_dir = harness_home() / "sweeps" / "logs" / entry.id
    with TrialEvaluator(settings, server_mode, log_dir) as evaluator:
        bar = tqdm(trials, desc=f"sweep {sweep}", unit="trial", disable=not progress)
        for trial in bar:
            bar.set_postfix_str(point_label(trial.point)[:60])
            trial_registry = with_trial(registry, entry.id, trial)
            build_start = time.monotonic()
            built = materialize(trial_registry, trial.model_id, device=settings.device, progress=False)
            build_s = time.monotonic() - build_start
            trial.model_hash = built.model_hash
            if built.model_hash in stored:
                trial.score, trial.lang_scores = stored[built.model_hash]
                trial.status = "stored"
                continue
            eval_before = evaluator.eval_s
            report = evaluator.evaluate(ModelUnderTest.from_built(built), dev_tasks, "dev")
            trial.lang_scores = _language_scores(report, entry.langs)
            trial.score = sum(trial.lang_scores.values()) / len(trial.lang_scores)
            trial.status = "evaluated"
            store_module.write_sweep_trial(store, {
                "sweep": sweep, "model": entry.id, "trial_model": trial.model_id, "model_hash": built.model_hash,
                "params_json": json.dumps(trial.point), "recipe_json": json.dumps(trial.recipe), "split": "dev",
                "limit": settings.limit, "score": trial.score, "lang_scores_json": json.dumps(trial.lang_scores),
                "build_s": build_s, "eval_s": evaluator.eval_s - eval_before,
            })
        best = max(trials, key=lambda t: t.score)  # max keeps the first of equal scores: grid order
        store_module.mark_sweep_choice(store, sweep, best.model_hash)
        trial_eval_s = evaluator.eval_s
        test_scores, tuned = None, None
        if evaluate_test:
            best_id = f"{entry.id}@best"
            tuned = register_best(registry, entry.id, best)
            built = materialize(with_trial(registry, entry.id, best), best.model_id, device=settings.device, progress=False)
            model = dataclasses.replace(ModelUnderTest.from_built(built), id=best_id)
            test_tasks = [task for lang in entry.langs for task in suite.task_names(lang, "test")]
            test_scores = _language_scores(evaluator.evaluate(model, test_tasks, "test"), entry.langs)
    return SweepResult(sweep, trials, best, test_scores, tuned, time.monotonic() - started, trial_eval_s)


def _stored_trials(store, sweep: str, limit: int | None) -> dict[str, tuple[float, dict]]:
    """model hash -> (score, language scores) of this sweep's trials stored with the same limit."""
    from harness.store import sweep_trials

    frame = sweep_trials(store, sweep)
    stored = {}
    for row in frame.itertuples():
        row_limit = None if row.limit is None or row.limit != row.limit else int(row.limit)
        if row_limit == limit:
            stored[row.model_hash] = (float(row.score), json.loads(row.lang_scores_json))
    return stored


def _language_scores(report, langs) -> dict[str, float]:
    from harness.evaluate import language_averages, report_table

    averages = language_averages(report_table(report))
    missing = [lang for lang in langs if lang not in averages]
    if missing:
        raise HarnessError(f"no scores for language(s) {missing} in the evaluation of {report.model.id}")
    return {lang: averages[lang] for lang in langs}


# ---- the tuned registry ----------------------------------------------------------------------------

def tuned_registry_path(registry) -> Path:
    return harness_home() / "sweeps" / f"tuned-{registry.name}.yaml"


def register_best(registry, model_id: str, best: Trial) -> Path:
    """Write (or update) the tuned registry: the source registry's models plus `<id>@best`."""
    path = tuned_registry_path(registry)
    if path.is_file():
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    else:
        data = yaml.safe_load(Path(registry.source).read_text(encoding="utf-8"))
        data["name"] = f"{registry.name}-tuned"
        data["description"] = f"{registry.source} plus the sweeps' best merges (<id>@best), written by harness sweep"
        # Absolute paths: relative ones would resolve against this file's folder, not the source's.
        for model_id_, raw in data["models"].items():
            if raw.get("path") is not None:
                raw["path"] = str(registry.models[str(model_id_)].path)
        if registry.data_dir is not None:
            data["data_dir"] = str(registry.data_dir)
    entry = registry.resolve(model_id)
    data["models"][f"{entry.id}@best"] = {
        "kind": "merge", "langs": list(entry.langs), "recipe": best.recipe,
        "description": f"best of harness sweep on dev: {point_label(best.point)} (dev score {best.score:.4f})",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(temp, path)
    return path


# ---- the command line ------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="registry id or alias of a merge, e.g. ties-uig")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--grid", choices=BUILTIN_GRIDS,
                        help="built-in grid: densities (k_sft x k_ct), weights (WAVG), slack (TIES-SV)")
    source.add_argument("--grid-file", type=Path, metavar="YAML",
                        help="grid file: parameter path -> list of values, e.g. models.sft-flan.density: [0.2, 0.4]")
    parser.add_argument("--limit", type=int, help="only the first N items of each task, dev and test (quick runs)")
    parser.add_argument("--backend", choices=("vllm", "hf"), default="vllm", help="vllm (default) or hf (in-process)")
    parser.add_argument("--server-mode", choices=("reload", "fresh"), default="reload",
                        help="reload: one vLLM server, weights reloaded per trial (default); fresh: a server per trial")
    parser.add_argument("--store", metavar="URL", help="results store (default: SQLite under the harness home)")
    parser.add_argument("--data-dir", type=Path, help="local task data folder (default: the registry's data_dir)")
    parser.add_argument("--no-test", action="store_true", help="stop after choosing the best; no test evaluation")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def run(args) -> int:
    from harness.evaluate import default_data_dir
    from harness.registry import load_registry

    if args.limit is not None and args.limit < 1:
        raise HarnessError(f"--limit must be a positive number of items, got {args.limit}")
    registry = load_registry(args.registry)
    entry = registry.resolve(args.model)
    grid = load_grid_file(args.grid_file) if args.grid_file is not None else builtin_grid_of(args.grid, registry, entry)
    settings = EvalSettings(split="dev", limit=args.limit, backend=args.backend, store_url=args.store,
                            data_dir=default_data_dir(args.data_dir, registry.data_dir), device=args.device)
    result = run_sweep(registry, entry.id, grid, settings, server_mode=args.server_mode, evaluate_test=not args.no_test)
    print_result(result)
    return 0


def print_result(result: SweepResult) -> None:
    print(f"\nsweep {result.sweep}: {len(result.trials)} trial(s), "
          f"{sum(t.status == 'evaluated' for t in result.trials)} evaluated, "
          f"{sum(t.status == 'stored' for t in result.trials)} already stored")
    width = max(len(point_label(t.point)) for t in result.trials)
    for trial in result.trials:
        mark = "  <- best" if trial is result.best else ""
        print(f"  {point_label(trial.point):<{width}}  dev {trial.score:.4f}{mark}")
    if result.test_scores is not None:
        scores = ", ".join(f"{lang} {value:.4f}" for lang, value in result.test_scores.items())
        print(f"best on test: {scores}")
        model_id = result.sweep.split(":")[0]
        print(f"registered {model_id}@best in {result.tuned_registry}; "
              f"evaluate it with: harness eval --registry {result.tuned_registry} --model {model_id}@best")
    print(f"sweep time {result.total_s:.1f} s, of which trial scoring {result.eval_s:.1f} s")
