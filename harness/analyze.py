"""`harness analyze similarity`: the cosine similarity of models' language vectors (Dmonte et al., Figure 3).

    harness analyze similarity ct-tam ct-tel ct-uig [--base ID] [--store URL]

Each id is a registry model. One whose folder is a PEFT LoRA adapter (merges.lora.is_adapter_folder)
is its ΔW = scale · B·A per module; any other model (a checkpoint, a hub model, a merge, built as
`harness merge` builds it) is its task vector against the base. All vectors are taken against one
base model, which every model is checked against (tensor names and shapes):

- `--base ID` when given;
- else the `base` field of the adapters' registry entries (they must name the same model);
- else the registry's one model of kind `base` (the zoo's `base`, the paper's Llama-2-7B).

The math (streamed, bounded memory) is merges.similarity; this module resolves ids, prints the
matrix and stores it (store table `vector_similarity`) for the leaderboard's Language vectors page.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from harness import HarnessError
from harness.paths import add_store_option
from harness.registry import ModelEntry, Registry, load_registry

BASE_KIND = "base"


@dataclass(frozen=True)
class VectorInput:
    """A model as merges.similarity reads it: its folder and the identity hash of that build."""

    id: str
    path: Path
    model_hash: str


def add_arguments(parser) -> None:
    analyses = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    help_text = "cosine similarity between the models' language vectors (adapters: B·A; full models: task vectors)"
    similarity = analyses.add_parser("similarity", help=help_text, description=help_text)
    similarity.add_argument("models", nargs="+", metavar="ID", help="registry model ids (two or more)")
    similarity.add_argument("--base", metavar="ID",
                            help="the model the vectors are taken against (default: the adapters' `base` field, "
                                 "else the registry's model of kind base)")
    add_store_option(similarity)
    similarity.add_argument("--registry", default=argparse.SUPPRESS, help="model registry (as for every command)")


def run(args) -> int:
    return run_similarity(args)


def run_similarity(args) -> int:
    from merges.similarity import similarity

    from harness.build import build_zoo_models_for
    from harness.store import ResultStore

    registry = load_registry(args.registry)
    entries = _unique_entries(registry, args.models)
    base_id, rule = vector_base(registry, entries, args.base)
    ResultStore(args.store).engine.dispose()  # an unusable store fails now, before any model is built
    build_zoo_models_for(registry, [entry.id for entry in entries] + [base_id])
    inputs = [_vector_input(registry, entry) for entry in entries]
    base = _vector_input(registry, registry.resolve(base_id))
    started = time.perf_counter()
    result = similarity({i.id: i.path for i in inputs}, (base.id, base.path), progress=True)
    seconds = time.perf_counter() - started
    print(f"cosine similarity of language vectors, against base {base.id!r} ({rule}); "
          f"{result.bytes_read / 1e9:.3f} GB of tensors read in {seconds:.1f} s")
    print(similarity_frame(result).to_string(float_format=lambda v: f"{v:.3f}"))
    url = _store(args.store, inputs, base, result)
    print(f"results store: {url}")
    return 0


def _unique_entries(registry: Registry, ids: list[str]) -> list[ModelEntry]:
    entries = [registry.resolve(model_id) for model_id in ids]
    seen: dict[str, str] = {}
    for name, entry in zip(ids, entries):
        if entry.id in seen:
            raise HarnessError(f"model {name!r} is given twice (as {seen[entry.id]!r} and {name!r})")
        seen[entry.id] = name
    if len(entries) < 2:
        raise HarnessError("similarity needs at least two model ids")
    return entries


def vector_base(registry: Registry, entries: list[ModelEntry], chosen: str | None) -> tuple[str, str]:
    """The base id the vectors are taken against, and the rule that chose it (in words)."""
    named = {entry.id: entry.base for entry in entries if entry.base is not None}
    if chosen is not None:
        base = registry.resolve(chosen).id
        for model_id, adapter_base in named.items():
            if registry.resolve(adapter_base).id != base:
                raise HarnessError(f"model {model_id!r} was trained over {adapter_base!r}, not --base {chosen!r}")
        return base, "--base"
    bases = {registry.resolve(adapter_base).id for adapter_base in named.values()}
    if len(bases) > 1:
        listed = ", ".join(f"{model_id}: {adapter_base}" for model_id, adapter_base in named.items())
        raise HarnessError(f"the models have different bases ({listed}); compare models of one base")
    if bases:
        return bases.pop(), "the adapters' base"
    kind_base = [entry.id for entry in registry.models.values() if entry.kind == BASE_KIND]
    if len(kind_base) != 1:
        raise HarnessError(f"registry {registry.name!r} has {len(kind_base)} models of kind {BASE_KIND!r}: "
                           "name the base with --base ID")
    return kind_base[0], f"the registry's model of kind {BASE_KIND}"


def _vector_input(registry: Registry, entry: ModelEntry) -> VectorInput:
    """An adapter's folder as it is (no config.json to build from), any other model built by materialize."""
    from merges.lora import is_adapter_folder

    from harness.build import folder_hash, materialize

    if entry.path is not None and is_adapter_folder(entry.path):
        return VectorInput(entry.id, entry.path, folder_hash(entry.path))
    built = materialize(registry, entry.id, progress=True)
    return VectorInput(entry.id, built.path, built.model_hash)


def similarity_frame(result):
    """The cosine matrix as a table, models in the order given."""
    import pandas as pd

    return pd.DataFrame(result.cosine.numpy(), index=result.names, columns=result.names)


def _store(url: str | None, inputs: list[VectorInput], base: VectorInput, result) -> str:
    from harness.store import ResultStore, SimilarityRow, write_similarities

    rows = [SimilarityRow(model=x.id, model_hash=x.model_hash, other=y.id, other_hash=y.model_hash,
                          base=base.id, base_hash=base.model_hash,
                          cosine=float(result.cosine[i, j]), inner=float(result.gram[i, j]))
            for i, x in enumerate(inputs) for j, y in enumerate(inputs)]
    store = ResultStore(url)
    try:
        write_similarities(store, rows)
    finally:
        store.engine.dispose()
    return store.url
