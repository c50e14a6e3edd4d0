"""A stored result stands in only for a run on the same data, few-shot count and backend.

The backend is a stand-in that returns lm-eval's results dict without a model, so these tests
check what is stored and skipped, not scores. The task is a real SIB-200 dev task read from two
local data folders made from the committed excerpt (tests/fixtures/data).
"""

import io
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.evaluate import print_report
from harness.evaluation import EvalSettings, ModelUnderTest, evaluate
from harness.store import ResultStore
from tasks import layout

FIXTURE_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
TASK = "lrm_sib_tel_dev"
MODEL = ModelUnderTest("tiny", Path("/m"), "f" * 64, "ct", ("tel",))


@pytest.fixture
def data_dirs(tmp_path) -> tuple[Path, Path]:
    """The fixture data, and a copy of it with one SIB-200 Telugu dev row's text changed."""
    original, edited = tmp_path / "data-a", tmp_path / "data-b"
    shutil.copytree(FIXTURE_DATA, original)
    shutil.copytree(FIXTURE_DATA, edited)
    dev = layout.sib200_file(edited, "tel_Telu", "dev")
    header, first, *rest = dev.read_text(encoding="utf-8").splitlines(keepends=True)
    index_id, category, _text = first.split("\t")
    dev.write_text(header + f"{index_id}\t{category}\tan edited sentence\n" + "".join(rest), encoding="utf-8")
    return original, edited


@pytest.fixture
def scored_items() -> list[list[int]]:
    return []


@pytest.fixture
def scoring(monkeypatch, scored_items) -> list[float]:
    """A backend that scores every task with the next value of the returned list, and records it
    (and the items it was asked to score, in `scored_items`)."""
    scores = []

    class FakeBackend:
        def evaluate_task(self, name, task, items):
            scores.append(0.1 * (len(scores) + 1))
            scored_items.append(items)
            return {"results": {name: {"alias": name, "acc,none": scores[-1], "acc_stderr,none": 0.01}},
                    "n-samples": {name: {"original": len(task.eval_docs), "effective": len(items)}}}

    @contextmanager
    def open_backend(model, settings, run_dir):
        yield FakeBackend()

    monkeypatch.setattr("harness.lm_eval_run.open_backend", open_backend)
    return scores


def run(data_dir: Path, store_url: str, backend: str = "hf", **settings) -> tuple[str, str]:
    """(status of the task, the report `harness eval` prints)."""
    report = evaluate(MODEL, [TASK], EvalSettings(split="dev", store_url=store_url, data_dir=data_dir,
                                                  backend=backend, progress=False, **settings))
    out = io.StringIO()
    print_report(report, out=out)
    return report.outcomes[0].status, out.getvalue()


def test_a_result_from_other_data_never_stands_in(data_dirs, scoring, tmp_path):
    original, edited = data_dirs
    store_url = f"sqlite:///{tmp_path / 'r.db'}"
    assert run(original, store_url)[0] == "evaluated"
    assert run(original, store_url)[0] == "skipped"  # the same data: stored already
    assert run(edited, store_url)[0] == "evaluated"  # one row differs: not the same result
    assert scoring == pytest.approx([0.1, 0.2])

    stored = ResultStore(store_url).results(latest_only=False)
    assert len(stored) == 2 and stored["data_hash"].nunique() == 2  # both kept, neither replaced

    status, report = run(original, store_url)
    assert status == "skipped"
    assert "0.1000" in report and "0.2000" not in report  # the original data's score, not the newer one


def test_another_few_shot_count_or_backend_is_evaluated_again(data_dirs, scoring, tmp_path):
    original, _ = data_dirs
    store_url = f"sqlite:///{tmp_path / 'r.db'}"
    assert run(original, store_url)[0] == "evaluated"
    assert run(original, store_url, num_fewshot=2)[0] == "evaluated"
    assert run(original, store_url, num_fewshot=2)[0] == "skipped"
    assert run(original, store_url, backend="vllm", server_url="http://127.0.0.1:9")[0] == "evaluated"
    stored = ResultStore(store_url).results(latest_only=False)
    assert sorted(zip(stored["num_fewshot"], stored["backend"])) == [(0, "hf"), (0, "server"), (2, "hf")]


def test_the_leaderboard_shows_a_task_once_as_last_evaluated(data_dirs, scoring, tmp_path):
    original, edited = data_dirs
    store_url = f"sqlite:///{tmp_path / 'r.db'}"
    run(original, store_url)
    run(edited, store_url)
    latest = ResultStore(store_url).results(latest_only=True)
    assert latest["value"].tolist() == pytest.approx([0.2])


# ---- --limit: a fixed sample, and only the identical sample stands in --------------------------

@pytest.fixture
def sorted_data(tmp_path) -> Path:
    """The fixture data with the SIB-200 Telugu dev rows sorted by topic, as the real files are."""
    data = tmp_path / "sorted"
    shutil.copytree(FIXTURE_DATA, data)
    dev = layout.sib200_file(data, "tel_Telu", "dev")
    header, *rows = dev.read_text(encoding="utf-8").splitlines(keepends=True)
    dev.write_text(header + "".join(sorted(rows, key=lambda row: row.split("\t")[1])), encoding="utf-8")
    return data


def topics_of(data: Path, items: list[int]) -> list[str]:
    _header, *rows = layout.sib200_file(data, "tel_Telu", "dev").read_text(encoding="utf-8").splitlines()
    return [rows[i].split("\t")[1] for i in items]


def test_limit_7_on_a_topic_sorted_file_covers_all_7_topics_the_same_for_every_model(
        sorted_data, scoring, scored_items, tmp_path):
    other_model = ModelUnderTest("other", Path("/o"), "e" * 64, "ct", ("tel",))
    for model in (MODEL, other_model, MODEL):
        evaluate(model, [TASK], EvalSettings(split="dev", store_url=f"sqlite:///{tmp_path / model.id}.db",
                                             data_dir=sorted_data, backend="hf", limit=7, force=True,
                                             progress=False))
    first, second, rerun = scored_items
    assert first == second == rerun  # one sample, whatever the model, run after run
    assert len(first) == 7 and len(set(topics_of(sorted_data, first))) == 7  # not 7 items of the first topic


def test_only_the_identical_item_set_stands_in(data_dirs, scoring, scored_items, tmp_path):
    original, _ = data_dirs
    store_url = f"sqlite:///{tmp_path / 'r.db'}"
    assert run(original, store_url, limit=10)[0] == "evaluated"
    assert run(original, store_url, limit=5)[0] == "evaluated"  # the 10-item result is not a 5-item one
    assert run(original, store_url)[0] == "evaluated"  # nor is either the full split
    assert run(original, store_url, limit=5)[0] == "skipped"  # the same 5-item sample: stored
    assert run(original, store_url, limit=100)[0] == "skipped"  # a limit past the split's size is the full run
    assert [len(items) for items in scored_items] == [10, 5, 21]  # the fixture split has 21 items
    stored = ResultStore(store_url).results(latest_only=False)
    assert sorted(stored["n"]) == [5, 10, 21] and stored["data_hash"].nunique() == 3  # the items are the identity


def test_the_report_says_how_many_items_each_score_is_over(data_dirs, scoring, tmp_path):
    original, _ = data_dirs
    _status, report = run(original, f"sqlite:///{tmp_path / 'r.db'}", limit=5)
    header, _index_name, row = report.splitlines()[3:6]
    assert header.split() == ["acc", "items"] and row.split() == [TASK, "0.1000", "5"]  # the task's row: 5 items
    assert "--limit 5: a fixed, seeded sample of 5 items per task" in report
