"""The leaderboard's pages. Each view is a function of the shared `Context`; data shaping lives in
tables.py, recipes.py, samples.py, stats.py and export.py, so what is drawn here stays thin.

Adding a page = one function here and one entry in VIEWS (or in SNAPSHOT_VIEWS for a page that
does not depend on the split, like the sweeps).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from harness import HarnessError
from harness.kinds import KINDS
from harness.store import metric_label
from leaderboard import data, export, maintenance, recipes, samples, stats, sweeps, tables
from merges import METHODS
from tasks import averages
from tasks.languages import LANGUAGES, TARGET_LANGUAGES
from tasks.suite import SPLITS

# The split selector's options: test, the split the paper reports, first and the default.
SPLIT_CHOICES = tuple(sorted(SPLITS, key=lambda split: split != "test"))
# One colour per kind label in every chart (a fixed domain, so a chart showing fewer kinds keeps them).
KIND_COLOURS = alt.Scale(
    domain=[*(tables.KIND_LABELS[k] for k in KINDS if k != "merge"),
            *(f"{tables.KIND_LABELS['merge']} ({spec.label})" for spec in METHODS.values()), "unknown"],
    scheme="tableau20",
)
ROWS_FAMILIES, ROWS_MODELS = "Recipe families (Table 3)", "Models"


@dataclass
class Context:
    snapshot: data.StoreSnapshot
    split: str
    scores: pd.DataFrame  # main-metric rows of the split (tables.main_scores)
    kinds: pd.DataFrame  # per model id: kind, label (tables.model_kinds)
    shown_kinds: list[str]


# ---------------------------------------------------------------- loading (cached)


@st.cache_data(ttl=15, show_spinner=False)
def _snapshot(url: str) -> data.StoreSnapshot:
    return data.read_store(url)


@st.cache_data(max_entries=64, show_spinner=False)
def _samples(path: str, mtime: float) -> list[dict]:  # mtime: a rewritten file is read again
    return samples.read_samples(Path(path))


def _samples_of(run_dir: str | None, task: str) -> list[dict] | None:
    """The task's logged samples; None (with a warning on the page for a damaged log) when there are none."""
    path = samples.find_samples_file(run_dir, task)
    if path is None:
        return None
    try:
        return _samples(str(path), path.stat().st_mtime)
    except HarnessError as err:
        st.warning(str(err))
        return None


# ---------------------------------------------------------------- the page


def main() -> None:
    st.title("merge-harness leaderboard")
    url = data.store_url()
    try:
        snapshot = _snapshot(url)
    except HarnessError as err:
        st.error(str(err))
        return
    with st.sidebar:
        view = st.radio("View", [*VIEWS, *SNAPSHOT_VIEWS], key="view")
        split = st.selectbox("Split", SPLIT_CHOICES, index=0, key="split", help="the paper reports test")
        if st.button("Reload results"):
            _snapshot.clear()
            st.rerun()
        st.caption(f"Store: `{url}` (read-only)")
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
    scores = tables.main_scores(snapshot.results, split, metric_of)
    unknown = sorted({t for t in snapshot.results.loc[snapshot.results["split"] == split, "task"] if metric_of(t) is None})
    if unknown:
        st.warning(f"Not shown, no main metric known for: {', '.join(unknown)}")
    if scores.empty:
        others = sorted(set(snapshot.results["split"]) - {split})
        hint = f"; results exist for: {', '.join(others)} (choose it under Split)" if others else ""
        st.info(f"No results on the {split} split yet{hint}.")
        return None
    with st.sidebar:
        hide_trials = st.checkbox("Hide sweep trials", key="hide-trials",
                                  help=f"models whose id holds '{tables.SWEEP_TRIAL_MARK}' (a sweep's grid points and its @best)")
    if hide_trials:
        scores = scores[~scores["model"].str.contains(tables.SWEEP_TRIAL_MARK, regex=False)]
    kinds = tables.model_kinds(scores, snapshot.models)
    # The same options on every split (every kind the store knows), so a choice survives a split change.
    known = set(snapshot.models["kind"]) | set(kinds["kind"])
    options = [k for k in KINDS if k in known] + sorted(known - set(KINDS))
    with st.sidebar:
        shown = st.multiselect(
            "Kinds", options, default=options, key="kinds", format_func=lambda k: tables.KIND_LABELS.get(k, k)
        )
    return Context(snapshot=snapshot, split=split, scores=scores, kinds=kinds, shown_kinds=shown)


# ---------------------------------------------------------------- views


def overview(ctx: Context) -> None:
    st.header(f"Overview ({ctx.split})")
    rows = st.radio("Rows", [ROWS_FAMILIES, ROWS_MODELS], key="overview-rows", horizontal=True)
    if rows == ROWS_MODELS:
        table = tables.overview_table(ctx.scores, ctx.kinds, ctx.shown_kinds)
    else:
        table = tables.family_table(ctx.scores, ctx.kinds, ctx.shown_kinds)
        st.caption("A family's language cell is its model for that language (TIES-X's Uyghur cell: ties-uig-flan); "
                   "sweep trials and multi-language merges are in the Models table only.")
    _score_table(table)
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
    with st.expander("Normalised scores: each merge against its ingredients"):
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
    table = tables.language_table(ctx.scores, lang, ctx.kinds, ctx.shown_kinds)
    _score_table(table)
    _partial_note(ctx.scores[ctx.scores["lang"] == lang])
    _downloads(table)
    # No Average column where the store holds none of the language's default-suite tasks.
    averages = table.frame.get(tables.AVERAGE, pd.Series(dtype=float)).dropna()
    if not averages.empty:
        st.subheader(f"{LANGUAGES[lang].name} average by model")
        _bar_chart(averages, table.frame.loc[averages.index, tables.KIND], tables.chance_average(ctx.scores, lang))


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
        _search_chart(grid)
    elif len(grid.axes) in (1, 2):
        _sweep_chart(grid)
    _plain_table(grid.trials.rename(columns={a: sweeps.axis_label(a) for a in grid.axes}), hide_index=True)
    st.caption("Dev score: mean over the model's languages of each language's task average (main metric). "
               "★ marks the chosen point: the best dev score, the first in grid order on a tie.")


def maintenance_page(snapshot: data.StoreSnapshot) -> None:
    st.header("Maintenance cost (Table 2 of Dmonte et al.)")
    times = snapshot.maintenance
    if times.empty:
        st.info("No maintenance experiment stored yet: run one, e.g. `harness maintain --update uig --factor 2`.")
        return
    experiment = st.selectbox("Experiment", maintenance.experiments(times), key="maintenance-experiment")
    table = maintenance.cost_table(times[times["experiment"] == experiment], _test_averages(snapshot))
    st.dataframe(table.style.format(na_rep="–", precision=1), hide_index=True, use_container_width=True)
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
}
SNAPSHOT_VIEWS: dict[str, Callable[[data.StoreSnapshot], None]] = {
    "Sweeps": sweeps_page,
    "Maintenance": maintenance_page,
}


# ---------------------------------------------------------------- pieces


def _score_table(table: tables.ScoreTable) -> None:
    if table.frame.empty:
        st.info("No model of the chosen kinds has results here.")
        return
    st.table(tables.styled(table))


def _plain_table(frame: pd.DataFrame, hide_index: bool = False) -> None:
    """A static table with two decimals and a dash for missing values."""
    st.table(frame.style.format(precision=2, na_rep="–"), hide_index=hide_index)


def _downloads(table: tables.ScoreTable) -> None:
    if table.frame.empty:
        return
    stem = f"leaderboard_{table.name}"
    csv_col, md_col, tex_col = st.columns(3)
    csv_col.download_button("CSV", export.to_csv(table), f"{stem}.csv", "text/csv", key=f"{stem}-csv")
    md_col.download_button("Markdown", export.to_markdown(table), f"{stem}.md", "text/markdown", key=f"{stem}-md")
    tex_col.download_button("LaTeX", export.to_latex(table), f"{stem}.tex", "text/x-tex", key=f"{stem}-tex")


def _bar_chart(values: pd.Series, kinds: pd.Series, chance: float | None = None) -> None:
    """Bars per model, coloured by kind; a dashed rule at the chance level (%) where known."""
    frame = pd.DataFrame({"model": values.index, "score": values.to_numpy(), "kind": kinds.to_numpy()})
    bars = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("model:N", sort="-y", title=None),
            y=alt.Y("score:Q", title="score (%)"),
            color=alt.Color("kind:N", title="kind", scale=KIND_COLOURS),
            tooltip=["model", "kind", alt.Tooltip("score:Q", format=".1f")],
        )
    )
    if chance is None:
        st.altair_chart(bars, width="stretch")
        return
    rule = (alt.Chart(pd.DataFrame({"chance": [chance]})).mark_rule(strokeDash=[4, 4], color="gray")
            .encode(y="chance:Q", tooltip=[alt.Tooltip("chance:Q", title="chance level (%)", format=".1f")]))
    st.altair_chart(bars + rule, width="stretch")
    st.caption(f"Dashed line: chance level, {chance:.1f}% (a uniform random guess; 0 for generated answers).")


def _sweep_chart(grid: sweeps.SweepGrid) -> None:
    """A heatmap of dev score over two grid axes (a line over one), the chosen point starred."""
    frame = grid.trials.copy()
    frame["label"] = [f"{'★ ' if chosen else ''}{score:.1f}" for chosen, score in zip(frame[sweeps.CHOSEN], frame[sweeps.SCORE])]
    columns = {axis: f"p{i}" for i, axis in enumerate(grid.axes)}  # Vega field names without dots
    frame = frame.rename(columns=columns)
    x = alt.X("p0:O", title=sweeps.axis_label(grid.axes[0]))
    tooltip = [alt.Tooltip(f"{f}:O", title=sweeps.axis_label(a)) for a, f in columns.items()]
    tooltip.append(alt.Tooltip(f"{sweeps.SCORE}:Q", format=".2f"))
    if len(grid.axes) == 1:
        base = alt.Chart(frame).encode(x=x, y=alt.Y(f"{sweeps.SCORE}:Q"), tooltip=tooltip)
        chart = base.mark_line(point=True) + base.mark_text(dy=-10).encode(text="label:N")
    else:
        base = alt.Chart(frame).encode(x=x, y=alt.Y("p1:O", title=sweeps.axis_label(grid.axes[1]), sort="descending"),
                                       tooltip=tooltip)
        chart = (base.mark_rect().encode(color=alt.Color(f"{sweeps.SCORE}:Q", scale=alt.Scale(scheme="viridis")))
                 + base.mark_text(fontWeight="bold").encode(text="label:N",
                                                             color=alt.value("white")))
    st.altair_chart(chart, width="stretch")


def _search_chart(grid: sweeps.SweepGrid) -> None:
    """A search's dev score per trial (points) and the best so far (a step line)."""
    frame = sweeps.best_so_far(grid)
    base = alt.Chart(frame).encode(x=alt.X(f"{sweeps.TRIAL}:Q", title="trial", axis=alt.Axis(tickMinStep=1)))
    points = base.mark_point().encode(y=alt.Y(f"{sweeps.SCORE}:Q"),
                                      tooltip=[sweeps.TRIAL, alt.Tooltip(f"{sweeps.SCORE}:Q", format=".2f")])
    best = base.mark_line(interpolate="step-after").encode(y=f"{sweeps.BEST_SO_FAR}:Q")
    st.altair_chart(points + best, width="stretch")
    st.caption("Points: each trial's dev score, in the order the search ran them; line: the best so far.")


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
    with st.expander("Per tensor"):
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
    samples_a, samples_b = _samples_of(run_dir_a, task), _samples_of(run_dir_b, task)
    if samples_a is None or samples_b is None:
        return None
    return stats.compare_scores(  # the sample lines of the stored row's filter
        samples.sample_scores(samples_a, metric, filter_name),
        samples.sample_scores(samples_b, metric, filter_name),
    )
