"""A stored sweep trial stands in only for a trial scored on the same items of the same data, with the
same few-shot counts and backend (harness.evaluation.scoring_identity, store column scoring_hash)."""

import shutil
from pathlib import Path

from harness.evaluation import EvalSettings, scoring_identity
from harness.store import ResultStore, SweepId, TrialRow, stored_trial_scores, write_sweep_trial
from tasks import layout

FIXTURE_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
DEV_TASKS = ["lrm_sib_tel_dev"]
SWEEP = SweepId("ties-tel", "densities")


def identity(data_dir: Path, **settings) -> str:
    return scoring_identity(DEV_TASKS, EvalSettings(split="dev", data_dir=data_dir, **{"backend": "hf", **settings}))


def trial(scoring_hash: str, score: float, limit: int | None) -> TrialRow:
    return TrialRow(SWEEP, "ties-tel@d0.2", "same-model-hash", {"density": 0.2}, {}, "dev", limit, score,
                    {"tel": score}, scoring_hash)


def test_the_scoring_identity_changes_with_items_data_few_shot_and_backend(tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(FIXTURE_DATA, edited)
    dev = layout.sib200_file(edited, "tel_Telu", "dev")
    dev.write_text(dev.read_text(encoding="utf-8").rstrip("\n") + " (edited)\n", encoding="utf-8")  # the last text

    base = identity(FIXTURE_DATA, limit=5)
    assert identity(FIXTURE_DATA, limit=5) == base  # the same run: the same identity
    assert len({base, identity(FIXTURE_DATA, limit=10), identity(FIXTURE_DATA), identity(edited),
                identity(FIXTURE_DATA, limit=5, num_fewshot=1), identity(FIXTURE_DATA, limit=5, backend="vllm")}) == 6


def test_a_trial_from_other_items_is_never_reused(tmp_path):
    store = ResultStore(f"sqlite:///{tmp_path / 'r.db'}")
    ten_items, five_items = identity(FIXTURE_DATA, limit=10), identity(FIXTURE_DATA, limit=5)
    write_sweep_trial(store, trial(ten_items, 0.7, 10))
    assert stored_trial_scores(store, SWEEP, five_items) == {}  # the point's 10-item score is not a 5-item one
    write_sweep_trial(store, trial(five_items, 0.4, 5))
    assert stored_trial_scores(store, SWEEP, five_items) == {"same-model-hash": (0.4, {"tel": 0.4})}
    assert stored_trial_scores(store, SWEEP, ten_items) == {"same-model-hash": (0.7, {"tel": 0.7})}  # both kept
