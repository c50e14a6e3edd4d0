"""The task data: sizes and labels on excerpts of the real files, the dev/test carves, and bad data."""

import json
import re
import shutil

import pytest

from tasks import layout
from tasks.errors import TaskError
from tasks.utils import belebele_side, extract_final_number, math_results, mgsm_dev_rows, read_task_docs

SIB_LABELS = {"science/technology", "travel", "politics", "sports", "health", "entertainment", "geography"}


# The MGSM dev rows of the full 250-row file: pinned, because stored dev scores are only comparable
# while the same 50 problems stay on the dev side (on every machine, in every Python process).
MGSM_DEV_ROWS_OF_250 = {
    5, 7, 10, 19, 33, 37, 39, 43, 56, 58, 60, 61, 62, 69, 70, 74, 91, 92, 93, 102, 108, 118, 119, 120, 123,
    129, 131, 140, 143, 149, 151, 153, 156, 157, 159, 162, 166, 170, 180, 183, 184, 194, 195, 229, 230, 231,
    235, 237, 238, 242,
}
NUMBER = re.compile(r"-?\d+(\.\d+)?")


@pytest.mark.parametrize("lang", ["tam", "tel", "ory", "ben", "eng", "bod", "uig", "khk"])
def test_sib200_real_files_sizes_and_labels(real_data, lang):
    test, _ = read_task_docs("sib", lang, "test", real_data)
    dev, _ = read_task_docs("sib", lang, "dev", real_data)
    assert (len(dev), len(test)) == (21, 21)  # the excerpt: 3 rows of each topic (fixtures README)
    assert {doc["labels"][doc["answer"]] for doc in test} == SIB_LABELS
    assert set(test[0]["labels"]) == SIB_LABELS and len(test[0]["labels"]) == 7
    assert not {d["id"] for d in dev} & {d["id"] for d in test}


@pytest.mark.parametrize("lang", ["tel", "ben", "eng"])
def test_mgsm_real_files_carve_a_fifth_for_dev_without_overlap(real_data, lang):
    dev, _ = read_task_docs("mgsm", lang, "dev", real_data)
    test, _ = read_task_docs("mgsm", lang, "test", real_data)
    assert (len(dev), len(test)) == (5, 20)  # the excerpt's 25 rows
    assert [int(d["id"].rsplit("-", 1)[1]) for d in dev] == [5, 6, 7, 10, 19]  # ids end in the row number
    assert not {d["question"] for d in dev} & {d["question"] for d in test}
    assert all(NUMBER.fullmatch(d["answer"]) for d in dev + test)


def test_mgsm_dev_rows_are_pinned_and_the_same_problems_in_both_languages(real_data):
    assert mgsm_dev_rows(250) == MGSM_DEV_ROWS_OF_250
    assert mgsm_dev_rows(25) == {5, 6, 7, 10, 19}
    tel = [d["answer"] for d in read_task_docs("mgsm", "tel", "dev", real_data)[0]]
    ben = [d["answer"] for d in read_task_docs("mgsm", "ben", "dev", real_data)[0]]
    eng = [d["answer"] for d in read_task_docs("mgsm", "eng", "dev", real_data)[0]]
    assert tel == ben == eng  # parallel files: the same rows, so the same answers


def test_english_sib200_is_parallel_to_the_target_languages(real_data):
    for split in ("dev", "test"):
        eng = [(d["id"], d["answer"]) for d in read_task_docs("sib", "eng", split, real_data)[0]]
        assert eng == [(d["id"], d["answer"]) for d in read_task_docs("sib", "tam", split, real_data)[0]]
    assert read_task_docs("sib", "eng", "test", real_data)[0][0]["text"].startswith("Mutation adds new genetic variation")


def test_sib200_is_read_from_the_benchmarks_own_language_folders(real_data, tmp_path):
    """bod reads sib200/bod_Tibt/ (SIB-200's code), the same parallel items as every other language."""
    tam = [(d["id"], d["answer"]) for d in read_task_docs("sib", "tam", "test", real_data)[0]]
    for lang in ("bod", "uig", "khk"):
        assert [(d["id"], d["answer"]) for d in read_task_docs("sib", lang, "test", real_data)[0]] == tam
    assert read_task_docs("sib", "khk", "test", real_data)[0][0]["text"].startswith("Мутаци")
    (tmp_path / "sib200" / "bo").mkdir(parents=True)  # the paper's code is not a SIB-200 folder name
    with pytest.raises(TaskError, match=r"^lrm_sib_bod_test: missing data file .*/sib200/bod_Tibt/test.tsv$"):
        read_task_docs("sib", "bod", "test", tmp_path)


def test_english_mlic_eval_is_zoo_data_only(real_data, monkeypatch):
    def no_download(*_args, **_kwargs):
        raise AssertionError("the hub has no English MLiC-Eval: nothing may be downloaded")

    monkeypatch.setattr("huggingface_hub.snapshot_download", no_download)
    with pytest.raises(TaskError, match=r"^lrm_mlic_tc_eng_test: MLiC-Eval text classification has no real "
                                        r"English split; only the zoo's synthetic data has this task"):
        read_task_docs("mlic_tc", "eng", "test", None)
    # A real local folder has no English MLiC-Eval either: the usual missing-folder error, one line.
    with pytest.raises(TaskError, match=r"^lrm_mlic_rs_eng_dev: missing data folder .*/response_selection/en$"):
        read_task_docs("mlic_rs", "eng", "dev", real_data)


def test_a_family_outside_the_languages_datasets_is_an_error(real_data):
    with pytest.raises(TaskError, match=r"^lrm_mgsm_tam_test: MGSM grade-school math has no Tamil data$"):
        read_task_docs("mgsm", "tam", "test", real_data)
    with pytest.raises(TaskError, match=r"^lrm_belebele_uig_test: Belebele reading comprehension has no Uyghur data$"):
        read_task_docs("belebele", "uig", "test", real_data)


def test_belebele_carve_keeps_articles_on_one_side(data_dir):
    dev, _ = read_task_docs("belebele", "tam", "dev", data_dir)
    test, _ = read_task_docs("belebele", "tam", "test", data_dir)
    assert len(dev) + len(test) == 108 and dev and test
    link = lambda doc: doc["id"].split("#")[0]  # noqa: E731
    assert not {link(d) for d in dev} & {link(d) for d in test}
    assert not {d["id"] for d in dev} & {d["id"] for d in test}
    other = read_task_docs("belebele", "ben", "dev", data_dir)[0]
    assert [d["id"] for d in other] == [d["id"] for d in dev]  # same articles in every language
    assert dev[0]["options"] == ["first", "second", "third", "fourth"] and 0 <= dev[0]["answer"] < 4


def test_belebele_dev_share_is_about_a_tenth():
    sides = [belebele_side(f"https://en.wikinews.org/wiki/Story_{i}") for i in range(2000)]
    assert 0.08 < sides.count("dev") / len(sides) < 0.12


def test_mlic_uses_dev_json_and_train_exemplars(data_dir):
    dev, exemplars = read_task_docs("mlic_rs", "uig", "dev", data_dir)
    test, _ = read_task_docs("mlic_rs", "uig", "test", data_dir)
    assert (len(dev), len(test), len(exemplars)) == (4, 8, 9)
    assert not {d["id"] for d in dev} & {d["id"] for d in test}
    assert dev[0]["dialogue"] == "A: hello 0 from dev\nB: hi" and dev[0]["answer"] == 1
    mrc, _ = read_task_docs("mlic_mrc", "bod", "test", data_dir)
    assert mrc[1]["passage"] == "A: turn 1\nB: reply" and mrc[1]["question"] == "who spoke?" and mrc[1]["answer"] == 1
    tc, _ = read_task_docs("mlic_tc", "mvf", "test", data_dir)
    assert tc[0]["labels"] == sorted(["politics", "economy", "culture", "sports"])
    assert tc[0]["labels"][tc[0]["answer"]] == "politics"
    math, _ = read_task_docs("mlic_math", "mvf", "test", data_dir)
    assert math[3] == {"id": "mn-math-test-3", "question": "3 + 2 = ?", "answer": "5"}


def test_mlic_without_dev_json_uses_train_1_to_3(data_dir, tmp_path):
    folder = layout.mlic_dir(tmp_path, "math", "ug")
    shutil.copytree(layout.mlic_dir(data_dir, "math", "ug"), folder)
    (folder / "dev.json").unlink()
    dev, exemplars = read_task_docs("mlic_math", "uig", "dev", tmp_path)
    test, test_exemplars = read_task_docs("mlic_math", "uig", "test", tmp_path)
    assert len(dev) == 9 and exemplars == []  # train_1..3 are the dev items, so not exemplars
    assert len(test) == 8 and len(test_exemplars) == 9
    assert not {d["id"] for d in dev} & {d["id"] for d in test}


def test_mlic_renamed_release_folder_is_found(data_dir, tmp_path):
    renamed = tmp_path / "mlic-eval" / "data" / "text_classification_passage" / "bo"
    shutil.copytree(layout.mlic_dir(data_dir, "tc", "bo"), renamed)
    assert len(read_task_docs("mlic_tc", "bod", "test", tmp_path)[0]) == 8


# ---- bad data: one line, naming the task and the file ---------------------------------------------

def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    with pytest.raises(TaskError) as err:
        read_task_docs("sib", "tam", "test", tmp_path)
    assert _one_line(err) == f"lrm_sib_tam_test: missing data file {tmp_path / 'sib200/tam_Taml/test.tsv'}"


def test_missing_column(tmp_path, real_data):
    folder = tmp_path / "sib200" / "tam_Taml"
    folder.mkdir(parents=True)
    shutil.copy(real_data / "sib200/tam_Taml/labels.txt", folder)
    (folder / "dev.tsv").write_text("index_id\ttopic\ttext\n1\ttravel\thello\n")
    with pytest.raises(TaskError) as err:
        read_task_docs("sib", "tam", "dev", tmp_path)
    assert _one_line(err) == f"lrm_sib_tam_dev: {folder / 'dev.tsv'} has no column 'category' (item 1)"


def test_missing_column_in_belebele_and_mlic(data_dir, tmp_path):
    path = layout.belebele_file(tmp_path, "tel_Telu")
    path.parent.mkdir(parents=True)
    rows = [json.loads(line) for line in layout.belebele_file(data_dir, "tel_Telu").read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "flores_passage"}) + "\n" for r in rows))
    with pytest.raises(TaskError, match=r"^lrm_belebele_tel_test: .*tel_Telu.jsonl has no column 'flores_passage'"):
        read_task_docs("belebele", "tel", "test", tmp_path)
    folder = layout.mlic_dir(tmp_path, "rs", "mn")
    shutil.copytree(layout.mlic_dir(data_dir, "rs", "mn"), folder)
    (folder / "test.json").write_text(json.dumps([{"id": "1", "context": ["hi"], "answer": "A"}]))
    with pytest.raises(TaskError, match=r"^lrm_mlic_rs_mvf_test: .*test.json has no column 'options'"):
        read_task_docs("mlic_rs", "mvf", "test", tmp_path)


def test_empty_split(tmp_path):
    (tmp_path / "mgsm").mkdir()
    (tmp_path / "mgsm" / "mgsm_bn.tsv").write_text("")
    with pytest.raises(TaskError) as err:
        read_task_docs("mgsm", "ben", "dev", tmp_path)
    assert _one_line(err) == f"lrm_mgsm_ben_dev: no dev items in {tmp_path / 'mgsm/mgsm_bn.tsv'}"


def test_malformed_rows_name_the_line(tmp_path):
    (tmp_path / "mgsm").mkdir()
    (tmp_path / "mgsm" / "mgsm_te.tsv").write_text("q1\t3\nq2 without answer\n")
    with pytest.raises(TaskError, match=r"^lrm_mgsm_tel_test: .*mgsm_te.tsv line 2 has 1 columns, expected 2"):
        read_task_docs("mgsm", "tel", "test", tmp_path)


def test_data_that_is_not_utf8_names_the_task_and_the_file(tmp_path, data_dir):
    (tmp_path / "mgsm").mkdir()
    (tmp_path / "mgsm" / "mgsm_te.tsv").write_bytes("q1\t3\n".encode() + b"\xff\xfe\t4\n")
    with pytest.raises(TaskError, match=r"^lrm_mgsm_tel_test: .*mgsm_te.tsv is not UTF-8 text \(byte 5"):
        read_task_docs("mgsm", "tel", "test", tmp_path)
    folder = layout.mlic_dir(tmp_path, "rs", "mn")
    shutil.copytree(layout.mlic_dir(data_dir, "rs", "mn"), folder)
    (folder / "test.json").write_bytes(b'[{"context": ["\xc3"]}]')
    with pytest.raises(TaskError, match=r"^lrm_mlic_rs_mvf_test: .*test.json is not UTF-8 text"):
        read_task_docs("mlic_rs", "mvf", "test", tmp_path)


def test_a_null_value_or_a_label_without_english_is_refused_not_scored(data_dir, tmp_path):
    folder = layout.mlic_dir(tmp_path, "tc", "ug")
    shutil.copytree(layout.mlic_dir(data_dir, "tc", "ug"), folder)
    rows = json.loads((folder / "test.json").read_text(encoding="utf-8"))
    (folder / "test.json").write_text(json.dumps([{**rows[0], "text": None}, *rows[1:]]), encoding="utf-8")
    with pytest.raises(TaskError, match=r"^lrm_mlic_tc_uig_test: .*test.json item 1 has no value \(null\) for 'text'"):
        read_task_docs("mlic_tc", "uig", "test", tmp_path)
    (folder / "test.json").write_text(json.dumps([{**rows[0], "label": {"zh": "体育"}}, *rows[1:]]), encoding="utf-8")
    with pytest.raises(TaskError, match=r"^lrm_mlic_tc_uig_test: .* has a label without an English name \('en'\)"):
        read_task_docs("mlic_tc", "uig", "test", tmp_path)


# ---- math scoring ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, number", [
    (" The answer is 42.", 42.0),
    (" 3 apples and 4 pears make 7. The answer is 1,250.", 1250.0),
    ("She pays 64 dollars", 64.0),
    (" The answer is ৪২.", 42.0),  # Bengali digits
    (" The answer is ౬౪", 64.0),  # Telugu digits
    (" The answer is -3.5", -3.5),
    ("no number here", None),
])
def test_extract_final_number(text, number):
    assert extract_final_number(text) == number


def test_math_results_reports_exact_match_and_acc():
    assert math_results({"answer": "18"}, [" The answer is 18."]) == {"exact_match": 1.0, "acc": 1.0}
    assert math_results({"answer": "18"}, [" The answer is 17. Then 18"]) == {"exact_match": 0.0, "acc": 0.0}
