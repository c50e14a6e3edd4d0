"""`harness maintain --update LANG [--factor F]`: the maintenance experiment of Dmonte et al. (Table 2).

One language gets F times its task data (F budgets of the zoo's LoraSetting). The merged approach
retrains that language's adapter alone (INDV `lora-<lang>`) and re-makes every registry merge over
it; the combined approach retrains COMB (`lora-comb`) on every language's data plus the same extra
data. Both are timed on this machine and stored, with the initial build's times (the adapters'
training times from the zoo manifest, the merges over the zoo's adapters timed here), in the
store's `maintenance_times` table (harness/store.py); the leaderboard's Maintenance view turns them
into Table 2 beside each model's quality.

    $HARNESS_HOME/maintain/<lang>-x<F>/lora-<lang>/, lora-comb/    the retrained adapters
    $HARNESS_HOME/maintain/<lang>-x<F>/registry.yaml               the source registry plus
        `<id>@<lang>-x<F>` for both adapters and each re-made merge, so that
        `harness eval --registry <that file> --model lora-ties@uig-x2` scores the updated models.

A merge is timed as `merges.run_merge` into a scratch folder (its inputs built first, untimed), so
a merge already in the cache is still measured; the scratch output is removed after.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness import HarnessError
from harness.paths import add_store_option, harness_home
from harness.registry import Registry, load_registry

if TYPE_CHECKING:  # the store loads pandas and SQLAlchemy, which `harness --help` must not
    from harness.store import TimedStep

COMB = "lora-comb"


def add_arguments(parser) -> None:
    parser.add_argument("--update", required=True, metavar="LANG", help="the language whose adapter gets more data")
    parser.add_argument("--factor", type=int, default=2, metavar="F",
                        help="its task examples in the update, as a multiple of the initial ones (default 2)")
    add_store_option(parser)


@dataclass(frozen=True)
class Plan:
    """What one experiment trains and merges, checked before anything runs."""

    lang: str
    factor: int
    languages: tuple[str, ...]  # the zoo's target languages: one INDV adapter each
    merges: tuple[str, ...]  # registry merges over lora-<lang>

    @property
    def name(self) -> str:
        return f"{self.lang}-x{self.factor}"

    @property
    def indv(self) -> str:
        return f"lora-{self.lang}"

    @property
    def adapters(self) -> list[str]:
        return [f"lora-{lang}" for lang in self.languages] + [COMB]

    def updated(self, model_id: str) -> str:
        """The id an updated model has in the experiment's registry."""
        return f"{model_id}@{self.name}"


def plan_for(registry: Registry, config, lang: str, factor: int) -> Plan:
    if registry.zoo is None:
        raise HarnessError(f"harness maintain retrains the zoo's adapters: registry {registry.name!r} has no zoo")
    if lang not in config.languages:
        raise HarnessError(f"--update {lang!r}: not a language of the zoo; one of {', '.join(config.languages)}")
    if factor < 2:
        raise HarnessError(f"--factor {factor}: an update adds data, so the factor must be 2 or more")
    indv = f"lora-{lang}"
    merges = tuple(entry.id for entry in registry.models.values() if indv in entry.recipe_model_ids())
    plan = Plan(lang, factor, tuple(config.languages), merges)
    for adapter in plan.adapters:
        entry = registry.resolve(adapter)
        if entry.kind != "adapter":
            raise HarnessError(f"model {adapter!r} of registry {registry.name!r} is a {entry.kind}, not an adapter")
    return plan


def run(args) -> int:
    from harness import zoo
    from harness.build import build_zoo_models_for
    from harness.store import ResultStore, write_maintenance

    config = zoo.ZooConfig()
    registry = load_registry(args.registry)
    plan = plan_for(registry, config, args.update, args.factor)
    store = ResultStore(args.store)  # a store that cannot be opened fails before anything is built
    build_zoo_models_for(registry, plan.adapters)
    folder = harness_home() / "maintain" / plan.name
    shutil.rmtree(folder, ignore_errors=True)  # a rerun measures again, from scratch
    steps = initial_training(registry.zoo, plan) + [time_merge(registry, merge, "initial", merge, folder)
                                                    for merge in plan.merges]
    steps += retrain(plan, config, registry.zoo, folder)
    updated_registry = write_registry(registry, plan, folder)
    steps += [time_merge(updated_registry, plan.updated(merge), "update", merge, folder) for merge in plan.merges]
    write_maintenance(store, plan.name, plan.lang, plan.factor, steps)
    print(report(plan, steps))
    print(f"updated models: harness eval --registry {folder / 'registry.yaml'} --model {plan.updated(COMB)}")
    return 0


# ---- the initial build ----------------------------------------------------------------------------

def initial_training(zoo_folder: Path, plan: Plan) -> list[TimedStep]:
    """The adapters' training as the zoo build measured it (zoo.json)."""
    from harness.store import TimedStep
    from harness.zoo.build import read_manifest

    records = read_manifest(zoo_folder).get("artifacts", {})
    return [TimedStep("initial", "comb" if adapter == COMB else "indv", adapter, adapter,
                      records[adapter]["train_seconds"], records[adapter]["steps"], records[adapter]["examples"])
            for adapter in plan.adapters]


def time_merge(registry: Registry, merge_id: str, phase: str, model: str, folder: Path) -> TimedStep:
    """Make one registry merge into a scratch folder, timed (its inputs built first, untimed)."""
    import merges

    from harness.build import materialize
    from harness.store import TimedStep

    recipe = merges.load_recipe(registry.resolve(merge_id).recipe)
    inputs = {name: materialize(registry, name, progress=False).path for name in recipe.referenced_models()}
    scratch = folder / f".timing-{merge_id}"
    started = time.perf_counter()
    merges.run_merge(recipe, inputs.__getitem__, scratch, progress=False)
    seconds = time.perf_counter() - started
    shutil.rmtree(scratch)
    return TimedStep(phase, "merge", model, merge_id, round(seconds, 3))


# ---- the update -------------------------------------------------------------------------------

def retrain(plan: Plan, config, zoo_folder: Path, folder: Path) -> list[TimedStep]:
    """Retrain the language's adapter on F budgets of its data, and COMB with the same extra data."""
    indv_shares = {plan.lang: plan.factor}
    comb_shares = {lang: plan.factor if lang == plan.lang else 1 for lang in plan.languages}
    return [_retrain_one(plan.indv, indv_shares, plan, config, zoo_folder, folder, "indv"),
            _retrain_one(COMB, comb_shares, plan, config, zoo_folder, folder, "comb")]


def _retrain_one(adapter_id: str, shares: dict[str, int], plan: Plan, config, zoo_folder: Path, folder: Path,
                 role: str) -> TimedStep:
    from harness.store import TimedStep
    from harness.zoo.adapters import adapter_seed, save_adapter, train_adapter
    from harness.zoo.build import TOKENIZER
    from harness.zoo.tokenizer import load_tokenizer
    from harness.zoo.train import load_model
    from merges.io import atomic_folder

    print(f"retraining {adapter_id} on {shares}", flush=True)
    tokenizer = load_tokenizer(zoo_folder / TOKENIZER)
    adapter = train_adapter(config, tokenizer, load_model(zoo_folder / "base"), shares,
                            adapter_seed(config, adapter_id), desc=adapter_id, progress=True)
    with atomic_folder(folder / adapter_id, f"the retrained adapter {adapter_id}") as temp:
        save_adapter(adapter, temp)
    return TimedStep("update", role, adapter_id, plan.updated(adapter_id), adapter.train_seconds,
                     adapter.examples // config.lora.stage.batch_size, adapter.examples)


def write_registry(registry: Registry, plan: Plan, folder: Path) -> Registry:
    """The source registry plus the updated adapters and merges, as `<id>@<lang>-x<F>`."""
    import os

    import yaml

    from harness.registry import parse_registry
    from harness.tuned import new_tuned_registry

    data = new_tuned_registry(registry)
    data["name"] = f"{registry.name}-{plan.name}"
    data["description"] = f"{registry.source} plus the models of harness maintain --update {plan.lang} --factor {plan.factor}"
    renamed = {adapter: plan.updated(adapter) for adapter in (plan.indv, COMB)}
    for adapter, new_id in renamed.items():
        entry = registry.resolve(adapter)
        data["models"][new_id] = {"kind": "adapter", "base": entry.base, "langs": list(entry.langs),
                                  "path": str(folder / adapter), "description": f"{adapter}, retrained ({plan.name})"}
    for merge in plan.merges:
        entry = registry.resolve(merge)
        recipe = dict(entry.recipe, models=[dict(spec, model=renamed.get(spec["model"], spec["model"]))
                                            for spec in entry.recipe["models"]])
        data["models"][plan.updated(merge)] = {"kind": "merge", "langs": list(entry.langs), "recipe": recipe,
                                               "description": f"{merge} over the retrained {plan.indv}"}
    path = folder / "registry.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(temp, path)
    return parse_registry(data, path)


def report(plan: Plan, steps: list[TimedStep]) -> str:
    """The measured steps, one line each."""
    lines = [f"maintenance {plan.name}: {plan.indv} with {plan.factor}x its examples"]
    for step in steps:
        extra = f"  {step.steps} steps, {step.examples} examples" if step.steps is not None else ""
        lines.append(f"  {step.phase:<8} {step.role:<6} {step.evaluated_as:<28} {step.seconds:>9.2f} s{extra}")
    return "\n".join(lines)
