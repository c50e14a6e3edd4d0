"""`harness`: one subcommand per module, in data-flow order.

Each module named below has `add_arguments(parser)` and `run(args) -> int`, and keeps heavy
imports (torch, vllm, lm-eval, pandas, SQLAlchemy) inside its functions so `harness --help` stays
fast (tests/harness/test_cli.py checks it).
"""

import argparse
import importlib
import sys

from harness import HarnessError, __version__
from merges.errors import MergeError  # light: loads neither torch nor the merge engine
from tasks.errors import TaskError

SUBCOMMANDS = {
    "models": ("harness.registry", "list the models of a registry"),
    "zoo": ("harness.zoo", "build the embedded CPU model zoo"),
    "import": ("harness.importer", "convert a GGUF checkpoint into a safetensors folder"),
    "tasks": ("harness.tasklist", "list the evaluation tasks per language with their split sizes"),
    "merge": ("harness.build", "build a merged model from a registry id or a recipe file"),
    "eval": ("harness.evaluate", "evaluate a model on its languages' tasks and store the results"),
    "sweep": ("harness.sweep", "tune a merge's hyperparameters on dev, evaluate the best on test"),
    "experiment": ("harness.experiment", "run the paper's experiment (baselines, tuned merges) and print its Table 3"),
    "maintain": ("harness.maintain", "retrain one language's adapter with more data and re-merge, against retraining "
                 "COMB; store the times (the paper's Table 2)"),
    "curve": ("harness.curve", "evaluate a checkpoint series: CT checkpoints and the merge over each, against CT tokens seen"),
    "regress": ("harness.regress", "rebuild fixed zoo merges and compare them with the committed baseline"),
    "analyze": ("harness.analyze", "analyse models' weights: `similarity` of their language vectors (LoRA B·A, task vectors)"),
    "leaderboard": ("harness.leaderboard", "open the Streamlit leaderboard over the results store"),
    "report": ("harness.report", "write the leaderboard's tables and figures for a paper (Markdown, LaTeX, CSV, SVG, PNG)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Merge CT and SFT models for low-resource languages and evaluate them.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Every subcommand takes --registry, so it can go before or after the subcommand name.
    registry_help = (
        "model registry: a YAML file, or a shipped one by name: zoo (the default, the CPU model "
        "zoo) or paper (the paper's models on the hub)"
    )
    parser.add_argument("--registry", default=None, help=registry_help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--registry", default=argparse.SUPPRESS, help=registry_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. With `argv` None this is the `harness` program, which exits after it."""
    args = build_parser().parse_args(argv)
    args.process_exits_after = argv is None
    try:
        return int(args.module.run(args) or 0)
    except (HarnessError, MergeError, TaskError) as err:  # user-facing: one line, no traceback
        print(f"harness {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"harness {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
