"""The tuned registry a sweep writes: `harness_home()/sweeps/tuned-<registry>.yaml`, a complete copy
of the source registry plus every swept merge's best trial as `<id>@best`, so that
`harness eval --registry <that file> --model ties-uig-flan@best` works."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from harness.files import read_yaml
from harness.grids import point_label
from harness.paths import harness_home

if TYPE_CHECKING:  # harness.trials imports this module
    from harness.trials import Trial


def tuned_registry_path(registry) -> Path:
    return harness_home() / "sweeps" / f"tuned-{registry.name}.yaml"


def register_best(registry, model_id: str, best: Trial) -> Path:
    """Write (or update) the tuned registry: the source registry's models plus `<id>@best`."""
    path = tuned_registry_path(registry)
    data = read_yaml(path, "tuned registry") if path.is_file() else new_tuned_registry(registry)
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


def new_tuned_registry(registry) -> dict:
    """The source registry's contents, renamed, with every path absolute."""
    data = read_yaml(Path(registry.source), "registry file")
    data["name"] = f"{registry.name}-tuned"
    data["description"] = f"{registry.source} plus the sweeps' best merges (<id>@best), written by harness sweep"
    # Absolute paths: relative ones would resolve against this file's folder, not the source's.
    for model_id, raw in data["models"].items():
        if raw.get("path") is not None:
            raw["path"] = str(registry.models[str(model_id)].path)
        checkpoint_paths = {c.label: c.path for c in registry.models[str(model_id)].checkpoints if c.path is not None}
        for listed in raw.get("checkpoints") or []:
            if listed.get("label") in checkpoint_paths:
                listed["path"] = str(checkpoint_paths[listed["label"]])
    if registry.data_dir is not None:
        data["data_dir"] = str(registry.data_dir)
    if registry.zoo is not None:
        data["zoo"] = str(registry.zoo)
    return data
