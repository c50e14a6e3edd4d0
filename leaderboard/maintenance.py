"""The paper's Table 2 (Dmonte et al.) from the measured times of `harness maintain` (store table
`maintenance_times`): what the initial build and the update of one language cost with one combined
adapter (COMB) against per-language adapters and a merge (INDV + merge).

Initial build: COMB trains once on everything; the INDV adapters train one after another
(sequential: the sum of their times) or at once on separate machines (parallel: the slowest one),
then the merge. Update of one language: COMB retrains on everything plus the extra data; the
merged approach retrains that language's adapter alone and re-makes the merge. Saving: how much
less time than COMB, in %. Quality: the model's test average where it has been evaluated.
"""

from collections.abc import Mapping

import pandas as pd

COLUMNS = ["phase", "approach", "model", "training s", "merge s", "total s", "saving %", "quality %"]


def experiments(times: pd.DataFrame) -> list[str]:
    """The stored experiments (`<lang>-x<F>`), in the order they were first stored."""
    return list(dict.fromkeys(times["experiment"]))


def cost_table(times: pd.DataFrame, quality: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Table 2 for one experiment's rows: one row per approach (and per merge), COMB first."""
    quality = quality or {}
    rows: list[dict] = []
    for phase in ("initial", "update"):
        steps = times[times["phase"] == phase]
        comb = steps[steps["role"] == "comb"].iloc[0]
        indv = steps[steps["role"] == "indv"]["seconds"]
        merges = steps[steps["role"] == "merge"]
        title = "initial build" if phase == "initial" else f"update {_experiment_label(times)}"
        rows.append(_row(title, "COMB", comb["evaluated_as"], comb["seconds"], None, comb["seconds"], quality))
        trainings = ({"INDV sequential": indv.sum(), "INDV parallel": indv.max()} if phase == "initial"
                     else {"INDV one adapter": indv.sum()})
        for approach, training in trainings.items():
            if merges.empty:
                rows.append(_row(title, approach, None, training, None, comb["seconds"], quality))
            for merge in merges.itertuples():
                rows.append(_row(title, f"{approach} + merge", merge.evaluated_as, training, merge.seconds,
                                 comb["seconds"], quality))
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(phase: str, approach: str, model: str | None, training: float, merge: float | None, comb: float,
         quality: Mapping[str, float]) -> dict:
    total = training + (merge or 0.0)
    saving = None if approach == "COMB" else 100 * (1 - total / comb)
    return {"phase": phase, "approach": approach, "model": model or "–", "training s": training, "merge s": merge,
            "total s": total, "saving %": saving, "quality %": quality.get(model) if model else None}


def _experiment_label(times: pd.DataFrame) -> str:
    first = times.iloc[0]
    return f"{first['lang']} (x{first['factor']} data)"
