"""`harness report`: every table and figure of a results store as files for a paper, in one go.

    harness report --out paper/                      # the default store, every split it holds
    harness report --out paper/ --store sqlite:////data/results.db --split test

Writes, for each split, the leaderboard's tables (Table 3 by recipe family, the per-model overview,
one table per language, Table 5 per set of languages a multi-language merge spans; each with its
statistical tie groups, leaderboard.ties) to OUT/tables/<name>.md, .tex and .csv, and its figures
(leaderboard.figures: each language's average per model, each language's checkpoint curves,
each sweep's chart, the conflict analysis
of Figures 3-4, the language vectors' similarity heatmap; each when the store holds its data) to
OUT/figures/<name>.svg, .png and .csv (the data drawn). Everything
is written into a temporary folder renamed to OUT when complete (merges.io.atomic_folder): OUT must
not exist, and a failed report leaves nothing behind. What the report holds is listed once, in
TABLE_SETS and FIGURE_SETS below.
"""

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness import HarnessError
from harness.paths import add_store_option, default_store_url
from tasks.suite import SPLITS

if TYPE_CHECKING:  # heavy: imported inside the functions (harness --help stays fast)
    import pandas as pd

    from leaderboard.data import StoreSnapshot
    from leaderboard.figures import Figure
    from leaderboard.tables import ScoreTable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="folder to create (must not exist)")
    add_store_option(parser)
    parser.add_argument("--split", choices=SPLITS, default=None, help="only this split (default: every split the store holds)")


def run(args: argparse.Namespace) -> int:
    from harness.leaderboard import absolute_sqlite_url
    from leaderboard import data
    from merges.io import atomic_folder

    snapshot = data.read_store(absolute_sqlite_url(args.store or default_store_url()))
    report = report_data(snapshot, args.split)
    with atomic_folder(args.out, what="the report") as folder:
        written = write_report(report, folder)
    print(f"Report: {written} files in {args.out} ({', '.join(s.split for s in report.splits)} split)")
    return 0


# ---------------------------------------------------------------- what the report holds


@dataclass
class SplitData:
    split: str
    scores: "pd.DataFrame"  # main-metric rows of the split (leaderboard.tables.main_scores)
    kinds: "pd.DataFrame"  # per model id: kind, label, family (leaderboard.tables.model_kinds)

    def with_ties(self, table: "ScoreTable") -> "ScoreTable":
        """The table with its statistical tie groups, tested on the split's sample logs."""
        from leaderboard import samples, ties

        return ties.with_tie_groups(table, ties.sample_loader(self.scores, samples.logged_item_scores))[0]


@dataclass
class ReportData:
    snapshot: "StoreSnapshot"
    splits: list[SplitData]


def report_data(snapshot: "StoreSnapshot", split: str | None) -> ReportData:
    """The main-metric scores and model kinds of each split to report; an error if there are none."""
    from leaderboard import tables
    from leaderboard.data import EVAL_HINT, main_metric_lookup

    present = [s for s in SPLITS if s in set(snapshot.results["split"])]
    if not present:
        raise HarnessError(f"the results store at {snapshot.url} holds no results yet: {EVAL_HINT}")
    if split is not None and split not in present:
        raise HarnessError(f"the results store at {snapshot.url} holds no {split} results (it has: {', '.join(present)})")
    splits = []
    for name in [split] if split else present:
        scores = tables.main_scores(snapshot.results, name, main_metric_lookup())
        if not scores.empty:
            splits.append(SplitData(name, scores, tables.model_kinds(scores, snapshot.models)))
    return ReportData(snapshot, splits)


def overview_tables(report: ReportData) -> list["ScoreTable"]:
    """Table 3 by recipe family and the per-model overview, per split."""
    from leaderboard import tables

    return [split.with_ties(builder(split.scores, split.kinds)) for split in report.splits
            for builder in (tables.family_table, tables.overview_table)]


def language_tables(report: ReportData) -> list["ScoreTable"]:
    """Tables 7-13: each language's tasks and average, per split."""
    from leaderboard import tables
    from tasks.languages import LANGUAGES

    return [split.with_ties(tables.language_table(split.scores, lang, split.kinds)) for split in report.splits
            for lang in LANGUAGES if lang in set(split.scores["lang"])]


def language_figures(report: ReportData) -> list["Figure"]:
    """The Per language view's chart: each language's average per model (with the chance level)."""
    from leaderboard import figures, tables
    from tasks.languages import LANGUAGES

    found = []
    for split in report.splits:
        for lang in (code for code in LANGUAGES if code in set(split.scores["lang"])):
            frame = tables.language_table(split.scores, lang, split.kinds).frame
            averages = frame.get(tables.AVERAGE)
            if averages is None or averages.dropna().empty:
                continue
            averages = averages.dropna()
            found.append(figures.language_average_bars(
                averages, frame.loc[averages.index, tables.KIND], tables.chance_average(split.scores, lang),
                LANGUAGES[lang].name, split.split, f"{lang}-average-{split.split}"))
    return found


def curve_figures(report: ReportData) -> list["Figure"]:
    """The Checkpoint curves view's chart: per split and language, each series against the CT tokens seen."""
    from leaderboard import curves, figures
    from tasks.languages import LANGUAGES

    found = []
    for split in report.splits:
        points = curves.curve_points(split.scores, split.kinds, report.snapshot.models)
        for lang in dict.fromkeys(points["lang"]):
            name = LANGUAGES[lang].name if lang in LANGUAGES else lang
            found.append(figures.checkpoint_curve(points[points["lang"] == lang], name, split.split,
                                                  f"{lang}-curve-{split.split}"))
    return found


def sweep_figures(report: ReportData) -> list["Figure"]:
    """The Sweeps view's chart of each stored sweep (they select on dev, whatever split is reported)."""
    from leaderboard import figures, sweeps

    found = []
    for sweep in sweeps.sweep_ids(report.snapshot.sweeps):
        grid = sweeps.sweep_grid(report.snapshot.sweeps, sweep)
        if sweeps.is_search(sweep):
            found.append(figures.search_progress_chart(grid, figures.sweep_figure_name(sweep)))
        elif len(grid.axes) in (1, 2):
            found.append(figures.sweep_grid_chart(grid, figures.sweep_figure_name(sweep)))
    return found


def multilang_tables(report: ReportData) -> list["ScoreTable"]:
    """Table 5: per split, each set of languages that a multi-language merge spans."""
    from leaderboard import multilang

    found = []
    for split in report.splits:
        merges = multilang.multi_language_merges(split.scores, report.snapshot.models)
        found += [split.with_ties(multilang.multilang_table(split.scores, split.kinds, langs, merges))
                  for langs in multilang.language_sets(merges)]
    return found


def conflict_figures(report: ReportData) -> list["Figure"]:
    """The Sweeps view's conflict analysis (Figures 3-4): over every merge, the SFT model's discarded
    share per language against density (the CT models at the SFT model's density, the paper's one
    k) and TIES-SV's slack; per sweep, its trials by tensor type and by layer (or its slack)."""
    from leaderboard import conflicts, figures, sweeps

    points = conflicts.merge_points(report.snapshot.models)
    if points.empty:
        return []
    found = []
    curve = conflicts.density_curve(points)
    if not curve.empty:
        found.append(figures.conflict_density_chart(curve, ct_density=None))
    slack = conflicts.slack_curve(points)
    if not slack.empty:
        found.append(figures.conflict_slack_chart(slack))
    for sweep in sweeps.sweep_ids(report.snapshot.sweeps):
        trials = sweeps.sweep_grid(report.snapshot.sweeps, sweep).trials["trial model"]
        ours = points[points["model"].isin(trials)]
        if ours["slack"].nunique() > 1:  # a slack sweep
            found.append(figures.conflict_slack_chart(conflicts.slack_curve(ours), sweep))
            continue
        shown = conflicts.at_ct_density(ours, None)
        if not shown.empty:
            found += [figures.sweep_conflict_chart(shown, sweep, by) for by in ("type", "layer")]
    return found


def similarity_figures(report: ReportData) -> list["Figure"]:
    """The Language vectors page's heatmap, one per base model with stored similarities."""
    from leaderboard import figures, similarity

    rows = report.snapshot.similarities
    return [figures.similarity_heatmap(similarity.similarity_matrix(rows, base)) for base in similarity.bases(rows)]


# Everything the report writes: each entry maps the store's data to a list of tables or figures.
TABLE_SETS = (overview_tables, language_tables, multilang_tables)
FIGURE_SETS = (language_figures, curve_figures, sweep_figures, conflict_figures, similarity_figures)


# ---------------------------------------------------------------- writing


def write_report(report: ReportData, folder: Path) -> int:
    """Write every table and figure into `folder`; returns the number of files."""
    from leaderboard import export, figures

    (folder / "tables").mkdir()
    (folder / "figures").mkdir()
    written = 0
    for table in (table for tables_of in TABLE_SETS for table in tables_of(report)):
        if table.frame.empty:
            continue
        for suffix, text in ((".md", export.to_markdown(table)), (".tex", export.to_latex(table)), (".csv", export.to_csv(table))):
            (folder / "tables" / f"{table.name}{suffix}").write_text(text, encoding="utf-8")
            written += 1
    for figure in (figure for figures_of in FIGURE_SETS for figure in figures_of(report)):
        (folder / "figures" / f"{figure.name}.svg").write_text(figures.to_svg(figure), encoding="utf-8")
        (folder / "figures" / f"{figure.name}.png").write_bytes(figures.to_png(figure))
        (folder / "figures" / f"{figure.name}.csv").write_text(figures.to_csv(figure), encoding="utf-8")
        written += 3
    return written

