"""The hub code paths (no hub here): each dataset is asked for with its real id, config and split,
and its hub schema is mapped like the local files."""

import json

import pytest

from tasks import utils
from tasks.suite import data_env
from tasks.utils import read_task_docs


@pytest.fixture
def hub(monkeypatch):
    """Replace datasets.load_dataset with a recorder that serves rows in each dataset's hub schema."""
    import datasets

    calls = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        if path == utils.SIB_HUB:
            row = lambda i, split: {"index_id": i, "category": utils.SIB_LABELS[i % 7], "text": f"{split} {i}"}  # noqa: E731
            return {s: [row(i, s) for i in range(n)] for s, n in (("train", 14), ("validation", 7), ("test", 21))}
        if path == utils.BELEBELE_HUB:
            return [{"link": f"https://example.org/{i // 2}", "question_number": 1 + i % 2, "flores_passage": "p",
                     "question": "q", "mc_answer1": "a", "mc_answer2": "b", "mc_answer3": "c", "mc_answer4": "d",
                     "correct_answer_num": "2", "dialect": name, "ds": "2023"} for i in range(400)]
        if path == utils.MGSM_HUB:
            return [{"question": f"q{i}", "answer": None, "answer_number": i, "equation_solution": None} for i in range(250)]
        raise AssertionError(f"unexpected hub dataset {path}")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    for key, value in data_env(None).items():
        monkeypatch.setenv(key, value)
    return calls


def test_sib_from_the_hub_uses_validation_as_dev(hub):
    dev, exemplars = read_task_docs("sib", "tam", "dev", utils.data_dir_from_env())
    assert hub == [("Davlan/sib200", "tam_Taml", None)]
    assert len(dev) == 7 and len(exemplars) == 14 and dev[0]["text"] == "validation 0"
    assert dev[3]["labels"][dev[3]["answer"]] == utils.SIB_LABELS[3]


def test_belebele_and_mgsm_from_the_hub_are_carved(hub):
    dev = read_task_docs("belebele", "ory", "dev", None)[0]
    test = read_task_docs("belebele", "ory", "test", None)[0]
    assert hub[0] == ("facebook/belebele", "ory_Orya", "test")
    assert len(dev) + len(test) == 400 and dev and dev[0]["answer"] == 1
    mgsm_dev = read_task_docs("mgsm", "ben", "dev", None)[0]
    mgsm_test = read_task_docs("mgsm", "ben", "test", None)[0]
    assert ("juletxara/mgsm", "bn", "test") in hub
    assert (len(mgsm_dev), len(mgsm_test)) == (50, 200)
    assert {d["answer"] for d in mgsm_dev} == {str(i) for i in utils.mgsm_dev_rows(250)}


def test_mlic_from_the_hub_downloads_the_task_folder(monkeypatch, tmp_path):
    import huggingface_hub

    folder = tmp_path / "snapshot" / "data" / "text_classification_passage" / "ug"
    folder.mkdir(parents=True)
    rows = [{"id": str(i), "text": f"t{i}", "label": {"en": "news" if i % 2 else "sport", "zh": "-"}} for i in range(6)]
    for name in ("train_1", "train_2", "train_3", "dev", "test"):
        (folder / f"{name}.json").write_text(json.dumps(rows))
    requests = []

    def snapshot_download(repo_id, repo_type=None, allow_patterns=None, **kwargs):
        requests.append((repo_id, repo_type, allow_patterns))
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    test, exemplars = read_task_docs("mlic_tc", "uig", "test", None)
    assert requests == [("pkupie/milic-eval", "dataset",
                         ["*text_classification/ug/*.json", "*text_classification_passage/ug/*.json"])]
    assert len(test) == 6 and len(exemplars) == 18 and test[0]["labels"] == ["news", "sport"]


def test_hub_failure_is_one_line_naming_the_task(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'Davlan/sib200' on the Hub\n(LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(Exception) as err:
        read_task_docs("sib", "ben", "test", None)
    assert str(err.value) == ("lrm_sib_ben_test: cannot load hub dataset Davlan/sib200 (ben_Beng): "
                              "Couldn't reach 'Davlan/sib200' on the Hub (LocalEntryNotFoundError)")
