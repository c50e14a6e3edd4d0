"""The leaderboard's pages. Each view is a function of the shared `Context`; data shaping lives in
tables.py, ties.py, figures.py, recipes.py, conflicts.py, multilang.py, curves.py, samples.py, stats.py
and export.py, so what is drawn here stays thin.

Adding a page = one function here and one entry in VIEWS (or in SNAPSHOT_VIEWS for a page that
does not depend on the split, like the sweeps).
"""

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import streamlit as st

from harness import HarnessError
from harness.kinds import KINDS
from harness.store import SweepId, metric_label
from leaderboard import (conflicts, curves, data, export, figures, maintenance, multilang, recipes, samples, similarity,
                         stats, sweeps, tables, ties)
from tasks import averages
from tasks.languages import LANGUAGES, TARGET_LANGUAGES
from tasks.suite import SPLITS

# The split selector's options: test, the split the paper reports, first and the default.
SPLIT_CHOICES = tuple(sorted(SPLITS, key=lambda split: split != "test"))
ROWS_FAMILIES, ROWS_MODELS = "Recipe families (Table 3)", "Models"


@dataclass
class Context:
    snapshot: data.StoreSnapshot
    split: str
    scores: pd.DataFrame  # main-metric rows of the split (tables.main_scores)
    kinds: pd.DataFrame  # per model id: kind, label (tables.model_kinds)
    shown_kinds: list[str]
    hide_trials: bool  # sweep trials left out of `scores`


# ---------------------------------------------------------------- loading (cached)

# What is derived from the store is cached for this long (and until "Reload results"): a page load
# within it draws from memory (bench/leaderboard_bench.py: 200 models), a later one reads the store again.
SNAPSHOT_TTL_S = 15


@st.cache_data(ttl=SNAPSHOT_TTL_S, show_spinner=False)
def _snapshot(url: str) -> data.StoreSnapshot:
    return data.read_store(url)


@st.cache_data(ttl=SNAPSHOT_TTL_S, show_spinner=False)
def _split_scores(url: str, split: str, hide_trials: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The split's main-metric rows (tables.main_scores; sweep trials left out if asked) and their models' kinds."""
    snapshot = _snapshot(url)
    scores = tables.main_scores(snapshot.results, split, data.main_metric_lookup())
    if hide_trials:
        scores = scores[~scores["model"].str.contains(tables.SWEEP_TRIAL_MARK, regex=False)]
    return scores, tables.model_kinds(scores, snapshot.models)


@st.cache_data(ttl=SNAPSHOT_TTL_S, show_spinner=False)
def _overview_table(url: str, split: str, hide_trials: bool, rows: str, shown_kinds: tuple[str, ...]) -> tables.ScoreTable:
    scores, kinds = _split_scores(url, split, hide_trials)
    build = tables.overview_table if rows == ROWS_MODELS else tables.family_table
    return build(scores, kinds, shown_kinds)


@st.cache_data(ttl=SNAPSHOT_TTL_S, show_spinner=False)
def _merge_points(url: str) -> pd.DataFrame:
    """The SFT model's conflict numbers of every merge in the store (conflicts.merge_points)."""
    return conflicts.merge_points(_snapshot(url).models)


@st.cache_data(max_entries=64, show_spinner=False)
def _samples(path: str, mtime: float) -> list[dict]:  # mtime: a rewritten file is read again
    return samples.read_samples(Path(path))


def _samples_of(run_dir: str | None, task: str) -> list[dict] | None:
    """The task's logged samples, whole (the sample browser); None (with a warning on the page for a
    damaged log) when there are none."""
    path = samples.find_samples_file(run_dir, task)
    if path is None:
        return None
    try:
        return _samples(str(path), path.stat().st_mtime)
    except HarnessError as err:
        st.warning(str(err))
        return None


def _item_scores_of(run_dir: str | None, task: str, metric: str, filter_name: str) -> pd.Series | None:
    """One metric's per-item scores in the task's sample log (samples.logged_item_scores, cached per
    file version); None (with a warning on the page for a damaged log) when there are none."""
    try:
        return samples.logged_item_scores(run_dir, task, metric, filter_name)
    except HarnessError as err:
        st.warning(str(err))
        return None


# ---------------------------------------------------------------- the page


def main() -> None:
    st.title("merge-harness leaderboard")
    url = data.store_url()
    # The sidebar first: the browser draws it while the store is read (when the cached snapshot expired).
    with st.sidebar:
        view = st.radio("View", [*VIEWS, *SNAPSHOT_VIEWS], key="view")
        split = st.selectbox("Split", SPLIT_CHOICES, index=0, key="split", help="the paper reports test")
        if st.button("Reload results"):
            st.cache_data.clear()  # the snapshot and everything derived from it
            st.rerun()
        st.caption(f"Store: `{url}` (read-only)")
    try:
        snapshot = _snapshot(url)
    except HarnessError as err:
        st.error(str(err))
        return
    if view in SNAPSHOT_VIEWS:
        SNAPSHOT_VIEWS[view](snapshot)
        return
    if snapshot.results.empty:
        st.info(f"The results store at `{url}` holds no results yet: {data.EVAL_HINT}.")
        return
    context = _context(snapshot, split)
    if context is not None:
        VIEWS[view](context)


def _context(snapshot: data.StoreSnapshot, split: str) -> Context | None:
    metric_of = data.main_metric_lookup()
    scores, _ = _split_scores(snapshot.url, split, hide_trials=False)
    unknown = sorted(t for t in snapshot.results.loc[snapshot.results["split"] == split, "task"].unique() if metric_of(t) is None)
    if unknown:
        st.warning(f"Not shown, no main metric known for: {', '.join(unknown)}")
    if scores.empty:
        others = sorted(set(snapshot.results["split"]) - {split})
        hint = f"; results exist for: {', '.join(others)} (choose it under Split)" if others else ""
        st.info(f"No results on the {split} split yet{hint}.")
        return None
    with st.sidebar:
        hide_trials = st.checkbox("Hide sweep trials", key="hide-trials",
                                  help=f"models whose id holds '{tables.SWEEP_TRIAL_MARK}' (a sweep's grid points and its @best; "
                                       "also checkpoints, drawn on the Checkpoint curves page)")
    scores, kinds = _split_scores(snapshot.url, split, hide_trials)
    # The same options on every split (every kind the store knows), so a choice survives a split change.
    known = set(snapshot.models["kind"]) | set(kinds["kind"])
    options = [k for k in KINDS if k in known] + sorted(known - set(KINDS))
    with st.sidebar:
        shown = st.multiselect(
            "Kinds", options, default=options, key="kinds", format_func=lambda k: tables.KIND_LABELS.get(k, k)
        )
    return Context(snapshot=snapshot, split=split, scores=scores, kinds=kinds, shown_kinds=shown, hide_trials=hide_trials)


# ---------------------------------------------------------------- views


def overview(ctx: Context) -> None:
    st.header(f"Overview ({ctx.split})")
    rows = st.radio("Rows", [ROWS_FAMILIES, ROWS_MODELS], key="overview-rows", horizontal=True)
    table = _overview_table(ctx.snapshot.url, ctx.split, ctx.hide_trials, rows, tuple(ctx.shown_kinds))
    if rows == ROWS_FAMILIES:
        st.caption("A family's language cell is its model for that language (TIES-X's Uyghur cell: ties-uig-flan); "
                   "sweep trials and multi-language merges are in the Models table only.")
    table = _score_table(ctx, table, FAMILY_TIE_BASIS if rows == ROWS_FAMILIES else MODEL_TIE_BASIS)
    if rows == ROWS_FAMILIES:
        _normalised(table)
    st.caption(
        "n = items scored (⚠ limit N: a run on at most N items per task; listed last and never bold or underlined, "
        "as it is not comparable with the full test set). Each language column: the unweighted mean of the main metric (accuracy, or exact match for math) "
        "over the language's default-suite tasks that any model has on this split, missing where a model "
        "lacks one of them. Average = mean over the target languages shown (not the English control after "
        "it), only where a model has all of them. – = not evaluated (or some of the language's tasks not "
        "evaluated)."
    )
    _partial_note(ctx.scores)
    _downloads(table)


def _normalised(table: tables.ScoreTable) -> None:
    """Each merge family against its ingredients (the paper's question: does the merge beat both?)."""
    normalised = tables.normalised_scores(table.scores, table.kind_codes)
    if normalised.gain.empty:
        return
    with _details("Normalised scores: each merge against its ingredients", key="normalised") as is_open:
        if not is_open:
            return
        st.markdown("**Gain** (points): the merge's score minus the better of CT-X and sft-flan in that language.")
        _plain_table(normalised.gain)
        st.markdown("**Gap closed** (%): that gain as a share of the distance from the better ingredient to "
                    "the upper bound CTSFT-X-mt (task data in the language); 100 = as good as the upper bound. "
                    "Missing where an ingredient is not evaluated or the upper bound is not above it.")
        _plain_table(normalised.gap_closed)


def _partial_note(scores: pd.DataFrame) -> None:
    """Say which columns average fewer tasks than `harness eval` would (no model has the others)."""
    partial = tables.partial_averages(scores)
    if partial:
        names = "; ".join(f"{LANGUAGES[lang].name} lacks {', '.join(tasks)}" for lang, tasks in partial.items())
        st.warning(f"Partial averages, not comparable with full ones ({averages.RULE}): no model here has "
                   f"every default-suite task of these languages, so their columns average the tasks present: {names}.")


def per_language(ctx: Context) -> None:
    codes = [c for c in LANGUAGES if c in set(ctx.scores["lang"])]
    lang = st.selectbox("Language", codes, key="language", format_func=lambda c: LANGUAGES[c].name)
    st.header(f"{LANGUAGES[lang].name} ({ctx.split})")
    table = _score_table(ctx, tables.language_table(ctx.scores, lang, ctx.kinds, ctx.shown_kinds), MODEL_TIE_BASIS)
    _partial_note(ctx.scores[ctx.scores["lang"] == lang])
    _downloads(table)
    # No Average column where the store holds none of the language's default-suite tasks.
    averages = table.frame.get(tables.AVERAGE, pd.Series(dtype=float)).dropna()
    if not averages.empty:
        st.subheader(f"{LANGUAGES[lang].name} average by model")
        _figure(figures.language_average_bars(averages, table.frame.loc[averages.index, tables.KIND],
                                              tables.chance_average(ctx.scores, lang), LANGUAGES[lang].name,
                                              ctx.split, f"{lang}-average-{ctx.split}"))


def model_page(ctx: Context) -> None:
    model = st.selectbox("Model", sorted(set(ctx.scores["model"])), key="model")
    record = _model_record(ctx, model)
    st.header(model)
    langs = record.get("langs") or ""
    st.markdown(
        f"**Kind:** {ctx.kinds.at[model, 'label']} · **Languages:** {langs or '–'} · "
        f"**Build hash:** `{str(record.get('model_hash', '?'))[:12]}`"
    )
    _recipe_section(record)
    _conflict_section(record)
    st.subheader(f"Scores per task ({ctx.split})")
    _plain_table(tables.task_scores_table(ctx.scores, model), hide_index=True)
    _sample_browser(ctx, model)


def compare(ctx: Context) -> None:
    models = sorted(set(ctx.scores["model"]))
    if len(models) < 2:
        st.info("Comparing needs results of two models on this split.")
        return
    left, right = st.columns(2)
    model_a = left.selectbox("Model A", models, index=0, key="compare-a")
    model_b = right.selectbox("Model B", models, index=1, key="compare-b")
    st.header(f"{model_b} − {model_a} ({ctx.split})")
    rows = [_compare_task(ctx, model_a, model_b, task) for task in _shared_tasks(ctx, model_a, model_b)]
    if not rows:
        st.info(f"{model_a} and {model_b} share no task on the {ctx.split} split.")
        return
    _plain_table(_with_language_rows(pd.DataFrame(rows)).set_index("Task"))
    st.caption(
        f"A, B and Δ = B − A in points, all on the documents both models answered (from the per-sample logs); "
        "a language row is the mean over its shared tasks, Average the mean of the language rows (no CI). "
        f"95% CI: paired bootstrap over those documents ({stats.DEFAULT_RESAMPLES} resamples, seed "
        f"{stats.DEFAULT_SEED}). A CI that excludes 0 marks a real difference. Without sample logs "
        "the stored scores are compared and there is no CI."
    )


def checkpoint_curves(ctx: Context) -> None:
    """The paper's Figure 2: per language, each series' language average against the CT tokens seen."""
    st.header(f"Checkpoint curves ({ctx.split})")
    scores, kinds = _split_scores(ctx.snapshot.url, ctx.split, hide_trials=False)  # checkpoints hold '@' too
    points = curves.curve_points(scores, kinds, ctx.snapshot.models)
    points = points[points["model"].map(kinds["kind"]).isin(ctx.shown_kinds)]
    if points.empty:
        st.info(f"No checkpoint series has results on the {ctx.split} split: evaluate one, e.g. "
                f"`harness curve --model ties-uig --split {ctx.split}`.")
        return
    for lang in dict.fromkeys(points["lang"]):
        shown = points[points["lang"] == lang]
        st.subheader(LANGUAGES[lang].name if lang in LANGUAGES else lang)
        _figure(figures.checkpoint_curve(shown, LANGUAGES[lang].name if lang in LANGUAGES else lang, ctx.split,
                                         f"{lang}-curve-{ctx.split}"))
        _plain_table(curves.curve_table(shown))


def sweeps_page(snapshot: data.StoreSnapshot) -> None:
    st.header("Sweeps (dev)")
    ids = sweeps.sweep_ids(snapshot.sweeps)
    if not ids:
        st.info("No sweeps stored yet: run one, e.g. `harness sweep --model ties-uig --grid densities`.")
        return
    sweep = st.selectbox("Sweep", ids, key="sweep", format_func=lambda s: s.label)
    grid = sweeps.sweep_grid(snapshot.sweeps, sweep)
    chosen = grid.trials[grid.trials[sweeps.CHOSEN]]
    if not chosen.empty:
        best = chosen.iloc[0]
        point = ", ".join(f"{sweeps.axis_label(a)} = {best[a]}" for a in grid.axes)
        st.markdown(f"**Chosen:** {point} (dev {best[sweeps.SCORE]:.1f}); on test as `{sweep.model}@best`")
    if sweeps.selects_on_test(sweep):
        st.warning("This sweep chose its point on the TEST split (`--select-on test`): its best score is "
                   "not an honest estimate of test performance.")
    if sweeps.is_search(sweep):
        _figure(figures.search_progress_chart(grid, figures.sweep_figure_name(sweep)))
    elif len(grid.axes) in (1, 2):
        _figure(figures.sweep_grid_chart(grid, figures.sweep_figure_name(sweep)))
    _plain_table(grid.trials.rename(columns={a: sweeps.axis_label(a) for a in grid.axes}), hide_index=True)
    st.caption("Dev score: mean over the model's languages of each language's task average (main metric). "
               "★ marks the chosen point: the best dev score, the first in grid order on a tie.")
    points = _merge_points(snapshot.url)
    _sweep_conflicts(points[points["model"].isin(grid.trials["trial model"])], sweep)
    _conflict_analysis(points)


def multi_language(ctx: Context) -> None:
    found = multilang.multi_language_merges(ctx.scores, ctx.snapshot.models)
    if not found:
        st.info(f"No merge over several languages has results on the {ctx.split} split: evaluate one, e.g. "
                "`harness eval --model ties-mvf-uig-flan`.")
        return
    langs = st.selectbox("Languages", multilang.language_sets(found), key="multilang-langs",
                         format_func=multilang.language_names)
    st.header(f"Multi-language merges: {multilang.language_names(langs)} ({ctx.split})")
    table = multilang.multilang_table(ctx.scores, ctx.kinds, langs, found, ctx.shown_kinds)
    table = _score_table(ctx, table, FAMILY_TIE_BASIS)
    _partial_note(ctx.scores[ctx.scores["lang"].isin(langs)])
    st.caption("Rows as in Table 3 (a family's cell is its model for that language), restricted to these languages, "
               "and each merge of one SFT model with the CT models of all of them as a row of its own. Average: the "
               "mean over these languages.")
    _downloads(table)
    for merge in (m for m in found if m.langs == langs):
        st.subheader(f"{merge.model} against the one-language merges")
        _plain_table(multilang.comparison(ctx.scores, merge))
    st.caption("One-language merge: the merge of the same method over a subset of the multi-language merge's "
               "inputs with that one language (as recorded in the registry). Δ = multi − one-language, in points.")


def language_vectors_page(snapshot: data.StoreSnapshot) -> None:
    st.header("Language vectors: cosine similarity")
    bases = similarity.bases(snapshot.similarities)
    if not bases:
        st.info("No similarities stored yet: compute some, e.g. `harness analyze similarity ct-tam ct-tel ct-uig`.")
        return
    base = st.selectbox("Against base", bases, key="vectors-base") if len(bases) > 1 else bases[0]
    matrix = similarity.similarity_matrix(snapshot.similarities, base)
    _figure(figures.similarity_heatmap(matrix))
    st.table(matrix.cosine.style.format(precision=3, na_rep="–"))
    st.download_button("CSV", similarity.to_csv(matrix), f"similarity_{base}.csv", "text/csv", key="vectors-csv")
    st.caption(f"Cosine similarity of the models' language vectors against `{base}` (Dmonte et al., Figure 3): "
               "a LoRA adapter's vector is its B·A·alpha/r over all its modules, a full model's its task vector "
               "(weights minus the base's), flattened over all tensors. The newest value of each pair; – = not "
               f"computed. Last computed {matrix.computed_at:%Y-%m-%d %H:%M} UTC.")


def maintenance_page(snapshot: data.StoreSnapshot) -> None:
    st.header("Maintenance cost (Table 2 of Dmonte et al.)")
    times = snapshot.maintenance
    if times.empty:
        st.info("No maintenance experiment stored yet: run one, e.g. `harness maintain --update uig --factor 2`.")
        return
    experiment = st.selectbox("Experiment", maintenance.experiments(times), key="maintenance-experiment")
    table = maintenance.cost_table(times[times["experiment"] == experiment], _test_averages(snapshot))
    st.table(table.style.format(na_rep="–", precision=1), hide_index=True)
    st.caption("Measured wall times on this machine (training: the optimisation alone). INDV sequential: the "
               "adapters one after another; parallel: at once, the slowest one. Saving: less time than COMB. "
               "Quality: the test average over the target languages, where evaluated (`harness eval --registry "
               "$HARNESS_HOME/maintain/<experiment>/registry.yaml --model <model>` for the updated ones).")


def _test_averages(snapshot: data.StoreSnapshot) -> dict[str, float]:
    """Model id -> its test average over the target languages (only where it has all of them)."""
    scores = tables.main_scores(snapshot.results, "test", data.main_metric_lookup())
    if scores.empty:
        return {}
    averages = tables.language_averages(scores)
    targets = [lang for lang in TARGET_LANGUAGES if lang in averages.columns]
    return averages[targets].mean(axis=1, skipna=False).dropna().to_dict() if targets else {}


VIEWS: dict[str, Callable[[Context], None]] = {
    "Overview": overview,
    "Per language": per_language,
    "Model": model_page,
    "Compare": compare,
    "Multi-language": multi_language,
    "Checkpoint curves": checkpoint_curves,
}
SNAPSHOT_VIEWS: dict[str, Callable[[data.StoreSnapshot], None]] = {
    "Sweeps": sweeps_page,
    "Language vectors": language_vectors_page,
    "Maintenance": maintenance_page,
}


# ---------------------------------------------------------------- pieces


MODEL_TIE_BASIS = ("A task column is tested on the task's items; a language column on the items of the tasks it "
                   "averages, each task weighted as in the average; Average on the items of all its languages' tasks.")
FAMILY_TIE_BASIS = ("A family's language cell is tested on its member model's items for that language (its tasks "
                    "weighted as in the language average); a family's Average pools its members' items across the "
                    "languages, each language weighted equally.")


def _score_table(ctx: Context, table: tables.ScoreTable, tie_basis: str) -> tables.ScoreTable:
    """Draw a score table with its statistical tie groups (†) and, on demand, intervals; returns the
    table with its tie groups, for the downloads."""
    if table.frame.empty:
        st.info("No model of the chosen kinds has results here.")
        return table
    ties_col, intervals_col = st.columns(2)
    tests = None
    if ties_col.checkbox("Mark statistical ties with the best (†)", value=True, key=f"ties-{table.name}"):
        with st.spinner("Testing each model against its column's best (paired bootstrap)…"):
            ties_frame, tests = _tie_groups(_fingerprint(ctx.scores, table), table, ctx.scores)
        table = dataclasses.replace(table, ties=ties_frame)
    intervals = intervals_col.checkbox("Show 95% intervals", key=f"intervals-{table.name}",
                                       help=f"each cell ± {tables.INTERVAL_Z} × its stderr")
    st.table(tables.styled(table, intervals=intervals))
    if tests is not None:
        _tie_tests(tests, tie_basis, table.name)
    return table


@st.cache_data(max_entries=32, show_spinner=False)
def _tie_groups(key: str, _table: tables.ScoreTable, _scores: pd.DataFrame) -> tuple[pd.DataFrame, list[ties.TieTest]]:
    """The table's tie groups and tests, computed once per table contents (`key`): reading the
    sample logs and bootstrapping every column takes seconds on a store with many logged models."""
    tied, tests = ties.with_tie_groups(_table, ties.sample_loader(_scores, _item_scores_of))
    return tied.ties, tests


def _fingerprint(scores: pd.DataFrame, table: tables.ScoreTable) -> str:
    """What the tie groups depend on: the table's rows, columns and values, and the scored rows' logs."""
    rows = pd.util.hash_pandas_object(scores[["model", "task", "value", "n", "run_dir"]].astype(str), index=False)
    cells = pd.util.hash_pandas_object(table.scores.astype(str))
    return f"{table.name}:{int(rows.sum())}:{int(cells.sum())}:{','.join(map(str, table.frame.index))}"


def _tie_tests(tests: list[ties.TieTest], tie_basis: str, table_name: str) -> None:
    st.caption(f"{tables.TIE_MARK} (shaded) = not significantly different from the column's best (bold): {ties.RULE}. "
               f"{tie_basis} Cells without sample logs on either side are not tested and carry no mark.")
    with _details("Tie tests: each model against its column's best", key=f"tie-tests-{table_name}") as is_open:
        if not is_open:
            return
        if not tests:
            st.info("Nothing to test: each column has one ranked model, or no sample logs.")
            return
        st.caption("Δ = model − best in points on the shared items, with its bootstrap interval at the "
                   "confidence Holm's procedure tested it at.")
        _plain_table(ties.tests_frame(tests), hide_index=True)


@contextmanager
def _details(label: str, key: str) -> Iterator[bool]:
    """An expander whose content is computed and sent only while it is open: closed, it costs the page
    nothing (every cell of an st.table is rendered as Markdown in the browser: the tie tests' table was
    550 of the overview's 783 Markdown blocks and most of a second of its first paint, bench/README.md)."""
    with st.expander(label, key=key, on_change="rerun") as box:
        yield bool(box.open)


def _plain_table(frame: pd.DataFrame, hide_index: bool = False) -> None:
    """A static table with two decimals and a dash for missing values."""
    st.table(frame.style.format(precision=2, na_rep="–"), hide_index=hide_index)


def _downloads(table: tables.ScoreTable) -> None:
    if table.frame.empty:
        return
    stem = f"leaderboard_{table.name}"
    csv_col, md_col, tex_col = st.columns(3)
    # Each file is written when its button is clicked, not on every page load.
    csv_col.download_button("CSV", partial(export.to_csv, table), f"{stem}.csv", "text/csv", key=f"{stem}-csv")
    md_col.download_button("Markdown", partial(export.to_markdown, table), f"{stem}.md", "text/markdown", key=f"{stem}-md")
    tex_col.download_button("LaTeX", partial(export.to_latex, table), f"{stem}.tex", "text/x-tex", key=f"{stem}-tex")


def _figure(figure: figures.Figure) -> None:
    """Draw a chart with its caption and downloads: PNG and SVG (rendered when clicked) and its data as CSV."""
    st.altair_chart(figure.chart, width="stretch")
    if figure.caption:
        st.caption(figure.caption)
    png_col, svg_col, csv_col = st.columns(3)
    stem = f"leaderboard_{figure.name}"
    png_col.download_button("PNG", lambda: figures.to_png(figure), f"{stem}.png", "image/png", key=f"{stem}-png")
    svg_col.download_button("SVG", lambda: figures.to_svg(figure), f"{stem}.svg", "image/svg+xml", key=f"{stem}-svg")
    csv_col.download_button("Chart data (CSV)", figures.to_csv(figure), f"{stem}.csv", "text/csv", key=f"{stem}-data")


def _figures_side_by_side(*drawn: figures.Figure) -> None:
    for column, figure in zip(st.columns(len(drawn)), drawn):
        with column:
            _figure(figure)


CT_SAME = "same as the SFT model's"


def _sweep_conflicts(points: pd.DataFrame, sweep: SweepId) -> None:
    """The selected sweep's trials: what sign election took from the SFT model, by tensor type and layer
    against its density (a slack sweep: the share the slack kept back against the slack)."""
    if points.empty:
        return
    st.subheader("Conflicts in this sweep (SFT model)")
    if points["slack"].nunique() > 1:
        _figure(figures.conflict_slack_chart(conflicts.slack_curve(points), sweep))
        return
    ct_density = _ct_density_choice(points, key="sweep-ct-density")
    shown = conflicts.at_ct_density(points, ct_density)
    if shown.empty:
        st.info("No trial of this sweep has that CT density.")
        return
    _figures_side_by_side(*(figures.sweep_conflict_chart(shown, sweep, by) for by in ("type", "layer")))


def _conflict_analysis(points: pd.DataFrame) -> None:
    """Figures 3-4 over every merge in the store: the discarded share per language against density,
    and TIES-SV's slack; the numbers as CSV."""
    if points.empty:
        return
    st.subheader("Conflict analysis: every TIES merge in the store (Figures 3-4)")
    ties = points[points["method"] == "ties"]
    if not ties.empty:
        ct_density = _ct_density_choice(ties, key="all-ct-density")
        curve = conflicts.density_curve(points, ct_density)
        if curve.empty:
            st.info("No TIES merge has that CT density.")
        else:
            _figure(figures.conflict_density_chart(curve, ct_density))
    slack = conflicts.slack_curve(points)
    if not slack.empty:
        _figure(figures.conflict_slack_chart(slack))
    st.download_button("Conflict numbers (CSV)", partial(points.to_csv, index=False), "conflicts.csv", "text/csv",
                       key="conflicts-all-csv")
    st.caption("The CSV: one row per merge and part (all, each tensor type, each layer) of its SFT model, "
               "with its densities and slack.")


def _ct_density_choice(points: pd.DataFrame, key: str) -> float | None:
    """The CT models' density to draw at (None: equal to the SFT model's, one density for all)."""
    options = [None, *sorted(points[conflicts.CT_DENSITY].dropna().unique())]
    return st.selectbox("CT models' density", options, key=key,
                        format_func=lambda d: CT_SAME if d is None else f"{d:g}")


def _model_record(ctx: Context, model: str) -> dict:
    """The models-table row of the build whose results are shown (empty if it was never recorded)."""
    model_hash = ctx.scores.loc[ctx.scores["model"] == model, "model_hash"].iloc[0]
    rows = ctx.snapshot.models[ctx.snapshot.models["model_hash"] == model_hash]
    return rows.iloc[-1].to_dict() if not rows.empty else {"model_hash": model_hash}


def _recipe_section(record: dict) -> None:
    summary = recipes.recipe_summary(record.get("recipe_json"))
    if summary is None:
        return
    st.subheader("Recipe")
    base = f" over `{summary.base_model}`" if summary.base_model else ""
    params = ", ".join(f"{k} = {v}" for k, v in summary.parameters.items()) or "none"
    st.markdown(f"**Method:** {summary.method}{base} · **Parameters:** {params}")
    _plain_table(summary.inputs, hide_index=True)


def _conflict_section(record: dict) -> None:
    totals = recipes.conflict_totals(record.get("stats_json"))
    if totals is None:
        return
    st.subheader("Conflict statistics")
    _plain_table(totals, hide_index=True)
    parts = conflicts.breakdown(json.loads(record["stats_json"]))
    _figures_side_by_side(*(figures.merge_conflict_chart(parts, record["model"], by) for by in ("type", "layer")))
    st.caption("Each input model's entries discarded by sign election, as a share of its parameters, per tensor "
               "type (attention, MLP, embeddings: embed_tokens and lm_head, counting shared vocabulary rows only; "
               "other: norms) and per layer. The CSV adds the share of the entries trimming kept and, for TIES-SV, "
               "the share the slack kept back.")
    st.download_button("Conflict statistics (CSV)", partial(parts.to_csv, index=False), f"conflicts_{record['model']}.csv",
                       "text/csv", key="conflicts-csv")
    with _details("Per tensor", key="per-tensor") as is_open:
        if is_open:
            st.dataframe(recipes.conflict_by_tensor(record.get("stats_json")), hide_index=True)


def _sample_browser(ctx: Context, model: str) -> None:
    st.subheader("Samples")
    rows = ctx.scores[ctx.scores["model"] == model]
    logged = [t for t, d in zip(rows["task"], rows["run_dir"]) if samples.find_samples_file(d, t)]
    if not logged:
        st.info("No per-sample logs for this model's results (lm-eval's samples_<task>_*.jsonl in run_dir).")
        return
    task = st.selectbox("Task", logged, key="samples-task")
    row = rows[rows["task"] == task].iloc[0]
    logged_samples = _samples_of(row["run_dir"], task)
    if logged_samples is None:  # damaged: _samples_of said so
        return
    filters = samples.filters_of(logged_samples)
    filter_name = st.selectbox("Filter", filters, key="samples-filter") if len(filters) > 1 else None
    shown = samples.browser_rows(logged_samples, row["metric"], filter_name or row["filter"], task)
    if st.checkbox("Only wrong answers", key="samples-wrong"):
        shown = shown[~shown["correct"]]
    st.caption(f"{len(shown)} samples; metric: {metric_label(row['metric'], row['filter'])}")
    st.dataframe(shown, hide_index=True)


def _shared_tasks(ctx: Context, model_a: str, model_b: str) -> list[str]:
    tasks_of = ctx.scores.groupby("model")["task"].apply(set)
    return sorted(tasks_of[model_a] & tasks_of[model_b], key=tables.family_rank)


def _compare_task(ctx: Context, model_a: str, model_b: str, task: str) -> dict:
    row_a = ctx.scores[(ctx.scores["model"] == model_a) & (ctx.scores["task"] == task)].iloc[0]
    row_b = ctx.scores[(ctx.scores["model"] == model_b) & (ctx.scores["task"] == task)].iloc[0]
    diff = _bootstrap(row_a["run_dir"], row_b["run_dir"], task, row_a["metric"], row_a["filter"])
    base = {"Task": task, "lang": row_a["lang"]}
    if diff is None:  # no sample logs on one side: the stored scores, without a CI
        return base | {
            "A (%)": round(100 * row_a["value"], 2),
            "B (%)": round(100 * row_b["value"], 2),
            "Δ (points)": round(100 * (row_b["value"] - row_a["value"]), 2),
            "95% CI": "–",
            "n shared": "–",
            "CI excludes 0": "–",
        }
    return base | {
        "A (%)": round(100 * diff.mean_a, 2),
        "B (%)": round(100 * diff.mean_b, 2),
        "Δ (points)": round(100 * diff.diff, 2),
        "95% CI": f"[{100 * diff.low:+.2f}, {100 * diff.high:+.2f}]",
        "n shared": str(diff.n),
        "CI excludes 0": "yes" if diff.significant else "no",
    }


def _with_language_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The per-task rows, then per language the mean of its shared tasks, then the mean of those."""
    numbers = ["A (%)", "B (%)", "Δ (points)"]
    by_lang = rows.groupby("lang", sort=False)[numbers].mean()
    order = [code for code in LANGUAGES if code in by_lang.index] + sorted(set(by_lang.index) - set(LANGUAGES))
    by_lang = by_lang.loc[order]
    names = [f"{LANGUAGES[c].name if c in LANGUAGES else c} (mean of {int((rows['lang'] == c).sum())} tasks)" for c in order]
    summary = pd.concat([by_lang.assign(Task=names),
                         pd.DataFrame([{**by_lang.mean().to_dict(), "Task": f"{tables.AVERAGE} ({len(order)} languages)"}])])
    summary = summary.round(2).assign(**{"95% CI": "–", "n shared": "–", "CI excludes 0": "–"})
    return pd.concat([rows.drop(columns="lang"), summary], ignore_index=True)


def _bootstrap(run_dir_a: str | None, run_dir_b: str | None, task: str, metric: str,
               filter_name: str) -> stats.PairedDiff | None:
    scores_a = _item_scores_of(run_dir_a, task, metric, filter_name)  # the stored row's metric and filter
    scores_b = _item_scores_of(run_dir_b, task, metric, filter_name)
    if scores_a is None or scores_b is None:
        return None
    return stats.compare_scores(scores_a, scores_b)
