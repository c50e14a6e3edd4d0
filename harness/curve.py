"""`harness curve`: scores against the CT tokens seen, the paper's Figure 2.

    harness curve --model ties-uig                       # test split
    harness curve --model ties-uig --split dev --limit 20 --backend hf

The model is a merge over a checkpoint series (harness.registry: one of its inputs, the CT model,
lists `checkpoints`) or a series itself (`ct-uig`). The curve's points, each a registry model:

    CT-X     the CT model's checkpoints and the CT model       ct-uig@step30 ... ct-uig
    TIES-X   the merge over each checkpoint and the merge      ties-uig-flan@step30 ... ties-uig-flan
    CTSFT-X  the language's CT-then-SFT models that record     ctsft-uig-flan, ctsft-uig-mt
             their CT tokens (`tokens`), with their checkpoints

Training a CT-then-SFT model from every CT checkpoint costs a fine-tuning run each, so the zoo trains
them from the final CT model only: CTSFT-X is one point each, at the CT model's tokens. A registry
that lists CT-then-SFT models trained from earlier checkpoints (their `checkpoints`) gets lines.

Every point is built and evaluated through `harness eval`'s path (harness.evaluation; stored results
are reused) on one vLLM server, each point's weights reloaded into it (harness.trial_scoring); the
store records each point's series and tokens (harness.store, `models`), and the leaderboard's
"Checkpoint curves" page draws them. Prints each language's average per series and tokens seen.
"""

import argparse
import sys
from pathlib import Path

from harness import HarnessError
from harness.evaluate import add_eval_options
from harness.lm_eval_run import BACKENDS
from harness.paths import add_store_option, harness_home
from tasks.suite import SPLITS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a merge over a checkpoint series (e.g. ties-uig), or a model with checkpoints (ct-uig)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="task split (default: test)")
    parser.add_argument("--limit", type=int, help="a fixed, seeded sample of N items per task (quick runs)")
    parser.add_argument("--backend", choices=BACKENDS, default="vllm",
                        help="vllm: one vLLM server, each point's weights reloaded into it (default); hf: in-process")
    add_store_option(parser)
    parser.add_argument("--data-dir", type=Path, help="local task data folder (default: the registry's data_dir)")
    parser.add_argument("--force", action="store_true", help="re-evaluate tasks already in the store")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to serve or run the models")
    add_eval_options(parser)


def curve_entries(registry, model_id: str) -> list:
    """The registry models the curve of `model_id` evaluates, series by series (CT, merge, CT-then-SFT),
    each fewest tokens first; an error naming the model when it is no series nor a merge over one."""
    entry = registry.resolve(model_id)
    head = registry.models[entry.series] if entry.series else entry
    ct = registry.series_input(head.id) if head.recipe is not None else (head if head.checkpoints else None)
    if ct is None:
        raise HarnessError(f"model {head.id!r} is neither a merge over a checkpoint series nor a model with checkpoints: "
                           "give one whose registry entry (or whose one CT input's) lists `checkpoints`")
    heads = [ct] + ([head] if head.recipe is not None else [])
    heads += [e for e in registry.models.values()
              if e.kind == "ctsft" and e.tokens is not None and set(e.langs) == set(ct.langs)]
    return [point for series_head in heads for point in registry.series(series_head.id)]


def run(args) -> int:
    from harness.build import materialize
    from harness.checkpoints import check_tokenizer
    from harness.evaluate import choose_tasks, default_data_dir, eval_options
    from harness.evaluation import EvalSettings, ModelUnderTest, language_averages
    from harness.registry import load_registry
    from harness.store import ResultStore
    from harness.trial_scoring import TrialEvaluator

    registry = load_registry(args.registry)
    entries = curve_entries(registry, args.model)
    ResultStore(args.store).engine.dispose()  # an unusable store fails now, before anything is built
    settings = EvalSettings(split=args.split, limit=args.limit, backend=args.backend, store_url=args.store,
                            data_dir=default_data_dir(args.data_dir, registry), force=args.force, device=args.device,
                            **eval_options(args))
    print(f"curve of {args.model}: {len(entries)} models ({', '.join(e.id for e in entries)})", file=sys.stderr)
    rows = []
    with TrialEvaluator(settings, "reload", harness_home() / "curves" / "logs" / entries[0].series_id) as evaluator:
        for entry in entries:
            model = ModelUnderTest.from_built(materialize(registry, entry.id, device=args.device, progress=False))
            check_tokenizer(model.id, model.checkpoint_dir)
            tasks = choose_tasks(entry.langs, None, None, args.split, entry.id, settings.data_dir)
            report = evaluator.evaluate(model, tasks, args.split)
            rows += [{"lang": lang, "series": entry.series_id, "tokens": entry.tokens, "average": average.value}
                     for lang, average in language_averages(report).items()]
    print(curve_text(rows, args.split))
    print(f"results store: {ResultStore(args.store).url}; the leaderboard's Checkpoint curves page draws them")
    return 0


def curve_text(rows: list[dict], split: str) -> str:
    """Per language, a table of series by CT tokens seen: the language average in % ('-': none)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["lang", "series", "tokens", "average"])
    blocks = []
    for lang, part in frame.groupby("lang", sort=False):
        table = part.pivot_table(index="series", columns="tokens", values="average", aggfunc="last", sort=False,
                                 dropna=False) * 100
        table = table.reindex(sorted(table.columns), axis=1).rename_axis(index=None)
        blocks.append(f"\n{lang}, {split} split: language average (%) by CT tokens seen\n"
                      + table.to_string(float_format=lambda v: f"{v:.1f}", na_rep="-"))
    return "\n".join(blocks)
