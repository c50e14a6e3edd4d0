"""Statistical tie groups: the Compare view's paired bootstrap against each column's best, Holm-corrected."""

import json

import numpy as np
import pandas as pd
import pytest

from leaderboard import stats, tables, ties

TC, MATH = "lrm_mlic_tc_uig_test", "lrm_mlic_math_uig_test"
SIB_TAM = "lrm_sib_tam_test"
LANG = {TC: "uig", MATH: "uig", SIB_TAM: "tam"}
METRIC = {TC: "acc", MATH: "exact_match", SIB_TAM: "acc"}


def right_on(correct: range | list[int], n: int) -> pd.Series:
    """Per-item scores (index doc_id): 1 on the `correct` documents, 0 elsewhere."""
    return pd.Series([1.0 if doc in set(correct) else 0.0 for doc in range(n)], index=range(n))


def store(items: dict[tuple[str, str], pd.Series], *, logged: set | None = None, limited: set = frozenset()):
    """Score rows whose values are the items' means, and an item loader that knows the `logged` pairs."""
    rows = pd.DataFrame(
        [{"model": model, "task": task, "lang": LANG[task], "metric": METRIC[task], "filter": "none",
          "value": scores.mean(), "stderr": 0.05, "n": 5 if (model, task) in limited else len(scores),
          "split": "test", "model_hash": f"{model}-hash", "run_dir": None}
         for (model, task), scores in items.items()]
    )
    logged = set(items) if logged is None else logged
    return rows, lambda model, task: items[(model, task)] if (model, task) in logged else None


def kinds_of(models: dict[str, str]) -> pd.DataFrame:
    """Model id -> kind, as tables.model_kinds reads the models table (one-language ids, uig or tam)."""
    frame = pd.DataFrame({"model": list(models), "model_hash": [f"{m}-hash" for m in models]})
    records = pd.DataFrame({"model_hash": [f"{m}-hash" for m in models], "kind": list(models.values()),
                            "langs": [m.rsplit("-", 1)[1] if "-" in m else "" for m in models],
                            "recipe_json": [json.dumps({"merge_method": "ties"}) if k == "merge" else None
                                            for k in models.values()]})
    return tables.model_kinds(frame, records)


def verdicts(tests: list[ties.TieTest], column: str) -> dict[str, str]:
    return {test.row: test.verdict for test in tests if test.column == column}


def test_a_task_column_agrees_with_the_compare_views_test_after_holm():
    best, close, far = right_on(range(45), 50), right_on(range(44), 50), right_on(range(10), 50)
    items = {("best", TC): best, ("close", TC): close, ("far", TC): far}
    scores, load = store(items)
    table = tables.language_table(scores, "uig", kinds_of({"best": "base", "close": "base", "far": "base"}))
    tied, tests = ties.with_tie_groups(table, load)
    assert verdicts(tests, "TC") == {"close": ties.TIE, "far": ties.DIFFERENT}
    # Holm: both tested at 97.5% first; `far` differs and leaves, `close` is then tested alone at 95%,
    # which is the Compare view's test (A = the best, B = the model) on the same items.
    assert stats.compare_scores(best, far, confidence=0.975).significant
    assert not stats.compare_scores(best, close).significant
    close_test = next(t for t in tests if t.row == "close")
    assert close_test.confidence == 0.95 and close_test.diff == stats.compare_scores(best, close)
    assert tied.ties.at["close", "TC"] is True and tied.ties.at["far", "TC"] is False
    assert pd.isna(tied.ties.at["best", "TC"])  # the best is bold, not marked


def test_holm_keeps_rows_that_a_single_95_percent_test_would_separate():
    # Each of the two rows misses 4 of the best's 45 right answers: separated from the best at 95%, not at 97.5%.
    best = right_on(range(45), 50)
    rows = {"one": right_on(range(4, 45), 50), "two": right_on(range(41), 50)}
    for row in rows.values():
        assert stats.compare_scores(best, row).significant
        assert not stats.compare_scores(best, row, confidence=0.975).significant
    scores, load = store({("best", TC): best} | {(name, TC): row for name, row in rows.items()})
    table = tables.language_table(scores, "uig", kinds_of({"best": "base", "one": "base", "two": "base"}))
    _, tests = ties.with_tie_groups(table, load)
    assert verdicts(tests, "TC") == {"one": ties.TIE, "two": ties.TIE}
    assert {t.confidence for t in tests} == {0.975}


def test_a_language_cell_is_tested_on_its_tasks_weighted_as_in_its_average():
    items = {("a", TC): right_on(range(45), 50), ("a", MATH): right_on(range(4), 20),
             ("b", TC): right_on(range(30), 50), ("b", MATH): right_on(range(10), 20)}
    scores, load = store(items)
    table = tables.overview_table(scores, kinds_of({"a": "base", "b": "base"}))
    pooled_a, pooled_b = ties.paired_items(table, "Uyghur", "a", "b", load)
    assert len(pooled_a) == 70
    # The pooled means are the cells (TC and math weighted equally, not by their item counts).
    assert 100 * pooled_a.mean() == pytest.approx(table.frame.at["a", "Uyghur"]) == pytest.approx(55.0)
    assert 100 * pooled_b.mean() == pytest.approx(table.frame.at["b", "Uyghur"]) == pytest.approx(55.0)
    _, tests = ties.with_tie_groups(table, load)
    assert verdicts(tests, "Uyghur") == {"b": ties.TIE}


def test_a_familys_average_pools_its_members_across_languages():
    items = {("ties-uig", TC): right_on(range(40), 50), ("ties-tam", SIB_TAM): right_on(range(30), 40),
             ("ct-uig", TC): right_on(range(20), 50), ("ct-tam", SIB_TAM): right_on(range(10), 40)}
    scores, load = store(items)
    kinds = kinds_of({"ties-uig": "merge", "ties-tam": "merge", "ct-uig": "ct", "ct-tam": "ct"})
    table = tables.family_table(scores, kinds)
    assert list(table.frame.index) == ["CT-X", "TIES-X"]
    assert table.basis.members["TIES-X"] == {TC: "ties-uig", SIB_TAM: "ties-tam"}
    pooled_ct, pooled_ties = ties.paired_items(table, tables.AVERAGE, "CT-X", "TIES-X", load)
    assert 100 * pooled_ties.mean() == pytest.approx(table.frame.at["TIES-X", tables.AVERAGE]) == pytest.approx(77.5)
    assert 100 * pooled_ct.mean() == pytest.approx(table.frame.at["CT-X", tables.AVERAGE])
    _, tests = ties.with_tie_groups(table, load)
    assert {(t.column, t.row, t.best, t.verdict) for t in tests} == {
        (column, "CT-X", "TIES-X", ties.DIFFERENT) for column in ("Tamil", "Uyghur", tables.AVERAGE)}


def test_cells_without_logs_are_not_tested_and_limited_rows_not_compared():
    items = {("a", TC): right_on(range(45), 50), ("b", TC): right_on(range(44), 50),
             ("c", TC): right_on(range(43), 50), ("quick", TC): right_on(range(5), 5)}
    scores, load = store(items, logged={("a", TC), ("c", TC), ("quick", TC)}, limited={("quick", TC)})
    table = tables.language_table(scores, "uig", kinds_of({"a": "base", "b": "base", "c": "base", "quick": "base"}))
    tied, tests = ties.with_tie_groups(table, load)
    assert verdicts(tests, "TC") == {"b": ties.UNTESTED, "c": ties.TIE}  # quick: 5 items, a limit run
    assert pd.isna(tied.ties.at["b", "TC"]) and pd.isna(tied.ties.at["quick", "TC"])
    frame = ties.tests_frame([t for t in tests if t.column == "TC"]).set_index("Model")
    assert frame.at["b", "Interval"] == "–" and frame.at["c", "n shared"] == 50
    assert frame.at["c", "Δ (points)"] == pytest.approx(-4.0)


def test_tie_marks_in_the_styled_table():
    scores, load = store({("best", TC): right_on(range(45), 50), ("close", TC): right_on(range(44), 50)})
    table, _ = ties.with_tie_groups(tables.language_table(scores, "uig", kinds_of({"best": "base", "close": "base"})), load)
    html = tables.styled(table, intervals=True).to_html()
    assert f"88.0 ± 9.8 {tables.TIE_MARK}" in html and "90.0 ± 9.8<" in html
    assert np.array_equal(tables.tie_cells(table)["TC"].to_numpy(), [False, True])
