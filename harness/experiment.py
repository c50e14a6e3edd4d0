"""`harness experiment`: the paper's experiment on a registry, end to end, and its Table 3.

    harness experiment                      every target language, and the English control
    harness experiment --lang uig --lang bod --backend hf

For every target language X:
  1. the baselines are evaluated on test: base, sft-flan, ct-X, ctsft-X-flan, ctsft-X-mt;
  2. the three merges of X are tuned on dev with the paper's grids, and the best of each is
     evaluated on test: WAVG-X (the SFT model's weight), TIES-X (k_sft x k_ct) and TIES-SV-X (the
     slack, at the densities TIES-X chose);
then base and sft-flan are evaluated on the English control (`eng`): does the SFT model know the
tasks at all?

Everything goes through `harness eval`'s and `harness sweep`'s machinery and the results store,
so a rerun evaluates nothing that is stored already and prints the table at once.

The table has the paper's rows (model families across languages) and one column per language
plus their average. A cell is the language's average on test (tasks.averages) with its 95%
interval: +-1.96 standard errors, from lm-eval's per-task standard errors, the tasks taken as
independent. A registry id the registry lacks (the paper registry has no CTSFT checkpoints) is
left out with a note.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from harness.evaluate import add_eval_options
from harness.lm_eval_run import BACKENDS
from harness.paths import add_store_option
from tasks.languages import CONTROL_LANGUAGES, LANGUAGES, TARGET_LANGUAGES

Z_95 = 1.959964  # the normal quantile of a two-sided 95% interval


@dataclass(frozen=True)
class Row:
    """One row of Table 3: a model family, its registry id per language, how a merge is tuned."""
    label: str  # "TIES-X"
    id_pattern: str  # "ties-{lang}-flan"; without {lang}: one model for every language
    grid: str | None = None  # None: evaluated as registered; else the built-in grid it is tuned with

    def model_id(self, lang: str) -> str:
        return self.id_pattern.format(lang=lang)


ROWS = (
    Row("Base", "base"),
    Row("SFT-flan", "sft-flan"),
    Row("CT-X", "ct-{lang}"),
    Row("CTSFT-X-flan", "ctsft-{lang}-flan"),
    Row("CTSFT-X-mt", "ctsft-{lang}-mt"),
    Row("WAVG-X", "wavg-{lang}-flan", grid="weights"),
    Row("TIES-X", "ties-{lang}-flan", grid="densities"),
    Row("TIES-SV-X", "ties-sv-{lang}-flan", grid="slack"),  # at TIES-X's chosen densities
)
CONTROL_ROWS = ("base", "sft-flan")  # evaluated on the control languages


@dataclass(frozen=True)
class Cell:
    """A language average on test and the half width of its 95% interval (None: unknown)."""
    value: float | None
    half_width: float | None = None

    def text(self) -> str:
        if self.value is None:
            return "–"
        interval = f" ± {100 * self.half_width:.1f}" if self.half_width is not None else ""
        return f"{100 * self.value:.1f}{interval}"


# ---- the CLI ------------------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--lang", action="append", choices=list(TARGET_LANGUAGES),
                        help="a target language (repeatable; default: all seven)")
    parser.add_argument("--no-control", action="store_true", help="skip the English control")
    parser.add_argument("--limit", type=int, help="a fixed, seeded sample of N items per task (quick runs, not Table 3)")
    parser.add_argument("--backend", choices=BACKENDS, default="vllm", help="vllm (default) or hf (in-process)")
    add_store_option(parser)
    parser.add_argument("--data-dir", type=Path, help="local task data folder (default: the registry's data_dir)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    add_eval_options(parser)


def run(args) -> int:
    from harness.evaluate import default_data_dir, eval_options
    from harness.evaluation import EvalSettings
    from harness.registry import load_registry

    options = eval_options(args)
    EvalSettings(backend=args.backend, limit=args.limit, **options)  # bad evaluation options fail before anything is built
    registry = load_registry(args.registry)
    langs = list(dict.fromkeys(args.lang or TARGET_LANGUAGES))
    settings = EvalSettings(split="test", limit=args.limit, backend=args.backend, store_url=args.store,
                            data_dir=default_data_dir(args.data_dir, registry), device=args.device, **options)
    table = run_experiment(registry, langs, settings)
    print()
    print(format_table(table, langs, "Table 3 (test split, language averages in %, 95% intervals)"))
    if not args.no_control:
        for lang in CONTROL_LANGUAGES:
            control, columns = run_control(registry, lang, settings)
            print()
            print(format_table(control, columns, f"{LANGUAGES[lang].name} control ({lang}, test split, "
                                                  "main metric per task in %, 95% intervals)"))
    return 0


# ---- running it ---------------------------------------------------------------------------------

def run_experiment(registry, langs: list[str], settings) -> dict[tuple[str, str], Cell]:
    """(row label, lang) -> Cell for every row of ROWS the registry has, after running what is missing."""
    table: dict[tuple[str, str], Cell] = {}
    plain = [row for row in ROWS if row.grid is None]
    for model_id, model_langs in _models_and_languages(registry, plain, langs).items():
        cells = evaluate_languages(registry, model_id, model_langs, settings)
        for row in plain:
            for lang in model_langs:
                if row.model_id(lang) == model_id:
                    table[row.label, lang] = cells[lang]
    for lang in langs:
        for row, cell in tune_merges(registry, lang, settings).items():
            table[row.label, lang] = cell
    return table


def run_control(registry, lang: str, settings) -> tuple[dict[tuple[str, str], Cell], list[str]]:
    """(model id, task column) -> Cell for the control models on one control language, and the
    columns (the families' short labels, in the suite's order)."""
    from tasks import suite

    table: dict[tuple[str, str], Cell] = {}
    for model_id in CONTROL_ROWS:
        if model_id in registry.models:
            report = evaluate_on(registry, model_id, [lang], settings)
            for task, cell in task_cells(report).items():
                table[model_id, suite.FAMILIES[suite.parse_task_name(task)[0]].label] = cell
    columns = list(dict.fromkeys(column for _, column in table))
    return table, columns


def _models_and_languages(registry, rows, langs: list[str]) -> dict[str, list[str]]:
    """Registry id -> the languages it is evaluated on (base on every language: one server, not seven)."""
    plan: dict[str, list[str]] = {}
    for row in rows:
        for lang in langs:
            model_id = row.model_id(lang)
            if model_id in registry.models:
                plan.setdefault(model_id, []).append(lang)
            else:
                print(f"experiment: {row.label} for {lang} left out: the registry has no {model_id!r}")
    return plan


def evaluate_languages(registry, model_id: str, langs: list[str], settings) -> dict[str, Cell]:
    """Evaluate a registry model on the languages' test tasks; a Cell each."""
    return language_cells(evaluate_on(registry, model_id, langs, settings))


def evaluate_on(registry, model_id: str, langs: list[str], settings):
    """The EvalReport of a registry model on the languages' test tasks."""
    from harness.build import materialize
    from harness.evaluate import choose_tasks
    from harness.evaluation import ModelUnderTest, evaluate

    model = ModelUnderTest.from_built(materialize(registry, model_id, device=settings.device, progress=False))
    tasks = choose_tasks(model.langs, langs, None, "test", model.id, settings.data_dir)
    print(f"experiment: {model.id} on {', '.join(langs)} (test)")
    return evaluate(model, tasks, dataclasses.replace(settings, split="test"))


def tune_merges(registry, lang: str, settings) -> dict[Row, Cell]:
    """Sweep each merge row of `lang` on dev, evaluate its best on test (the sweep does, as
    `<id>@best`); TIES-SV at TIES's densities."""
    from harness.grids import Grid, builtin_grid_of
    from harness.trials import run_sweep

    cells: dict[Row, Cell] = {}
    ties_best = None
    for row in (row for row in ROWS if row.grid is not None):
        model_id = row.model_id(lang)
        if model_id not in registry.models:
            print(f"experiment: {row.label} for {lang} left out: the registry has no {model_id!r}")
            continue
        entry = registry.resolve(model_id)
        grid = builtin_grid_of(row.grid, registry, entry)
        if row.grid == "slack" and ties_best is not None:
            fixed = {path: [value] for path, value in ties_best.point.items()}
            grid = Grid("slack-at-ties-densities", {**fixed, **grid.axes})
        print(f"experiment: tuning {model_id} on dev ({grid.name}, {len(grid.points())} points)")
        result = run_sweep(registry, model_id, grid, dataclasses.replace(settings, split="dev"),
                           evaluate_test=True)
        if row.grid == "densities":
            ties_best = result.best
        cells[row] = language_cells(result.test_report)[lang]
    return cells


def task_cells(report) -> dict[str, Cell]:
    """Per task of the report: its main metric and the 95% half width (None where lm-eval gave no stderr)."""
    from harness.evaluation import stored_rows
    from harness.store import main_metric_rows
    from tasks import suite

    main = main_metric_rows(stored_rows(report), suite.main_metric)
    cells = {}
    for task, value, stderr in zip(main["task"], main["value"], main["stderr"]):
        known = stderr is not None and stderr == stderr  # NaN: unknown
        cells[task] = Cell(float(value), Z_95 * float(stderr) if known else None)
    return {task: cells.get(task, Cell(None)) for task in report.tasks}


def language_cells(report) -> dict[str, Cell]:
    """Per language of the report: the average of its tasks (tasks.averages) and the 95% half
    width of that average (the tasks' intervals combined as independent)."""
    from tasks import suite
    from tasks.averages import language_average, language_tasks

    cells = task_cells(report)
    averages = {}
    for lang in dict.fromkeys(suite.lang_of(task) for task in cells):
        tasks = language_tasks(lang, report.settings.split, cells)  # all of them: a partial run has no average
        average = language_average(tasks, {task: cell.value for task, cell in cells.items()})
        spread = average_cell([cells.get(task, Cell(None)) for task in tasks]).half_width
        averages[lang] = Cell(average.value, spread if average.value is not None else None)
    return averages


# ---- the table ----------------------------------------------------------------------------------

def average_cell(cells: list[Cell]) -> Cell:
    """The plain mean of the languages' averages; its interval from theirs (languages independent)."""
    if not cells or any(c.value is None for c in cells):
        return Cell(None)
    value = sum(c.value for c in cells) / len(cells)
    if any(c.half_width is None for c in cells):
        return Cell(value)
    return Cell(value, math.sqrt(sum(c.half_width ** 2 for c in cells)) / len(cells))


def format_table(table: dict[tuple[str, str], Cell], langs: list[str], title: str, average: bool = True) -> str:
    """A Markdown table: one row per row label present, one column per language (and the average)."""
    labels = list(dict.fromkeys(label for label, _ in table))
    header = ["model", *langs] + (["average"] if average else [])
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        cells = [table.get((label, lang), Cell(None)) for lang in langs]
        shown = cells + ([average_cell(cells)] if average else [])
        lines.append(f"| {label} | " + " | ".join(cell.text() for cell in shown) + " |")
    return "\n".join(lines)
