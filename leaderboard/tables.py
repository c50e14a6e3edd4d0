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
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from harness.kinds import KINDS
from harness.store import main_metric_rows, metric_label
from merges import method_label
from tasks.averages import language_average, language_tasks
from tasks.errors import TaskError
from tasks.languages import LANGUAGES, TARGET_LANGUAGES
from tasks.suite import FAMILIES, in_default_suite, parse_task_name

KIND_LABELS = {"base": "Base", "ct": "CT", "sft": "SFT", "ctsft": "CT-then-SFT", "merge": "Merge"}
AVERAGE = "Average"
KIND = "Kind"
DISPLAY_DECIMALS = 1  # percentage points, as in the paper


@dataclass
class ScoreTable:
    """A models-by-columns table of scores in percentage points (NaN = missing)."""

    frame: pd.DataFrame  # index: model id; columns: KIND, then score_columns
    score_columns: list[str]
    title: str

    @property
    def scores(self) -> pd.DataFrame:
        return self.frame[self.score_columns]


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
    """Per model id: kind code and its label ("Merge (TIES-SV)" for merges), from the models table."""
    by_hash = models.drop_duplicates("model_hash", keep="last").set_index("model_hash")
    info = {}
    for model, model_hash in results.drop_duplicates("model")[["model", "model_hash"]].itertuples(index=False):
        kind, method = "unknown", None
        if model_hash in by_hash.index:
            kind = by_hash.at[model_hash, "kind"]
            method = merge_method(by_hash.at[model_hash, "recipe_json"])
        label = KIND_LABELS.get(kind, kind)
        if kind == "merge" and method:
            label = f"{label} ({method_label(method)})"
        info[model] = {"kind": kind, "label": label}
    return pd.DataFrame.from_dict(info, orient="index", columns=["kind", "label"])


def merge_method(recipe_json: str | None) -> str | None:
    if not isinstance(recipe_json, str):
        return None
    return json.loads(recipe_json).get("merge_method")


def language_averages(scores: pd.DataFrame) -> pd.DataFrame:
    """Models x language codes, in %: each language's average over its default-suite tasks that any
    model has in `scores` (tasks.averages: missing when the model lacks one of them); a language
    with none of them has no column."""
    per_task = scores.pivot_table(index="model", columns="task", values="value", aggfunc="last")
    averages = {}
    for lang, tasks in scores.groupby("lang")["task"]:
        expected = sorted(task for task in set(tasks) if _averaged(task))
        if not expected:
            continue
        values = [language_average(expected, per_task.loc[model].to_dict()).value for model in per_task.index]
        averages[lang] = [float("nan") if value is None else value * 100 for value in values]
    present = [code for code in LANGUAGES if code in averages] + sorted(set(averages) - set(LANGUAGES))
    return pd.DataFrame(averages, index=per_task.index)[present]


def partial_averages(scores: pd.DataFrame) -> dict[str, list[str]]:
    """Language code -> its default-suite tasks on the split that no model has in `scores`, for every
    language whose column averages fewer tasks than `harness eval` would (tasks.averages.language_tasks):
    the leaderboard states these instead of hiding the column."""
    partial = {}
    for lang, tasks in scores.groupby("lang")["task"]:
        present = {task for task in set(tasks) if _averaged(task)}
        if not present or lang not in LANGUAGES:
            continue
        try:
            split = parse_task_name(sorted(present)[0])[2]
        except TaskError:
            continue
        absent = [task for task in language_tasks(lang, split, present) if task not in present]
        if absent:
            partial[lang] = absent
    return partial


def _averaged(task: str) -> bool:
    """Whether a task counts in its language's average: its default suite, or a name outside the scheme."""
    try:
        return in_default_suite(task)
    except TaskError:
        return True


def overview_table(scores: pd.DataFrame, kinds: pd.DataFrame, shown_kinds: Iterable[str] | None = None) -> ScoreTable:
    """The paper's Table 3: models x languages (by name) + Average, with each model's kind; the
    control's column (English) and extra languages' after the Average, outside it."""
    by_lang = language_averages(scores)
    outside = [code for code in by_lang.columns if code in LANGUAGES and code not in TARGET_LANGUAGES]
    targets = by_lang[[code for code in by_lang.columns if code not in outside]]
    if not targets.columns.empty:
        targets = targets.assign(**{AVERAGE: targets.mean(axis=1, skipna=False)})
    table = pd.concat([targets, by_lang[outside]], axis=1)
    table.columns = [LANGUAGES[c].name if c in LANGUAGES else c for c in table.columns]
    return _with_kinds(table, list(table.columns), kinds, shown_kinds, "Average score per language (%)")


def language_table(
    scores: pd.DataFrame, lang: str, kinds: pd.DataFrame, shown_kinds: Iterable[str] | None = None
) -> ScoreTable:
    """The paper's Tables 7-13: for one language, models x its tasks + the language average."""
    rows = scores[scores["lang"] == lang]
    per_task = rows.pivot_table(index="model", columns="task", values="value", aggfunc="last") * 100
    tasks = sorted(per_task.columns, key=_family_rank)
    per_task = per_task[tasks]
    per_task.columns = [task_label(t) for t in tasks]
    score_columns = list(per_task.columns)
    averages = language_averages(rows)
    if score_columns and lang in averages.columns:
        per_task[AVERAGE] = averages[lang]
        score_columns.append(AVERAGE)
    name = LANGUAGES[lang].name if lang in LANGUAGES else lang
    return _with_kinds(per_task, score_columns, kinds, shown_kinds, f"{name}: score per task (%)")


def _family_rank(task: str) -> tuple[int, str]:
    """The paper's column order (FAMILIES' order); names outside the scheme last, by name."""
    families = list(FAMILIES)
    try:
        return families.index(parse_task_name(task)[0]), task
    except TaskError:
        return len(families), task


def _with_kinds(
    scores: pd.DataFrame,
    score_columns: list[str],
    kinds: pd.DataFrame,
    shown_kinds: Iterable[str] | None,
    title: str,
) -> ScoreTable:
    frame = scores.copy()
    frame.insert(0, KIND, [kinds.at[m, "label"] if m in kinds.index else "unknown" for m in frame.index])
    kind_codes = pd.Series([kinds.at[m, "kind"] if m in kinds.index else "unknown" for m in frame.index], frame.index)
    if shown_kinds is not None:
        frame = frame[kind_codes.isin(list(shown_kinds))]
        kind_codes = kind_codes[frame.index]
    # Rows grouped by kind in the paper's order, then by id.
    order = sorted(frame.index, key=lambda m: (_kind_rank(kind_codes[m]), m))
    frame = frame.loc[order]
    frame.index.name = "Model"
    return ScoreTable(frame=frame, score_columns=score_columns, title=title)


def _kind_rank(kind: str) -> int:
    return KINDS.index(kind) if kind in KINDS else len(KINDS)


def rank_marks(table: ScoreTable) -> pd.DataFrame:
    """"best" / "second" / "" per score cell: the highest and second-highest value of each column.

    Values are compared as displayed (rounded), so two cells that read the same get the same mark;
    missing cells get no mark.
    """
    marks = pd.DataFrame("", index=table.frame.index, columns=table.score_columns)
    for column in table.score_columns:
        shown = table.frame[column].round(DISPLAY_DECIMALS)
        distinct = sorted(shown.dropna().unique(), reverse=True)
        if distinct:
            marks.loc[shown == distinct[0], column] = "best"
        if len(distinct) > 1:
            marks.loc[shown == distinct[1], column] = "second"
    return marks


MARK_CSS = {"best": "font-weight: bold", "second": "text-decoration: underline", "": ""}


def styled(table: ScoreTable) -> "pd.io.formats.style.Styler":
    """The table as a pandas Styler: one decimal, a dash for missing, best bold, second underlined."""
    marks = rank_marks(table)
    css = pd.DataFrame("", index=table.frame.index, columns=table.frame.columns)
    css[table.score_columns] = marks.apply(lambda column: column.map(MARK_CSS))
    return (
        table.frame.style.format(precision=DISPLAY_DECIMALS, na_rep="–", subset=table.score_columns)
        .apply(lambda _: css, axis=None)
        # Streamlit draws each cell's text in an inline-block, which a td's underline does not reach.
        .set_table_styles([{"selector": "td *", "props": "text-decoration: inherit"}])
    )


def task_scores_table(scores: pd.DataFrame, model: str) -> pd.DataFrame:
    """One model's per-task scores of a split: task, language, metric, score and stderr (%), n."""
    rows = scores[scores["model"] == model]
    language_order = {code: i for i, code in enumerate(LANGUAGES)}
    rows = rows.assign(_order=rows["lang"].map(language_order)).sort_values(["_order", "task"])
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
