"""The leaderboard's charts, as pure functions of DataFrames, for the app and for `harness report`.

Each chart is one function returning a `Figure`: an Altair chart with a title naming what it shows,
the data it draws (downloaded as CSV beside it) and a file stem. Altair is what Streamlit draws;
the same chart is rendered to SVG and PNG without a browser by vl-convert (`to_svg`, `to_png`), so a
figure in a paper is the one on the page. Adding a chart = one function here, drawn by a view with
`views._figure` and listed for the report in `harness.report.FIGURE_SETS`.
"""

import io
import re
from dataclasses import dataclass

import altair as alt
import pandas as pd

from harness.kinds import KINDS
from harness.store import SweepId
from leaderboard import conflicts, multilang, similarity, sweeps
from leaderboard.tables import KIND_LABELS
from merges import METHODS

# One colour per kind label in every chart (a fixed domain, so a chart showing fewer kinds keeps them).
KIND_COLOURS = alt.Scale(
    domain=[*(KIND_LABELS[k] for k in KINDS if k != "merge"),
            *(f"{KIND_LABELS['merge']} ({spec.label})" for spec in METHODS.values()), "unknown"],
    scheme="tableau20",
)
PNG_SCALE = 2  # pixels per Vega unit: sharp enough for print


@dataclass
class Figure:
    name: str  # file stem: letters, digits, '-' and '_'
    chart: alt.TopLevelMixin
    data: pd.DataFrame  # what the chart draws, for its CSV
    caption: str = ""  # what the page says under it (how to read it)


def language_average_bars(values: pd.Series, kinds: pd.Series, chance: float | None, language: str,
                          split: str, name: str) -> Figure:
    """One language's average per model (index: model ids, in %), bars coloured by kind, with a
    dashed rule at the chance level (%) where known."""
    frame = pd.DataFrame({"model": values.index, "score": values.to_numpy().round(2), "kind": kinds.to_numpy()})
    bars = (
        alt.Chart(frame, title=f"{language}: average score by model ({split} split)")
        .mark_bar()
        .encode(
            x=alt.X("model:N", sort="-y", title=None, axis=alt.Axis(labelAngle=-40, labelLimit=240)),
            y=alt.Y("score:Q", title="score (%)"),
            color=alt.Color("kind:N", title="kind", scale=KIND_COLOURS),
            tooltip=["model", "kind", alt.Tooltip("score:Q", format=".1f")],
        )
    )
    if chance is None:
        return Figure(name, bars, frame)
    rule = (alt.Chart(pd.DataFrame({"chance": [chance]})).mark_rule(strokeDash=[4, 4], color="gray")
            .encode(y="chance:Q", tooltip=[alt.Tooltip("chance:Q", title="chance level (%)", format=".1f")]))
    caption = f"Dashed line: chance level, {chance:.1f}% (a uniform random guess; 0 for generated answers)."
    return Figure(name, alt.layer(bars, rule), frame.assign(chance=round(chance, 2)), caption)


def checkpoint_curve(points: pd.DataFrame, language: str, split: str, name: str) -> Figure:
    """One language's checkpoint curves (leaderboard.curves.curve_points): the language average (%)
    against the CT tokens seen, one line per series family coloured by kind, with 95% intervals."""
    frame = points.drop(columns="lang")
    base = alt.Chart(frame, title=f"{language}: average score against CT tokens seen ({split} split)").encode(
        x=alt.X("tokens:Q", title="CT tokens seen", axis=alt.Axis(format="~s")),
        color=alt.Color("kind:N", title="kind", scale=KIND_COLOURS),
    )
    tooltip = ["line", "model", alt.Tooltip("tokens:Q", format=","), alt.Tooltip("score:Q", format=".1f"),
               alt.Tooltip("low:Q", title="95% low", format=".1f"), alt.Tooltip("high:Q", title="95% high", format=".1f"), "n"]
    lines = base.mark_line(point=True).encode(
        y=alt.Y("score:Q", title="score (%)"), strokeDash=alt.StrokeDash("line:N", title="series"),
        shape=alt.Shape("line:N", title="series"), tooltip=tooltip)
    intervals = base.mark_rule().encode(y="low:Q", y2="high:Q", detail="line:N")
    caption = ("Each point: a model's language average (%) after that many CT tokens, bars ± 1.96 stderr "
               "(a 95% interval). CT-X: the CT model's checkpoints; a merge family (TIES-X): the merge over each "
               "checkpoint; CT-then-SFT models appear where the registry records their CT tokens.")
    return Figure(name, alt.layer(intervals, lines), frame, caption)


def sweep_grid_chart(grid: sweeps.SweepGrid, name: str) -> Figure:
    """A sweep's dev score as a heatmap over two grid axes (a line over one), the chosen point starred."""
    frame = grid.trials.copy()
    frame["label"] = [f"{'★ ' if chosen else ''}{score:.1f}" for chosen, score in zip(frame[sweeps.CHOSEN], frame[sweeps.SCORE])]
    columns = {axis: f"p{i}" for i, axis in enumerate(grid.axes)}  # Vega field names without dots
    drawn = frame.rename(columns=columns)
    title = f"{grid.sweep.label}: dev score"
    x = alt.X("p0:O", title=sweeps.axis_label(grid.axes[0]))
    tooltip = [alt.Tooltip(f"{f}:O", title=sweeps.axis_label(a)) for a, f in columns.items()]
    tooltip.append(alt.Tooltip(f"{sweeps.SCORE}:Q", format=".2f"))
    if len(grid.axes) == 1:
        base = alt.Chart(drawn, title=title).encode(x=x, y=alt.Y(f"{sweeps.SCORE}:Q"), tooltip=tooltip)
        chart = alt.layer(base.mark_line(point=True), base.mark_text(dy=-10).encode(text="label:N"))
    else:
        base = alt.Chart(drawn, title=title).encode(
            x=x, y=alt.Y("p1:O", title=sweeps.axis_label(grid.axes[1]), sort="descending"), tooltip=tooltip)
        chart = alt.layer(base.mark_rect().encode(color=alt.Color(f"{sweeps.SCORE}:Q", scale=alt.Scale(scheme="viridis"))),
                          base.mark_text(fontWeight="bold").encode(text="label:N", color=alt.value("white")))
    return Figure(name, chart, frame[[*grid.axes, sweeps.SCORE, sweeps.CHOSEN]])


def search_progress_chart(grid: sweeps.SweepGrid, name: str) -> Figure:
    """A search's dev score per trial (points) and the best so far (a step line)."""
    frame = sweeps.best_so_far(grid)
    base = alt.Chart(frame, title=f"{grid.sweep.label}: dev score per trial").encode(
        x=alt.X(f"{sweeps.TRIAL}:Q", title="trial", axis=alt.Axis(tickMinStep=1)))
    points = base.mark_point().encode(y=alt.Y(f"{sweeps.SCORE}:Q"),
                                      tooltip=[sweeps.TRIAL, alt.Tooltip(f"{sweeps.SCORE}:Q", format=".2f")])
    best = base.mark_line(interpolate="step-after").encode(y=f"{sweeps.BEST_SO_FAR}:Q")
    return Figure(name, alt.layer(points, best), frame,
                  "Points: each trial's dev score, in the order the search ran them; line: the best so far.")


def similarity_heatmap(matrix: similarity.SimilarityMatrix) -> Figure:
    """Models by models, coloured by cosine (a fixed -1..1 scale, so two pages compare), each cell labelled."""
    order = list(matrix.cosine.index)
    frame = similarity.long_form(matrix)
    base = alt.Chart(frame, title=f"Cosine similarity of language vectors (against {matrix.base})").encode(
        x=alt.X("other:N", sort=order, title=None), y=alt.Y("model:N", sort=order, title=None),
        tooltip=["model", "other", alt.Tooltip("cosine:Q", format=".3f")])
    cells = base.mark_rect().encode(color=alt.Color("cosine:Q", scale=alt.Scale(scheme="redblue", domain=[-1, 1])))
    labels = base.mark_text(fontSize=11).encode(text=alt.Text("cosine:Q", format=".2f"))
    return Figure(f"similarity_{_stem(matrix.base)}", cells + labels, frame)


# ---------------------------------------------------------------- conflict analysis (frames of leaderboard.conflicts)

LANGUAGE_NAME = "language name"  # the legend of the per-language charts ("Uyghur", "Mongolian (...) + Uyghur")
SFT_DENSITY_AXIS = alt.X(f"{conflicts.SFT_DENSITY}:Q", title="density of the SFT model")
PART_ORDER = [*conflicts.TENSOR_TYPES, conflicts.OTHER_TYPE]


def conflict_density_chart(curve: pd.DataFrame, ct_density: float | None) -> Figure:
    """Figure 3 (conflicts.density_curve): one line per language, the SFT model's density on x, the
    share of its parameters that sign election discarded on y."""
    frame = _with_language_names(curve)
    at = "CT models at the SFT model's density" if ct_density is None else f"CT models at density {ct_density:g}"
    chart = alt.Chart(frame, title=f"SFT parameters discarded by sign election, per language ({at})").mark_line(
        point=True).encode(
        x=SFT_DENSITY_AXIS,
        y=alt.Y(f"{conflicts.DISCARDED}:Q", title="SFT parameters discarded (%)"),
        color=alt.Color(f"{LANGUAGE_NAME}:N", title="language"),
        tooltip=[LANGUAGE_NAME, conflicts.SFT_DENSITY, alt.Tooltip(f"{conflicts.DISCARDED}:Q", format=".2f"),
                 alt.Tooltip(f"{conflicts.DISCARDED_OF_KEPT}:Q", format=".2f")],
    )
    name = "conflicts-density" + ("" if ct_density is None else "-ct-" + _stem(f"{ct_density:g}"))
    return Figure(name, chart, frame, "One line per language: the share of the SFT model's parameters that sign "
                                      "election discarded, against its density (the mean where several merges share a point).")


def conflict_slack_chart(curve: pd.DataFrame, sweep: SweepId | None = None) -> Figure:
    """TIES-SV (conflicts.slack_curve): the share of the SFT model's trimmed entries the slack kept
    back against the slack, one line per language; of one sweep's trials, or (None) of every merge."""
    subject = sweep.label if sweep is not None else "All TIES-SV merges"
    name = f"{sweep_figure_name(sweep)}-conflicts-slack" if sweep is not None else "conflicts-slack"
    frame = _with_language_names(curve)
    chart = alt.Chart(frame, title=f"{subject}: SFT entries the slack kept back (TIES-SV)").mark_line(point=True).encode(
        x=alt.X("slack:Q", title="slack"),
        y=alt.Y(f"{conflicts.KEPT_BY_SLACK}:Q", title="kept back by the slack (% of kept by trimming)"),
        color=alt.Color(f"{LANGUAGE_NAME}:N", title="language"),
        tooltip=[LANGUAGE_NAME, "slack", alt.Tooltip(f"{conflicts.KEPT_BY_SLACK}:Q", format=".2f"),
                 alt.Tooltip(f"{conflicts.DISCARDED}:Q", format=".2f")],
    )
    return Figure(name, chart, frame, "TIES-SV: the SFT model's entries the slack kept back, as a share of those "
                                      "trimming kept, per language.")


def sweep_conflict_chart(points: pd.DataFrame, sweep: SweepId, by: str) -> Figure:
    """A sweep's trials (conflicts.merge_points rows at one CT density): the SFT model's discarded
    share against its density, one line per tensor type (`by` = "type") or a layer x density heatmap ("layer")."""
    rows = points[points["breakdown"] == by]
    frame = rows[["model", "language", conflicts.SFT_DENSITY, conflicts.CT_DENSITY, "part", "layer", *conflicts.COUNTS,
                  conflicts.DISCARDED, conflicts.DISCARDED_OF_KEPT]].reset_index(drop=True)
    title = f"{sweep.label}: SFT parameters discarded by sign election, per {'layer' if by == 'layer' else 'tensor type'}"
    if by == "layer":
        chart = alt.Chart(frame, title=title).mark_rect().encode(
            x=alt.X(f"{conflicts.SFT_DENSITY}:O", title="density of the SFT model"),
            y=alt.Y("layer:O", title="layer"),
            color=alt.Color(f"{conflicts.DISCARDED}:Q", title="discarded (%)", scale=alt.Scale(scheme="orangered")),
            tooltip=["layer", conflicts.SFT_DENSITY, alt.Tooltip(f"{conflicts.DISCARDED}:Q", format=".2f")],
        )
    else:
        chart = alt.Chart(frame, title=title).mark_line(point=True).encode(
            x=SFT_DENSITY_AXIS,
            y=alt.Y(f"{conflicts.DISCARDED}:Q", title="SFT parameters discarded (%)"),
            color=alt.Color("part:N", title="tensor type", sort=PART_ORDER),
            tooltip=["part", conflicts.SFT_DENSITY, alt.Tooltip(f"{conflicts.DISCARDED}:Q", format=".2f")],
        )
    return Figure(f"{sweep_figure_name(sweep)}-conflicts-{by}", chart, frame,
                  "The SFT model's entries discarded by sign election, as a share of its parameters, against its density.")


def merge_conflict_chart(parts: pd.DataFrame, model: str, by: str) -> Figure:
    """One merge (conflicts.breakdown): each input model's discarded share per tensor type (`by` =
    "type") or per layer ("layer"), bars side by side."""
    frame = parts[parts["breakdown"] == by].reset_index(drop=True)
    x = alt.X("layer:O", title="layer") if by == "layer" else alt.X("part:N", title="tensor type", sort=PART_ORDER)
    chart = alt.Chart(frame, title=f"{model}: discarded by sign election per {'layer' if by == 'layer' else 'tensor type'}").mark_bar().encode(
        x=x, xOffset="model:N",
        y=alt.Y(f"{conflicts.DISCARDED}:Q", title="discarded (% of parameters)"),
        color=alt.Color("model:N", title="input model"),
        tooltip=["model", "part", alt.Tooltip(f"{conflicts.DISCARDED}:Q", format=".2f"),
                 alt.Tooltip(f"{conflicts.DISCARDED_OF_KEPT}:Q", format=".2f"),
                 alt.Tooltip(f"{conflicts.KEPT_BY_SLACK}:Q", format=".2f")],
    )
    return Figure(f"conflicts-{_stem(model)}-{by}", chart, frame)


def _with_language_names(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with each row's language(s) by name (`mvf+uig` -> "Mongolian (...) + Uyghur")."""
    names = {code: multilang.language_names(tuple(code.split("+"))) for code in frame["language"].unique()}
    return frame.assign(**{LANGUAGE_NAME: frame["language"].map(names)})


def sweep_figure_name(sweep: SweepId) -> str:
    """A file stem for a sweep's chart: `sweep-ties-uig-flan-densities` (other characters become '_')."""
    return "sweep-" + _stem(f"{sweep.model}-{sweep.grid}")


def _stem(text: str) -> str:
    """`text` as a file stem: letters, digits, '-' and '_'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)


def to_svg(figure: Figure) -> str:
    """The chart as SVG (vl-convert, no browser); its text (titles, model ids, labels) stays text."""
    out = io.StringIO()
    figure.chart.save(out, format="svg")
    return out.getvalue()


def to_png(figure: Figure) -> bytes:
    out = io.BytesIO()
    figure.chart.save(out, format="png", scale_factor=PNG_SCALE)
    return out.getvalue()


def to_csv(figure: Figure) -> str:
    return figure.data.to_csv(index=False)
