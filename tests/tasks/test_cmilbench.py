"""CMiLBench (GitHub 4real3000/CMiLBench) as three task families for bod/uig/mvf: the loaders on a
fixture in its own file layout and JSON schema (no CMiLBench text: SIB-200 sentences and synthetic
Mongolian, tests/fixtures/data/make_cmilbench.py), the topic mapping, the dev/test carve, bad rows,
the ROUGE-L scoring, and an lm-eval run of the reading-comprehension task into the store."""

import json
import re
import shutil

import pytest

from harness.store import ResultStore
from leaderboard import tables
from leaderboard.data import main_metric_lookup, read_store
from tasks import layout
from tests.tasks.conftest import eval_tiny_bod
from tasks.errors import MissingTaskData, TaskError
from tasks.suite import families_of, main_metric
from tasks.utils import (CMILBENCH_TOPICS, SIB_LABELS, cmilbench_side, extractive_reading_results, read_task_docs,
                         rouge_l)

LANGS = {"bod": "bo", "uig": "ug", "mvf": "mn"}  # the harness's code: CMiLBench's
FAMILIES = ("cmil_tc", "cmil_mrc", "cmil_math")
# The fixture's items by number (ids end in _<code>_<number>), the same items in every language
# (tests/fixtures/data/README.md); the dev side is pinned, as stored dev scores depend on it.
DEV_NUMBERS = {"cmil_tc": ["18", "21"], "cmil_mrc": ["3", "7"], "cmil_math": ["9", "15"]}
TEST_SIZES = {"cmil_tc": 7, "cmil_mrc": 3, "cmil_math": 3}


def number(doc: dict) -> str:
    return doc["id"].rsplit("_", 1)[1]


def docs(family: str, lang: str, split: str, data_dir) -> list[dict]:
    return read_task_docs(family, lang, split, data_dir)[0]


@pytest.mark.parametrize("lang", list(LANGS))
@pytest.mark.parametrize("family", FAMILIES)
def test_the_repositorys_own_files_load_and_carve_a_pinned_disjoint_dev(real_data, family, lang):
    dev, test = docs(family, lang, "dev", real_data), docs(family, lang, "test", real_data)
    assert sorted(map(number, dev), key=int) == DEV_NUMBERS[family] and len(test) == TEST_SIZES[family]
    assert not {d["id"] for d in dev} & {d["id"] for d in test}
    assert all(f"_{LANGS[lang]}_" in d["id"] for d in dev + test)  # read from <code>.json
    assert read_task_docs(family, lang, "test", real_data)[1] == []  # no exemplars: CMiLBench has no train split


def test_classification_shows_sib200s_english_topics(real_data):
    for lang in LANGS:
        test = docs("cmil_tc", lang, "test", real_data)
        assert all(doc["labels"] == list(SIB_LABELS) for doc in test)
        assert {doc["labels"][doc["answer"]] for doc in test} == set(SIB_LABELS)  # the fixture has every topic once
    # parallel items keep their topic in every language
    topics = {lang: {number(d): d["answer"] for d in docs("cmil_tc", lang, "test", real_data)} for lang in LANGS}
    assert topics["bod"] == topics["uig"] == topics["mvf"]
    first = json.loads(layout.cmilbench_file(real_data, "tc", "bo").read_text(encoding="utf-8"))[0]
    [doc] = [d for d in docs("cmil_tc", "bod", "test", real_data) if d["id"] == first["id"]]
    assert (first["label"], doc["labels"][doc["answer"]], doc["text"]) == ("科技", "science/technology", first["text"])


def test_the_topic_mapping_is_one_to_one_onto_sib200s_seven():
    assert sorted(CMILBENCH_TOPICS.values()) == sorted(SIB_LABELS) and len(CMILBENCH_TOPICS) == 7
    assert CMILBENCH_TOPICS["科技"] == "science/technology" and CMILBENCH_TOPICS["娱乐"] == "entertainment"


def test_reading_comprehension_and_math_items(real_data):
    mrc = docs("cmil_mrc", "uig", "test", real_data)
    assert all(set(d) == {"id", "passage", "question", "answer"} and d["answer"].strip() for d in mrc)
    math = {lang: {number(d): d["answer"] for d in docs("cmil_math", lang, "test", real_data)} for lang in LANGS}
    assert math["bod"] == math["uig"] == math["mvf"] == {"1": "42", "2": "21", "3": "4"}  # bo's are JSON strings


def sib200_topics(real_data, flores: str) -> dict[str, str]:
    """{sentence: topic} of the committed SIB-200 excerpt of one language, dev and test."""
    rows = [line.split("\t") for split in ("dev", "test")
            for line in (real_data / "sib200" / flores / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    return {text: topic for _index_id, topic, text in rows}


def test_the_fixture_holds_sib200_text_and_synthetic_mongolian_only(real_data):
    # CMiLBench states no licence, so none of its text may be here (tests/fixtures/data/README.md)
    for lang, flores in (("bod", "bod_Tibt"), ("uig", "uig_Arab")):
        topic_of = sib200_topics(real_data, flores)
        for split in ("dev", "test"):
            for doc in docs("cmil_tc", lang, split, real_data):
                assert topic_of[doc["text"]] == doc["labels"][doc["answer"]]  # a SIB-200 sentence of its topic
            for doc in docs("cmil_mrc", lang, split, real_data):
                rest = doc["passage"]
                for sentence in topic_of:
                    rest = rest.replace(sentence, "")
                assert rest.strip() == "" and doc["answer"] in doc["passage"]  # SIB-200 sentences; a span of them
    mongolian = re.compile(r"[\u1800-\u18af\s\d?]+")  # the zoo's made-up words, digits, its punctuation
    for family, field in (("cmil_tc", "text"), ("cmil_mrc", "passage"), ("cmil_mrc", "answer"), ("cmil_math", "question")):
        for split in ("dev", "test"):
            assert all(mongolian.fullmatch(doc[field]) for doc in docs(family, "mvf", split, real_data))


def test_the_carve_hashes_the_id_without_its_language_code():
    assert cmilbench_side("foundation_tasks_math_reasoning_bo_67", "bo") == "dev"
    assert cmilbench_side("foundation_tasks_math_reasoning_mn_67", "mn") == "dev"
    assert cmilbench_side("foundation_tasks_math_reasoning_ug_65", "ug") == "test"
    sides = [cmilbench_side(f"foundation_tasks_text_classification_bo_{i}", "bo") for i in range(2000)]
    assert 0.08 < sides.count("dev") / len(sides) < 0.12


def test_cmilbench_is_not_on_the_hub(monkeypatch):
    def no_download(*_args, **_kwargs):
        raise AssertionError("CMiLBench has no hub copy: nothing may be downloaded")

    monkeypatch.setattr("datasets.load_dataset", no_download)
    with pytest.raises(MissingTaskData, match=r"^lrm_cmil_tc_bod_test: CMiLBench text classification \(SIB-200 topics\) "
                                              r"is not on the hub; give --data-dir"):
        read_task_docs("cmil_tc", "bod", "test", None)


def test_only_the_languages_cmilbench_has_get_its_tasks():
    assert [f for f in families_of("bod", "all") if f.startswith("cmil_")] == list(FAMILIES)
    assert not [f for f in families_of("bod") if f.startswith("cmil_")]  # not in the paper's default suite
    assert not [f for lang in ("tam", "eng", "khk") for f in families_of(lang, "all") if f.startswith("cmil_")]
    assert main_metric("lrm_cmil_mrc_mvf_dev") == "rougeL" and main_metric("lrm_cmil_math_uig_test") == "exact_match"


# ---- bad rows: one line naming the task, the file and the row --------------------------------------

def _copy_with(real_data, tmp_path, task: str, code: str, change) -> None:
    """A data folder whose one CMiLBench file has its rows changed by change(rows)."""
    shutil.copytree(real_data / "cmilbench", tmp_path / "cmilbench")
    path = layout.cmilbench_file(tmp_path, task, code)
    rows = json.loads(path.read_text(encoding="utf-8"))
    change(rows)
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize(("task", "family", "change", "message"), [
    ("tc", "cmil_tc", lambda rows: rows[1].update(label="经济"),
     r"Text_Classification/bo\.json row 2 has label '经济', not one of 科技, 旅游"),
    ("mrc", "cmil_mrc", lambda rows: rows[2].update(answer=""),
     r"Machine_Reading_Comprehension/bo\.json row 3 has answer '', not a non-empty text"),
    ("mrc", "cmil_mrc", lambda rows: rows[0].pop("query_text"),
     r"Machine_Reading_Comprehension/bo\.json has no column 'query_text' \(item 1\)"),
    ("math", "cmil_math", lambda rows: rows[3].update(answer="forty"),
     r"Math_Reasoning/bo\.json item foundation_tasks_math_reasoning_bo_\d+ has answer 'forty', not a number"),
])
def test_a_malformed_row_is_one_line_naming_file_and_row(real_data, tmp_path, task, family, change, message):
    _copy_with(real_data, tmp_path, task, "bo", change)
    for split in ("dev", "test"):  # a bad row anywhere in the file stops both sides
        with pytest.raises(TaskError, match=rf"^lrm_{family}_bod_{split}: .*{message}") as error:
            read_task_docs(family, "bod", split, tmp_path)
        assert "\n" not in str(error.value)


def test_a_missing_file_names_the_path(tmp_path):
    with pytest.raises(MissingTaskData, match=r"^lrm_cmil_math_mvf_dev: missing data file .*/cmilbench/data/"
                                              r"Foundation_Tasks/Math_Reasoning/mn\.json$"):
        read_task_docs("cmil_math", "mvf", "dev", tmp_path)


# ---- scoring --------------------------------------------------------------------------------------

def test_rouge_l_counts_tibetan_syllables_and_uyghur_words():
    # words of the SIB-200 fixture (bod_Tibt, uig_Arab index_id 558) and a made-up Mongolian-script word
    assert rouge_l("ལྟེ་ཉིང་ནང་རྫས་", "ལྟེ་ཉིང་ནང་རྫས་") == 1.0
    # 2 of 4 syllables match: precision 1, recall 1/2
    assert rouge_l("ནང་རྫས་", "ལྟེ་ཉིང་ནང་རྫས་།") == pytest.approx(2 / 3)
    assert rouge_l("نېيترون پروتوندىن", "نېيترون بىلەن پروتوندىن") == pytest.approx(0.8)
    assert rouge_l("DNA", "dna") == 0.0  # case is kept: the answer must be copied as written
    assert rouge_l("", "ᠬᠥᠶᠤ") == 0.0


def test_extractive_reading_results_report_rouge_l_and_exact_match():
    doc = {"answer": "ལྟེ་ཉིང་ནང་རྫས"}
    assert extractive_reading_results(doc, [" ལྟེ་ཉིང་ནང་རྫས "]) == {"rougeL": 1.0, "exact_match": 1.0}
    partial = extractive_reading_results(doc, [" ལྟེ་ཉིང་"])  # 2 of the 4 syllables: precision 1, recall 1/2
    assert partial["exact_match"] == 0.0 and partial["rougeL"] == pytest.approx(2 / 3)


# ---- end to end -----------------------------------------------------------------------------------

def test_reading_comprehension_evaluates_into_the_store_with_rouge_and_exact_match(tiny_model, real_data, tmp_path,
                                                                                   harness_cli):
    task = "lrm_cmil_mrc_bod_test"
    out, store_url = eval_tiny_bod(harness_cli, tiny_model, real_data, tmp_path, task)
    assert f"not averaged (outside their language's default suite): {task}" in out

    rows = ResultStore(store_url).results()
    stored = {row["metric"]: row for row in rows[rows["task"] == task].to_dict("records")}
    assert set(stored) == {"rougeL", "exact_match"}
    for row in stored.values():
        assert (row["lang"], row["split"], row["model"], row["n"]) == ("bod", "test", "tiny-bod", 3)
        assert 0.0 <= row["value"] <= 1.0

    snapshot = read_store(store_url)
    scores = tables.main_scores(snapshot.results, "test", main_metric_lookup())
    tibetan = tables.language_table(scores, "bod", tables.model_kinds(scores, snapshot.models))
    assert tibetan.score_columns == ["CMiL MRC"]
    assert tibetan.frame.loc["tiny-bod", "CMiL MRC"] == pytest.approx(stored["rougeL"]["value"] * 100)
