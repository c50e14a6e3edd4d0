"""Shaping store rows into the leaderboard's tables (pure pandas, no Streamlit).

Scores are shown in percentage points, like the paper. Each task contributes its main metric
(`tasks.suite.main_metric`: acc for multiple choice, exact_match for math).

Missing values stay NaN here and are drawn as a dash, never as zero:
- a language cell is the language's average (tasks.averages: the unweighted mean of its tasks,
  missing when one is missing) over the tasks of that language that the store holds for some model
  in the split, so every cell of a column averages the same tasks;
- the Average cell is the mean of the target-language columns shown; it is missing unless the
  model has all of them (the paper averages over all seven languages; averaging over whichever
  languages a model happens to have would rank a model evaluated on one easy language first);
- the English control column (tasks.languages.CONTROL_LANGUAGES) and any extra language's
  (Khalkha Mongolian) come after the Average and are not in it: the control checks that a model
  knows the tasks, and neither is a language merged for;
- a language's average covers its default suite (the paper's benchmarks for it): tasks of other
  benchmarks that have the language (`harness eval --suite all`: SIB-200 for Tibetan) are shown in
  its per-task table but not averaged, so one stored run of them changes no average.
"""

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from harness.kinds import KINDS
from harness.store import main_metric_rows, metric_label
from merges import method_label
from tasks.averages import language_average, language_tasks
from tasks.errors import TaskError
from tasks.languages import LANGUAGES, TARGET_LANGUAGES
from tasks.suite import FAMILIES, chance_level, in_default_suite, parse_task_name

KIND_LABELS = {"base": "Base", "ct": "CT", "sft": "SFT", "ctsft": "CT-then-SFT", "adapter": "LoRA adapter", "merge": "Merge"}
# The paper's order of merge methods within the merges: WAVG, TIES, TIES-SV (others after, by name).
MERGE_METHOD_ORDER = ("linear", "ties", "ties_sv")
# The paper names merges over the English-instruction SFT model (sft-flan) by their method alone (TIES-X).
PAPER_SFT_DATA = "flan"
AVERAGE = "Average"
KIND = "Kind"
ITEMS = "n"  # items scored per row, or "limit N" for a row scored on fewer than the column's full set
SWEEP_TRIAL_MARK = "@"  # `ties-uig-flan@sft-flan.density=0.2`, `ties-uig-flan@best`: a sweep's models
DISPLAY_DECIMALS = 1  # percentage points, as in the paper


@dataclass
class Cells:
    """Models (or families) x columns: score and stderr (points), items scored, and the `--limit`
    of a cell scored on fewer items than the column's full set (NaN: the full set)."""

    values: pd.DataFrame
    stderr: pd.DataFrame
    items: pd.DataFrame
    limit: pd.DataFrame

    def columns(self, names: list) -> "Cells":
        return Cells(*(frame[names] for frame in self._frames()))

    def rows(self, index: list) -> "Cells":
        return Cells(*(frame.loc[index] for frame in self._frames()))

    def _frames(self) -> tuple[pd.DataFrame, ...]:
        return self.values, self.stderr, self.items, self.limit


@dataclass
class CellBasis:
    """What each score cell averages, so two cells of a column can be tested on the items behind
    them (leaderboard.ties): per column its tasks with their weights in the cell's mean (summing to
    1), and per row the model whose results fill each task (a family's member for the task's language)."""

    weights: dict[str, dict[str, float]]  # score column -> {task: weight}
    members: dict[str, dict[str, str]]  # row -> {task: model id}


@dataclass
class ScoreTable:
    """A rows-by-columns table of scores in percentage points (NaN = missing). Rows scored on fewer
    items than a column's full set (a `--limit` run) come last, flagged, and are never ranked."""

    frame: pd.DataFrame  # index: model id or family; columns: KIND, ITEMS, then score_columns
    score_columns: list[str]
    title: str  # names the split
    name: str  # a slug for file names and the LaTeX \label
    cells: Cells  # the score columns' stderr, items and limits
    kind_codes: pd.Series  # per row: base | ct | sft | ctsft | merge | unknown (LaTeX rules between kinds)
    basis: CellBasis | None = None  # what each cell averages (None: a table built by hand)
    ties: pd.DataFrame | None = None  # per cell: in the column's statistical tie group (leaderboard.ties)

    @property
    def scores(self) -> pd.DataFrame:
        return self.frame[self.score_columns]

    @property
    def limited(self) -> pd.Series:
        """Per row: scored on fewer items than some column's full set."""
        return self.cells.limit.notna().any(axis=1)


def task_label(task: str) -> str:
    """`lrm_mlic_tc_uig_test` -> `TC`; names outside the project's scheme are shown as they are."""
    try:
        return FAMILIES[parse_task_name(task)[0]].label
    except TaskError:
        return task


def main_scores(results: pd.DataFrame, split: str, main_metric: Callable[[str], str]) -> pd.DataFrame:
    """One row per (model, task) of the split: the task's main metric with its stderr, n, run_dir
    (harness.store.main_metric_rows: unfiltered if stored so, else the first filter by name)."""
    rows = results[results["split"] == split]
    if rows.empty:
        return rows.copy()
    return main_metric_rows(rows, main_metric)


def model_kinds(results: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """Per model id, from the models table: kind code, its label ("Merge (TIES-SV)" for merges), the
    merge method, and the recipe family it belongs to with the language it fills (`family_of`)."""
    by_hash = models.drop_duplicates("model_hash", keep="last").set_index("model_hash")
    info = {}
    for model, model_hash in results.drop_duplicates("model")[["model", "model_hash"]].itertuples(index=False):
        kind, method, langs = "unknown", None, ()
        if model_hash in by_hash.index:
            kind = by_hash.at[model_hash, "kind"]
            method = merge_method(by_hash.at[model_hash, "recipe_json"])
            langs = tuple(code for code in str(by_hash.at[model_hash, "langs"] or "").split(",") if code)
        label = KIND_LABELS.get(kind, kind)
        if kind == "merge" and method:
            label = f"{label} ({method_label(method)})"
        family, family_lang = family_of(model, kind, method, langs)
        info[model] = {"kind": kind, "label": label, "method": method, "family": family, "family_lang": family_lang}
    return pd.DataFrame.from_dict(info, orient="index", columns=["kind", "label", "method", "family", "family_lang"])


def family_of(model: str, kind: str, method: str | None, langs: tuple[str, ...]) -> tuple[str | None, str | None]:
    """The paper's Table 3 row a model belongs to, and the language it fills there.

    A one-language CT, CT-then-SFT or merge model is one cell of its recipe family: its id with the
    language slot as X, the head named by kind or merge method (`ct-uig` -> CT-X, `ctsft-uig-mt` ->
    CTSFT-X-mt, `ties-sv-uig-flan` -> TIES-SV-X). Models without a language slot (base, the SFT
    models) are rows of their own. Sweep trials and multi-language merges belong to no family (None).
    """
    if SWEEP_TRIAL_MARK in model:
        return None, None
    if kind in ("base", "sft") or not langs:
        return model, None
    if len(langs) > 1 or f"-{langs[0]}" not in f"-{model}-":
        return None, None
    suffix = f"-{model}-".split(f"-{langs[0]}-", 1)[1].strip("-")
    if kind == "merge":
        head = method_label(method) if method else model.split(f"-{langs[0]}", 1)[0].upper()
        suffix = "" if suffix == PAPER_SFT_DATA else suffix
    else:
        head = kind.upper()
    return f"{head}-X" + (f"-{suffix}" if suffix else ""), langs[0]


def merge_method(recipe_json: str | None) -> str | None:
    if not isinstance(recipe_json, str):
        return None
    return json.loads(recipe_json).get("merge_method")


def language_cells(scores: pd.DataFrame) -> Cells:
    """Models x language codes: each language's average over its default-suite tasks that any model
    has in `scores` (tasks.averages: missing when the model lacks one of them), with its stderr (of
    the mean of independent task scores), items and limit; a language with none of them has no column."""
    per_task = {field: scores.pivot_table(index="model", columns="task", values=field, aggfunc="last")
                for field in ("value", "stderr", "n")}
    full_items = per_task["n"].max().to_dict()  # per task: the most items any model was scored on
    # Plain dicts (model -> task -> value): the per-model loop below stays fast for hundreds of models.
    by_model = {field: frame.to_dict(orient="index") for field, frame in per_task.items()}
    columns = {lang: _language_column(by_model, full_items, expected)
               for lang, expected in _averaged_tasks(scores).items()}
    present = [code for code in LANGUAGES if code in columns] + sorted(set(columns) - set(LANGUAGES))
    index = per_task["value"].index
    frames = [pd.DataFrame({lang: columns[lang][field] for lang in present}, index=index, columns=present, dtype=float)
              for field in ("value", "stderr", "items", "limit")]
    return Cells(*frames)


def _language_column(by_model: dict[str, dict], full_items: dict[str, float], expected: list[str]) -> dict[str, list]:
    column = {"value": [], "stderr": [], "items": [], "limit": []}
    for model, values in by_model["value"].items():
        items = [by_model["n"][model][task] for task in expected]
        short = [n for n, task in zip(items, expected) if n < full_items[task]]  # NaN (not scored) is never short
        # A short task flags the cell even when the average is missing: the row is a --limit run.
        column["limit"].append(float(max(short)) if short else float("nan"))
        average = language_average(expected, values).value
        if average is None:
            for field in ("value", "stderr", "items"):
                column[field].append(float("nan"))
            continue
        stderr = [float(by_model["stderr"][model][task]) for task in expected]
        known = not any(math.isnan(value) for value in stderr)
        column["value"].append(average * 100)
        column["stderr"].append(100 * math.sqrt(sum(value**2 for value in stderr)) / len(expected) if known else float("nan"))
        column["items"].append(float(sum(items)))
    return column


def language_averages(scores: pd.DataFrame) -> pd.DataFrame:
    """Models x language codes, in %: the values of `language_cells`."""
    return language_cells(scores).values


def chance_average(scores: pd.DataFrame, lang: str) -> float | None:
    """The language average (%) a uniform random guess would score, over the tasks the language's
    average covers here (tasks.suite.chance_level); None for task names outside the scheme."""
    try:
        levels = [chance_level(task) for task in _averaged_tasks(scores).get(lang, [])]
    except TaskError:
        return None
    return 100 * sum(levels) / len(levels) if levels else None


def partial_averages(scores: pd.DataFrame) -> dict[str, list[str]]:
    """Language code -> its default-suite tasks on the split that no model has in `scores`, for every
    language whose column averages fewer tasks than `harness eval` would (tasks.averages.language_tasks):
    the leaderboard states these instead of hiding the column."""
    partial = {}
    for lang, present in _averaged_tasks(scores).items():
        if lang not in LANGUAGES:
            continue
        try:
            split = parse_task_name(present[0])[2]
        except TaskError:
            continue
        absent = [task for task in language_tasks(lang, split, present) if task not in present]
        if absent:
            partial[lang] = absent
    return partial


def _averaged_tasks(scores: pd.DataFrame) -> dict[str, list[str]]:
    """Language code -> the tasks in `scores` that its average covers (sorted; languages with none left out)."""
    by_lang = {lang: sorted(task for task in set(tasks) if _averaged(task)) for lang, tasks in scores.groupby("lang")["task"]}
    return {lang: tasks for lang, tasks in by_lang.items() if tasks}


def _averaged(task: str) -> bool:
    """Whether a task counts in its language's average: its default suite, or a name outside the scheme."""
    try:
        return in_default_suite(task)
    except TaskError:
        return True


def overview_table(scores: pd.DataFrame, kinds: pd.DataFrame, shown_kinds: Iterable[str] | None = None) -> ScoreTable:
    """Models x languages (by name) + Average, with each model's kind; the control's column
    (English) and extra languages' after the Average, outside it."""
    cells = _with_average(language_cells(scores))
    table = _with_kinds(cells, kinds, shown_kinds, f"Average score per language (%), {_split(scores)} split",
                        f"models-{_split(scores)}")
    tasks = sorted(set(scores["task"]))
    table.basis = CellBasis(_language_weights(scores), {model: dict.fromkeys(tasks, model) for model in table.frame.index})
    return table


def family_table(scores: pd.DataFrame, kinds: pd.DataFrame, shown_kinds: Iterable[str] | None = None) -> ScoreTable:
    """The paper's Table 3: recipe families (CT-X, CTSFT-X-flan, TIES-X, ...) x languages + Average.
    A family's language cell is its member for that language (`family_of`); base and the SFT models
    are rows of their own; models in no family (sweep trials, multi-language merges) are left out."""
    by_model = language_cells(scores)
    members = kinds.loc[kinds.index.intersection(by_model.values.index)].dropna(subset=["family"])
    frames = {field: {} for field in ("values", "stderr", "items", "limit")}
    task_members = {}  # family -> {task: the member model whose results fill it}
    lang_of = scores.drop_duplicates("task").set_index("task")["lang"]
    cells_of = {field: getattr(by_model, field).to_dict(orient="index") for field in frames}  # model -> column -> value
    for model, family, family_lang in zip(members.index, members["family"], members["family_lang"]):
        langs = list(by_model.values.columns) if pd.isna(family_lang) else [family_lang]
        for field, rows in frames.items():
            rows.setdefault(family, {}).update({lang: cells_of[field][model][lang] for lang in langs})
        task_members.setdefault(family, {}).update(dict.fromkeys(lang_of.index[lang_of.isin(langs)], model))
    columns = list(by_model.values.columns)
    cells = Cells(*(pd.DataFrame.from_dict(rows, orient="index").reindex(columns=columns).astype(float)
                    for rows in frames.values()))
    family_kinds = members.drop_duplicates("family").set_index("family")
    table = _with_kinds(_with_average(cells), family_kinds, shown_kinds,
                        f"Average score per language (%), by recipe family, {_split(scores)} split", f"table3-{_split(scores)}")
    table.basis = CellBasis(_language_weights(scores), {family: task_members[family] for family in table.frame.index})
    return table


@dataclass
class NormalisedScores:
    """Each merge family's score relative to its ingredients, per target language (rows: merge families)."""

    gain: pd.DataFrame  # points over the better of CT-X and the SFT model
    gap_closed: pd.DataFrame  # % of the distance from that better ingredient to CTSFT-X-mt covered


def normalised_scores(values: pd.DataFrame, kind_codes: pd.Series) -> NormalisedScores:
    """From a family table's scores (rows: families; columns: language names, in points): for each
    merge family and target language, gain = merge - max(CT-X, sft-<paper SFT data>), and gap closed
    = 100 * gain / (CTSFT-X-mt - max(CT-X, sft)), missing where an ingredient is missing or the upper
    bound is not above the better ingredient. The Average column is the mean over the languages
    (missing if any is)."""
    languages = [TARGET_LANGUAGES[code].name for code in TARGET_LANGUAGES if TARGET_LANGUAGES[code].name in values.columns]
    merges = [row for row in values.index if kind_codes.get(row) == "merge"]
    missing = pd.Series(float("nan"), index=languages)
    ct = values.loc["CT-X", languages] if "CT-X" in values.index else missing
    sft = values.loc[f"sft-{PAPER_SFT_DATA}", languages] if f"sft-{PAPER_SFT_DATA}" in values.index else missing
    upper = values.loc["CTSFT-X-mt", languages] if "CTSFT-X-mt" in values.index else missing
    better = pd.concat([ct, sft], axis=1).max(axis=1, skipna=False)
    room = (upper - better).where(upper > better)
    gain = values.loc[merges, languages].sub(better, axis=1)
    gap_closed = 100 * gain.div(room, axis=1)
    return NormalisedScores(*(frame.assign(**{AVERAGE: frame.mean(axis=1, skipna=False)}) if languages else frame
                              for frame in (gain, gap_closed)))


def _with_average(by_lang: Cells) -> Cells:
    """Target languages, their Average (only where a row has them all), then the control's and extra
    languages' columns; codes renamed to language names."""
    outside = [code for code in by_lang.values.columns if code in LANGUAGES and code not in TARGET_LANGUAGES]
    targets = [code for code in by_lang.values.columns if code not in outside]
    frames = []
    for frame, combine in zip(by_lang._frames(), (_mean, _stderr_of_mean, _total, _max_limit)):
        part = frame[targets]
        if targets:
            part = part.assign(**{AVERAGE: combine(frame[targets])})
        part = pd.concat([part, frame[outside]], axis=1)
        part.columns = [LANGUAGES[c].name if c in LANGUAGES else c for c in part.columns]
        frames.append(part)
    return Cells(*frames)


def _language_weights(scores: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per column of `_with_average`'s layout (language names, Average): each task's weight in the
    cell's mean. A language weighs its averaged tasks equally; the Average weighs the target
    languages equally."""
    by_lang = _averaged_tasks(scores)
    weights = {code: {task: 1 / len(tasks) for task in tasks} for code, tasks in by_lang.items()}
    targets = [code for code in by_lang if not (code in LANGUAGES and code not in TARGET_LANGUAGES)]
    named = {LANGUAGES[code].name if code in LANGUAGES else code: tasks for code, tasks in weights.items()}
    if targets:
        named[AVERAGE] = {task: weight / len(targets) for code in targets for task, weight in weights[code].items()}
    return named


def _mean(values: pd.DataFrame) -> pd.Series:
    return values.mean(axis=1, skipna=False)


def _stderr_of_mean(stderr: pd.DataFrame) -> pd.Series:
    return (stderr**2).sum(axis=1, skipna=False) ** 0.5 / stderr.shape[1]


def _total(items: pd.DataFrame) -> pd.Series:
    return items.sum(axis=1, skipna=False)


def _max_limit(limit: pd.DataFrame) -> pd.Series:
    return limit.max(axis=1)


def _split(scores: pd.DataFrame) -> str:
    return str(scores["split"].iloc[0]) if "split" in scores and not scores.empty else "?"


def language_table(
    scores: pd.DataFrame, lang: str, kinds: pd.DataFrame, shown_kinds: Iterable[str] | None = None
) -> ScoreTable:
    """The paper's Tables 7-13: for one language, models x its tasks + the language average."""
    rows = scores[scores["lang"] == lang]
    tasks = sorted(set(rows["task"]), key=family_rank)
    fields = {field: rows.pivot_table(index="model", columns="task", values=column, aggfunc="last").reindex(columns=tasks)
              for field, column in (("values", "value"), ("stderr", "stderr"), ("items", "n"))}
    full_items = fields["items"].max()
    limit = fields["items"].where(fields["items"] < full_items)
    cells = Cells(100 * fields["values"], 100 * fields["stderr"].astype(float), fields["items"].astype(float), limit)
    for frame in cells._frames():
        frame.columns = [task_label(t) for t in tasks]
    averages = language_cells(rows)
    if tasks and lang in averages.values.columns:
        for frame, average in zip(cells._frames(), averages.columns([lang])._frames()):
            frame[AVERAGE] = average[lang]
    name = LANGUAGES[lang].name if lang in LANGUAGES else lang
    table = _with_kinds(cells, kinds, shown_kinds, f"{name}: score per task (%), {_split(scores)} split",
                        f"{lang}-{_split(scores)}")
    weights = {task_label(task): {task: 1.0} for task in tasks}
    if AVERAGE in table.score_columns:
        weights[AVERAGE] = _language_weights(rows)[name]
    table.basis = CellBasis(weights, {model: dict.fromkeys(tasks, model) for model in table.frame.index})
    return table


def family_rank(task: str) -> tuple[int, str]:
    """The paper's task order (FAMILIES' order), used by every view; names outside the scheme last, by name."""
    families = list(FAMILIES)
    try:
        return families.index(parse_task_name(task)[0]), task
    except TaskError:
        return len(families), task


def _with_kinds(
    cells: Cells, kinds: pd.DataFrame, shown_kinds: Iterable[str] | None, title: str, name: str
) -> ScoreTable:
    kind_codes = pd.Series([kinds.at[m, "kind"] if m in kinds.index else "unknown" for m in cells.values.index],
                           cells.values.index, dtype=object)
    if shown_kinds is not None:
        kind_codes = kind_codes[kind_codes.isin(list(shown_kinds))]
    cells = cells.rows(list(kind_codes.index))
    limited = cells.limit.notna().any(axis=1)
    # Full rows first, then rows scored on fewer items; each grouped by kind in the paper's order,
    # merges by method (WAVG, TIES, TIES-SV), then by id.
    order = sorted(kind_codes.index, key=lambda m: (bool(limited[m]), _kind_rank(kind_codes[m]), _method_rank(kinds, m), m))
    cells = cells.rows(order)
    frame = cells.values.copy()
    frame.insert(0, ITEMS, _items_labels(cells, order))
    frame.insert(0, KIND, [kinds.at[m, "label"] if m in kinds.index else "unknown" for m in order])
    frame.index.name = "Model"
    return ScoreTable(frame=frame, score_columns=list(cells.values.columns), title=title, name=name, cells=cells,
                      kind_codes=kind_codes[order])


def _items_labels(cells: Cells, rows: list) -> list[str]:
    """Per row: "limit N" for a row scored on at most N items of some task, else its items over all shown cells."""
    limits = cells.limit.max(axis=1).to_dict()
    items = cells.items.drop(columns=AVERAGE, errors="ignore").sum(axis=1).to_dict()
    return [f"limit {int(limits[row])}" if pd.notna(limits[row]) else str(int(items[row])) for row in rows]


def kind_order(kinds: pd.DataFrame, model: str) -> tuple:
    """Where a model's rows go in the paper's order: by kind, merges by method (WAVG, TIES, TIES-SV)."""
    kind = kinds.at[model, "kind"] if model in kinds.index else "unknown"
    return _kind_rank(kind), _method_rank(kinds, model)


def _kind_rank(kind: str) -> int:
    return KINDS.index(kind) if kind in KINDS else len(KINDS)


def _method_rank(kinds: pd.DataFrame, row: str) -> tuple[int, str]:
    method = kinds.at[row, "method"] if row in kinds.index and "method" in kinds.columns else None
    if not isinstance(method, str):
        return len(MERGE_METHOD_ORDER), ""
    return (MERGE_METHOD_ORDER.index(method) if method in MERGE_METHOD_ORDER else len(MERGE_METHOD_ORDER)), method


def rank_marks(table: ScoreTable) -> pd.DataFrame:
    """"best" / "second" / "" per score cell: the highest and second-highest value of each column
    among the rows scored on the column's full item set (a `--limit` row is never ranked).

    Values are compared as displayed (rounded), so two cells that read the same get the same mark;
    missing cells get no mark.
    """
    marks = pd.DataFrame("", index=table.frame.index, columns=table.score_columns)
    ranked = ~table.limited
    for column in table.score_columns:
        shown = table.frame[column].round(DISPLAY_DECIMALS).where(ranked)
        distinct = sorted(shown.dropna().unique(), reverse=True)
        if distinct:
            marks.loc[shown == distinct[0], column] = "best"
        if len(distinct) > 1:
            marks.loc[shown == distinct[1], column] = "second"
    return marks


MARK_CSS = {"best": "font-weight: bold", "second": "text-decoration: underline", "": ""}
LIMITED_CSS = "color: #a05a00; font-style: italic"  # a row scored on fewer items: shown apart, not ranked
TIE_MARK = "†"  # not significantly different from the column's best (leaderboard.ties)
TIE_CSS = "background-color: rgba(60, 160, 60, 0.15)"
INTERVAL_Z = 1.96  # a cell's 95% interval: value ± 1.96 stderr (normal approximation, as harness experiment prints)


def tie_cells(table: ScoreTable) -> pd.DataFrame:
    """Per score cell: True where the cell is in its column's tie group but is not the best (False
    where the table carries no tie groups)."""
    if table.ties is None:
        return pd.DataFrame(False, index=table.frame.index, columns=table.score_columns)
    return table.ties.reindex(index=table.frame.index, columns=table.score_columns).eq(True)


def styled(table: ScoreTable, intervals: bool = False) -> "pd.io.formats.style.Styler":
    """The table as a pandas Styler: one decimal (with ± its 95% interval when `intervals`), a dash
    for missing, best bold, second underlined, the best's statistical ties shaded and marked †, rows
    scored on fewer items flagged; ids and labels escaped so Streamlit's Markdown cells show them as
    typed (an id with '@' is otherwise drawn as a mailto: link)."""
    marks = rank_marks(table)
    ties = tie_cells(table)
    css = pd.DataFrame("", index=table.frame.index, columns=table.frame.columns)
    css[table.score_columns] = marks.apply(lambda column: column.map(MARK_CSS))
    css[table.score_columns] = css[table.score_columns].where(~ties, css[table.score_columns] + "; " + TIE_CSS)
    css.loc[table.limited, ITEMS] = LIMITED_CSS
    styler = (
        table.frame.style.format(precision=DISPLAY_DECIMALS, na_rep="–", subset=table.score_columns)
        .format(markdown_text, subset=[KIND, ITEMS])
        .format(lambda flagged: f"⚠ {flagged}" if flagged.startswith("limit") else flagged, subset=[ITEMS])
        .format_index(markdown_text, axis=0)
        .apply(lambda _: css, axis=None)
        # Streamlit draws each cell's text in an inline-block, which a td's underline does not reach.
        .set_table_styles([{"selector": "td *", "props": "text-decoration: inherit"}])
    )
    for row in table.frame.index:
        for column in table.score_columns:
            suffix = f" {TIE_MARK}" if ties.at[row, column] else ""
            stderr = table.cells.stderr.at[row, column]
            interval = f" ± {INTERVAL_Z * stderr:.{DISPLAY_DECIMALS}f}" if intervals and pd.notna(stderr) else ""
            if suffix or interval:
                styler = styler.format(lambda value, extra=interval + suffix: "–" if pd.isna(value) else
                                       f"{value:.{DISPLAY_DECIMALS}f}{extra}", subset=pd.IndexSlice[[row], [column]])
    return styler


def markdown_text(text) -> str:
    """Text as a Markdown literal: every ASCII punctuation character backslash-escaped (CommonMark)."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", str(text))


def task_scores_table(scores: pd.DataFrame, model: str) -> pd.DataFrame:
    """One model's per-task scores of a split: task, language, metric, score and stderr (%), n."""
    rows = scores[scores["model"] == model]
    language_order = {code: i for i, code in enumerate(LANGUAGES)}
    order = sorted(range(len(rows)), key=lambda i: (language_order.get(rows["lang"].iloc[i], len(LANGUAGES)),
                                                    family_rank(rows["task"].iloc[i])))
    rows = rows.iloc[order]
    return pd.DataFrame(
        {
            "Task": rows["task"].to_numpy(),
            "Language": [LANGUAGES[c].name if c in LANGUAGES else c for c in rows["lang"]],
            "Metric": [metric_label(m, f) for m, f in zip(rows["metric"], rows["filter"])],
            "Score (%)": (rows["value"] * 100).round(2).to_numpy(),
            "Stderr (%)": (rows["stderr"].astype(float) * 100).round(2).to_numpy(),
            "n": rows["n"].astype(int).to_numpy(),
        }
    )
