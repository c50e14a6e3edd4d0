"""The maintenance cost view (the paper's Table 2) from harness maintain's measured times."""

import pandas as pd
import pytest

from harness.store import ResultStore, TimedStep, write_maintenance
from leaderboard.maintenance import cost_table
from tests.leaderboard.conftest import result_row
from tests.leaderboard.test_app import open_app, show

# Three languages: INDV adapters 10, 20 and 30 s, COMB 100 s, the merge 2 s; the update of uig:
# its adapter 40 s, COMB 120 s, the re-merge 3 s.
STEPS = [
    TimedStep("initial", "indv", "lora-tam", "lora-tam", 10.0, 60, 480),
    TimedStep("initial", "indv", "lora-tel", "lora-tel", 20.0, 60, 480),
    TimedStep("initial", "indv", "lora-uig", "lora-uig", 30.0, 60, 480),
    TimedStep("initial", "comb", "lora-comb", "lora-comb", 100.0, 180, 1440),
    TimedStep("initial", "merge", "lora-ties", "lora-ties", 2.0),
    TimedStep("update", "indv", "lora-uig", "lora-uig@uig-x2", 40.0, 120, 960),
    TimedStep("update", "comb", "lora-comb", "lora-comb@uig-x2", 120.0, 240, 1920),
    TimedStep("update", "merge", "lora-ties", "lora-ties@uig-x2", 3.0),
]


def times(steps=STEPS) -> pd.DataFrame:
    return pd.DataFrame([{"experiment": "uig-x2", "lang": "uig", "factor": 2, **vars(step)} for step in steps])


def test_table2_initial_build_and_update_against_comb():
    table = cost_table(times(), {"lora-comb": 40.0, "lora-ties@uig-x2": 35.5})
    rows = table.set_index("approach").drop(columns="phase")
    assert list(table["phase"]) == ["initial build"] * 3 + ["update uig (x2 data)"] * 2
    assert list(rows.index) == ["COMB", "INDV sequential + merge", "INDV parallel + merge", "COMB",
                                "INDV one adapter + merge"]
    initial, update = table.iloc[:3], table.iloc[3:]
    assert list(initial["total s"]) == [100.0, 62.0, 32.0]  # the sum, the slowest adapter, each + the merge
    assert list(initial["saving %"].round(6))[1:] == [38.0, 68.0]
    assert list(update["training s"]) == [120.0, 40.0] and list(update["total s"]) == [120.0, 43.0]
    assert update["saving %"].iloc[1] == pytest.approx(100 * (1 - 43 / 120))
    assert list(table["model"]) == ["lora-comb", "lora-ties", "lora-ties", "lora-comb@uig-x2", "lora-ties@uig-x2"]
    assert table["quality %"].iloc[0] == 40.0 and table["quality %"].iloc[4] == 35.5
    assert pd.isna(table["quality %"].iloc[1])  # not evaluated: no quality, never 0
    assert pd.isna(table["saving %"].iloc[0]) and pd.isna(table["merge s"].iloc[0])


def test_table2_has_a_row_per_merge_and_plain_indv_rows_without_merges():
    second_merge = [TimedStep("initial", "merge", "lora-dare-ties", "lora-dare-ties", 5.0),
                    TimedStep("update", "merge", "lora-dare-ties", "lora-dare-ties@uig-x2", 6.0)]
    with_two = cost_table(times(STEPS + second_merge))
    assert list(with_two["model"])[1:5] == ["lora-ties", "lora-dare-ties", "lora-ties", "lora-dare-ties"]
    assert list(with_two["total s"])[1:5] == [62.0, 65.0, 32.0, 35.0]
    without = cost_table(times([step for step in STEPS if step.role != "merge"]))
    assert list(without["approach"]) == ["COMB", "INDV sequential", "INDV parallel", "COMB", "INDV one adapter"]
    assert list(without["total s"]) == [100.0, 60.0, 30.0, 120.0, 40.0]


def test_maintenance_view_shows_table2_beside_the_quality(store_url, monkeypatch):
    store = ResultStore(store_url)
    write_maintenance(store, "uig-x2", "uig", 2, STEPS)
    scores = {"sib_tam": 0.5, "belebele_tam": 0.3, "sib_tel": 0.4, "mgsm_tel": 0.2, "mlic_tc_uig": 0.6, "mlic_math_uig": 0.1}
    for short, value in scores.items():  # lora-comb on every language of the store: Average 35
        store.write_task_results([result_row("lora-comb", "hash-lora-comb", short, value, n=20 if "math" in short else 50)])
    store.engine.dispose()
    app = show(open_app(store_url, monkeypatch), "Maintenance")
    assert app.selectbox(key="maintenance-experiment").value == "uig-x2"
    [table] = app.table
    frame = table.value
    assert list(frame["total s"]) == [100.0, 62.0, 32.0, 120.0, 43.0]
    assert frame["quality %"].iloc[0] == pytest.approx(35.0)
    assert pd.isna(frame["quality %"].iloc[3])


def test_maintenance_view_without_experiments_says_how_to_run_one(empty_store_url, monkeypatch):
    app = show(open_app(empty_store_url, monkeypatch), "Maintenance")
    assert "harness maintain --update uig" in app.info[0].value
