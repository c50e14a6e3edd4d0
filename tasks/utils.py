"""Data loaders and prompt functions behind the `lrm_*` lm-eval tasks (the YAML files here).

Every task YAML names `load_task_data` as its `custom_dataset`, with its family, language and split
in `dataset_kwargs`. The loader reads the hub dataset, or the local copy under $HARNESS_DATA_DIR
when that is set (layouts in `tasks/layout.py`), cuts the dev or test side, and turns every dataset
into one small schema per family so the prompt functions below stay one-liners over
`tasks/prompts.py`:

    classification (sib, mlic_tc, cmil_tc)   id, text, labels (the label set), answer (index into labels)
    reading (belebele, mlic_mrc)             id, passage, question, options, answer (index into options)
    extractive reading (cmil_mrc)            id, passage, question, answer (the answer text)
    response (mlic_rs)                       id, dialogue, options, answer (index into options)
    math (mgsm, mlic_math, cmil_math)        id, question, answer (the number, as text)

The loader returns a DatasetDict with `test` (the items the task scores, dev or test side) and
`train` (few-shot exemplars: SIB-200 train, MLiC-Eval train_1..3; empty where the dataset has
none). Every data problem is a one-line `TaskError` naming the task and the file.

This module imports nothing from the harness, so `lm_eval --include_path tasks` works on its own.
"""

import csv
import hashlib
import io
import json
import math
import os
import re
import unicodedata
from pathlib import Path

from tasks import layout, prompts
from tasks.errors import MissingTaskData, TaskError
from tasks.languages import LANGUAGES, data_code
from tasks.suite import DATA_DIR_ENV, FAMILIES, on_hub, synthetic_only, task_name

SIB_HUB = "Davlan/sib200"
BELEBELE_HUB = "facebook/belebele"
MGSM_HUB = "juletxara/mgsm"
MLIC_HUB = "pkupie/milic-eval"  # formerly pkupie/mlic-eval; the hub redirects the old name

# SIB-200's seven topics, in the order of the GitHub release's labels.txt (used for hub data).
SIB_LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")

# Belebele has only a test split: the questions of one article in BELEBELE_DEV_PERCENT of the
# articles (chosen by a hash of the article link, the same articles in every language) form dev.
BELEBELE_DEV_PERCENT = 10
# MGSM has only a test split of 250: a fifth of the rows (50), chosen by a hash of the row
# number and so the same problems in every language, form dev; the other 200 are test.
MGSM_DEV_FRACTION = 0.2
# CMiLBench has one list per task and language, no dev: as for Belebele, the items whose id hashes
# into CMILBENCH_DEV_PERCENT of the buckets form dev. The hash is of the id less its language code
# (foundation_tasks_math_reasoning_bo_55 -> ..._reasoning_55), so parallel items fall on the same side.
CMILBENCH_DEV_PERCENT = 10

# CMiLBench's Chinese topic labels are SIB-200's seven topics: the tasks show the English names.
CMILBENCH_TOPICS = {
    "科技": "science/technology",
    "旅游": "travel",
    "政治": "politics",
    "体育": "sports",
    "健康": "health",
    "娱乐": "entertainment",
    "地理": "geography",
}

BELEBELE_COLUMNS = ("link", "question_number", "flores_passage", "question",
                    "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4", "correct_answer_num")
MLIC_COLUMNS = {
    "tc": ("text", "label"),
    "mrc": ("context", "question", "options", "answer"),
    "rs": ("context", "options", "answer"),
    "math": ("question", "answer"),
}
CMILBENCH_COLUMNS = {
    "tc": ("id", "text", "label"),
    "mrc": ("id", "context_text", "query_text", "answer"),
    "math": ("id", "question", "answer"),
}


# ---- entry point named by the task YAML --------------------------------------------------------

def load_task_data(family: str, lang: str, split: str, **_metadata):
    """The DatasetDict of one task: `test` = the items it scores, `train` = few-shot exemplars.

    lm-eval passes the task's metadata (version, config source, user --metadata) as extra
    keyword arguments; they do not change the data.
    """
    import datasets

    eval_docs, exemplars = read_task_docs(family, lang, split, data_dir_from_env())
    return datasets.DatasetDict({
        "test": datasets.Dataset.from_list(eval_docs),
        "train": datasets.Dataset.from_list(exemplars) if exemplars else _empty_like(eval_docs),
    })


def data_dir_from_env() -> Path | None:
    """$HARNESS_DATA_DIR (DATA_DIR_ENV) as an absolute folder, or None (empty or unset) for the hub datasets."""
    value = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


def read_task_docs(family: str, lang: str, split: str, data_dir: Path | None) -> tuple[list[dict], list[dict]]:
    """(items scored, few-shot exemplars) of one task, from `data_dir` or (None) the hub."""
    task = task_name(family, lang, split)  # TaskError for an unknown split or language
    readers = {"sib": _sib, "belebele": _belebele, "mgsm": _mgsm}
    if family in readers:
        reader = readers[family]
    elif family.startswith("mlic_") and family[5:] in layout.MLIC_TASKS:
        reader = _mlic
    elif family.startswith("cmil_") and family[5:] in layout.CMILBENCH_TASKS:
        reader = _cmilbench
    else:
        raise TaskError(f"unknown task family {family!r}")
    eval_docs, exemplars, where = reader(task, family, _data_code(task, family, lang, data_dir), split, data_dir)
    if not eval_docs:
        raise MissingTaskData(f"{task}: no {split} items in {where}")
    return eval_docs, exemplars


def _data_code(task: str, family: str, lang: str, data_dir: Path | None) -> str:
    """The benchmark's code for the language; TaskError where the benchmark has no such data."""
    language, benchmark = LANGUAGES[lang], FAMILIES[family].source
    code = data_code(lang, benchmark)
    if code is None:
        raise MissingTaskData(f"{task}: {FAMILIES[family].dataset} has no {language.name} data")
    if data_dir is None and synthetic_only(family, lang):
        # Checked before any download: the hub has nothing to give.
        raise MissingTaskData(f"{task}: {FAMILIES[family].dataset} has no real {language.name} split; "
                        f"only the zoo's synthetic data has this task (give --data-dir)")
    if data_dir is None and not on_hub(family):
        raise MissingTaskData(f"{task}: {FAMILIES[family].dataset} is not on the hub; give --data-dir "
                              f"holding a clone of its repository (tasks/layout.py)")
    return code


# ---- prompt functions named by the task YAML ---------------------------------------------------

def classification_text(doc: dict) -> str:
    return prompts.classification_prompt(doc["text"], doc["labels"])


def classification_choices(doc: dict) -> list[str]:
    return prompts.classification_choices(doc["labels"])


def reading_text(doc: dict) -> str:
    return prompts.reading_prompt(doc["passage"], doc["question"], doc["options"])


def response_text(doc: dict) -> str:
    return prompts.response_prompt(doc["dialogue"], doc["options"])


def letter_choices(doc: dict) -> list[str]:
    return prompts.letter_choices(len(doc["options"]))


def extractive_reading_text(doc: dict) -> str:
    return prompts.extractive_reading_prompt(doc["passage"], doc["question"])


def extractive_reading_target(doc: dict) -> str:
    return prompts.extractive_reading_target(doc["answer"])


def extractive_reading_results(doc: dict, results: list[str]) -> dict[str, float]:
    """Score one generated answer against the reference: ROUGE-L F1 (`rougeL`, the main metric,
    CMiLBench's own) and lm-eval's `exact_match`, both on the answer with outer whitespace stripped."""
    from lm_eval.api.metrics import exact_match_hf_evaluate

    prediction, reference = results[0].strip(), doc["answer"].strip()
    exact = exact_match_hf_evaluate(predictions=[prediction], references=[reference])["exact_match"]
    return {"rougeL": rouge_l(prediction, reference), "exact_match": float(exact)}


# ROUGE-L's tokens: runs between whitespace and Tibetan syllable and clause marks (tsheg U+0F0B-0C,
# shad U+0F0D-12). rouge_score's own tokenizer keeps only [a-z0-9], which would erase every
# Tibetan, Uyghur and Mongolian word; CMiLBench's scorer splits Uyghur and Mongolian at whitespace
# too, and Tibetan into botok words, where this uses syllables (no extra dependency).
_ROUGE_TOKEN_BREAK = re.compile(r"[\s\u0f0b-\u0f12]+")


class _RougeTokenizer:
    def tokenize(self, text: str) -> list[str]:
        return [token for token in _ROUGE_TOKEN_BREAK.split(text) if token]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of a prediction against one reference, by rouge_score (an lm-eval dependency)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_RougeTokenizer())
    return scorer.score(reference, prediction)["rougeL"].fmeasure


def math_text(doc: dict) -> str:
    return prompts.math_prompt(doc["question"])


def math_target(doc: dict) -> str:
    return prompts.math_target(doc["answer"])


def math_results(doc: dict, results: list[str]) -> dict[str, float]:
    """Score one generation: 1.0 when its final number equals the answer.

    Reported twice: `exact_match` (the math tasks' main metric) and `acc` (the same value), so a
    language group's `acc` is the plain mean of every task's main metric (lm-eval groups
    average one metric name at a time).
    """
    predicted = extract_final_number(results[0])
    correct = float(predicted is not None and math.isclose(predicted, float(doc["answer"]), abs_tol=1e-6))
    return {"exact_match": correct, "acc": correct}


_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def extract_final_number(text: str) -> float | None:
    """The number after the last 'The answer is', else the last number in the text.

    Digits of any script count (Bengali ৪২ and Telugu ౪౨ read as 42); thousands commas are dropped.
    """
    text = "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() else ch for ch in text)
    marker = text.lower().rfind("the answer is")
    tail = text[marker:] if marker >= 0 else text
    numbers = _NUMBER.findall(tail)
    if not numbers:
        return None
    return float((numbers[0] if marker >= 0 else numbers[-1]).replace(",", ""))


# ---- SIB-200 ------------------------------------------------------------------------------------

def _sib(task, family, flores, split, data_dir):
    if data_dir is None:
        hub = _load_hub(task, SIB_HUB, flores)
        rows = {"dev": hub["validation"], "test": hub["test"], "train": hub["train"]}
        where = {name: f"hub {SIB_HUB} {flores} {name}" for name in rows}
        labels = list(SIB_LABELS)
    else:
        rows, where = {}, {}
        for name in (split, "train"):
            path = layout.sib200_file(data_dir, flores, name)
            if name == "train" and not path.is_file():
                continue  # exemplars only: a local copy may hold just dev and test
            rows[name], where[name] = _read_tsv(task, path, header=True), path
        labels = _read_labels(task, layout.sib200_labels_file(data_dir, flores))
    docs = {name: _classification_docs(task, rows[name], where[name], labels, "category", "index_id")
            for name in rows}
    return docs[split], docs.get("train", []), where[split]


def _read_labels(task: str, path: Path) -> list[str]:
    if not path.is_file():
        raise MissingTaskData(f"{task}: missing data file {path}")
    labels = [line.strip() for line in _read_text(task, path).splitlines() if line.strip()]
    if not labels:
        raise TaskError(f"{task}: {path} lists no labels")
    return labels


def _classification_docs(task, rows, where, labels, label_column, id_column) -> list[dict]:
    _require_columns(task, rows, where, ("text", label_column))
    docs = []
    for i, row in enumerate(rows):
        label = row[label_column]
        if label not in labels:
            raise TaskError(f"{task}: {where} row {i + 1} has label {label!r}, not one of {labels}")
        docs.append({"id": str(row.get(id_column, i)), "text": row["text"], "labels": list(labels),
                     "answer": labels.index(label)})
    return docs


# ---- Belebele -----------------------------------------------------------------------------------

def _belebele(task, family, flores, split, data_dir):
    if data_dir is None:
        rows, where = _load_hub(task, BELEBELE_HUB, flores, split="test"), f"hub {BELEBELE_HUB} {flores}"
    else:
        where = layout.belebele_file(data_dir, flores)
        rows = _read_jsonl(task, where)
    _require_columns(task, rows, where, BELEBELE_COLUMNS)
    chosen = [row for row in rows if belebele_side(row["link"]) == split]
    return [_belebele_doc(task, row, where) for row in chosen], [], where


def belebele_side(link: str) -> str:
    """'dev' or 'test': all questions about one article (its link) fall on the same side."""
    return _hashed_side(link, BELEBELE_DEV_PERCENT)


def _hashed_side(key: str, dev_percent: int) -> str:
    """'dev' for the keys whose SHA-256 falls in the first dev_percent of 100 buckets, else 'test'."""
    bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16) % 100
    return "dev" if bucket < dev_percent else "test"


def _belebele_doc(task, row, where) -> dict:
    try:
        answer = int(row["correct_answer_num"]) - 1
    except ValueError:
        raise TaskError(f"{task}: {where} has correct_answer_num {row['correct_answer_num']!r}, not 1-4") from None
    return {
        "id": f"{row['link']}#{row['question_number']}",
        "passage": row["flores_passage"],
        "question": row["question"],
        "options": [row[f"mc_answer{i}"] for i in range(1, 5)],
        "answer": answer,
    }


# ---- MGSM ---------------------------------------------------------------------------------------

def _mgsm(task, family, mgsm_lang, split, data_dir):
    if data_dir is None:
        where = f"hub {MGSM_HUB} {mgsm_lang}"
        hub_rows = _load_hub(task, MGSM_HUB, mgsm_lang, split="test")
        _require_columns(task, hub_rows, where, ("question", "answer_number"))
        rows = [{"question": r["question"], "answer": r["answer_number"]} for r in hub_rows]
    else:
        where = layout.mgsm_file(data_dir, mgsm_lang)
        rows = _read_tsv(task, where, header=False, columns=("question", "answer"))
    dev_rows = mgsm_dev_rows(len(rows))
    chosen = [i for i in range(len(rows)) if (i in dev_rows) == (split == "dev")]
    return [_math_doc(task, rows[i], where, f"mgsm-{mgsm_lang}-{i}") for i in chosen], [], where


def mgsm_dev_rows(n_rows: int) -> set[int]:
    """The row numbers that form MGSM dev: a fixed fifth of the rows, picked by hash."""
    n_dev = round(n_rows * MGSM_DEV_FRACTION)
    by_hash = sorted(range(n_rows), key=lambda i: hashlib.sha256(f"mgsm-row-{i}".encode()).hexdigest())
    return set(by_hash[:n_dev])


def _math_doc(task, row, where, doc_id) -> dict:
    answer = str(row["answer"]).strip().replace(",", "")
    try:
        float(answer)
    except ValueError:
        raise TaskError(f"{task}: {where} item {doc_id} has answer {row['answer']!r}, not a number") from None
    return {"id": doc_id, "question": row["question"], "answer": answer}


# ---- MLiC-Eval ----------------------------------------------------------------------------------

def _mlic(task, family, mlic_lang, split, data_dir):
    kind = family[len("mlic_"):]
    folder = _mlic_folder(task, kind, mlic_lang, data_dir)
    train_files = [folder / f"train_{n}.json" for n in (1, 2, 3) if (folder / f"train_{n}.json").is_file()]
    train = [row for path in train_files for row in _read_json_list(task, path)]
    _require_columns(task, train, folder / "train_*.json", MLIC_COLUMNS[kind])
    if split == "test" or (folder / "dev.json").is_file() or not train_files:
        where = folder / f"{split}.json"
        rows, exemplars = _read_json_list(task, where), train
    else:
        # No dev.json: dev is train_1..3 concatenated, which leaves no exemplars for it.
        where, rows, exemplars = folder / "train_1.json", train, []
    _require_columns(task, rows, where, MLIC_COLUMNS[kind])
    to_doc = {"tc": _mlic_tc_docs, "mrc": _mlic_choice_docs, "rs": _mlic_choice_docs, "math": _mlic_math_docs}[kind]
    if kind == "tc":
        labels = sorted({_tc_label(task, row, folder) for row in rows + exemplars + _other_tc_rows(task, folder)})
        return to_doc(task, rows, where, labels), to_doc(task, exemplars, folder / "train_*.json", labels), where
    return to_doc(task, kind, rows, where), to_doc(task, kind, exemplars, folder / "train_*.json"), where


def _mlic_folder(task, kind, mlic_lang, data_dir) -> Path:
    if data_dir is not None:
        folder = layout.mlic_dir(data_dir, kind, mlic_lang)
        candidates = [folder]
    else:
        root = _mlic_snapshot(task, kind, mlic_lang)
        # The hub repository may keep the task folders at its top level or under data/.
        candidates = [base / name / mlic_lang for base in (root / "data", root)
                      for name in layout.mlic_task_folders(kind)]
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise MissingTaskData(f"{task}: missing data folder {candidates[0]}")


def _mlic_snapshot(task, kind, mlic_lang) -> Path:
    """Download one task folder of MLiC-Eval from the hub (gated: accept its terms, log in)."""
    from huggingface_hub import snapshot_download

    patterns = [f"*{name}/{mlic_lang}/*.json" for name in layout.mlic_task_folders(kind)]
    try:
        return Path(snapshot_download(MLIC_HUB, repo_type="dataset", allow_patterns=patterns))
    except Exception as err:  # network, authentication, gating: one line, naming the task
        raise TaskError(f"{task}: cannot download {MLIC_HUB}: {' '.join(str(err).split())}") from None


def _tc_label(task, row: dict, where) -> str:
    label = row["label"]
    if isinstance(label, dict):
        if not isinstance(label.get("en"), str):
            raise TaskError(f"{task}: {where} has a label without an English name ('en'): {label!r}")
        return label["en"]
    return str(label)


def _other_tc_rows(task, folder: Path) -> list[dict]:
    """All text-classification rows of the language, so dev and test share one label set."""
    return [row for name in ("dev.json", "test.json") if (folder / name).is_file()
            for row in _read_json_list(task, folder / name)]


def _mlic_tc_docs(task, rows, where, labels) -> list[dict]:
    return [{"id": str(row.get("id", i)), "text": row["text"], "labels": labels,
             "answer": labels.index(_tc_label(task, row, where))} for i, row in enumerate(rows)]


def _mlic_choice_docs(task, kind, rows, where) -> list[dict]:
    docs = []
    for i, row in enumerate(rows):
        if not isinstance(row["options"], list):
            raise TaskError(f"{task}: {where} item {i + 1} has options {row['options']!r}, not a list")
        options = [str(option) for option in row["options"]]
        letter = str(row["answer"]).strip()[:1].upper()
        if letter not in prompts.LETTERS[:len(options)]:
            raise TaskError(f"{task}: {where} item {i + 1} has answer {row['answer']!r}, not a letter of its {len(options)} options")
        context = row["context"]
        text = "\n".join(str(turn) for turn in context) if isinstance(context, list) else str(context)
        doc = {"id": str(row.get("id", i)), "options": options, "answer": prompts.LETTERS.index(letter)}
        if kind == "mrc":
            doc.update(passage=text, question=str(row["question"]))
        else:
            doc.update(dialogue=text)
        docs.append(doc)
    return docs


def _mlic_math_docs(task, kind, rows, where) -> list[dict]:
    return [_math_doc(task, row, where, str(row.get("id", i))) for i, row in enumerate(rows)]


# ---- CMiLBench ----------------------------------------------------------------------------------

def _cmilbench(task, family, cmil_lang, split, data_dir):
    """One task of CMiLBench's foundation tasks, read from the repository's own JSON list (no hub copy:
    _data_code refuses data_dir None). Every row is checked, then the split's side is kept."""
    kind = family[len("cmil_"):]
    where = layout.cmilbench_file(data_dir, kind, cmil_lang)
    rows = _read_json_list(task, where)
    _require_columns(task, rows, where, CMILBENCH_COLUMNS[kind])
    to_doc = {"tc": _cmil_tc_doc, "mrc": _cmil_mrc_doc, "math": _cmil_math_doc}[kind]
    docs = [to_doc(task, row, where, number) for number, row in enumerate(rows, start=1)]
    return [doc for doc in docs if cmilbench_side(doc["id"], cmil_lang) == split], [], where


def cmilbench_side(item_id: str, cmil_lang: str) -> str:
    """'dev' or 'test' of a CMiLBench item, by its id less the language code (CMILBENCH_DEV_PERCENT)."""
    return _hashed_side(item_id.replace(f"_{cmil_lang}_", "_"), CMILBENCH_DEV_PERCENT)


def _cmil_tc_doc(task, row, where, number) -> dict:
    label = row["label"]
    if label not in CMILBENCH_TOPICS:
        raise TaskError(f"{task}: {where} row {number} has label {label!r}, not one of {', '.join(CMILBENCH_TOPICS)}")
    return {"id": _cmil_text(task, row, where, number, "id"), "text": _cmil_text(task, row, where, number, "text"),
            "labels": list(SIB_LABELS), "answer": SIB_LABELS.index(CMILBENCH_TOPICS[label])}


def _cmil_mrc_doc(task, row, where, number) -> dict:
    return {"id": _cmil_text(task, row, where, number, "id"),
            "passage": _cmil_text(task, row, where, number, "context_text"),
            "question": _cmil_text(task, row, where, number, "query_text"),
            "answer": _cmil_text(task, row, where, number, "answer")}


def _cmil_math_doc(task, row, where, number) -> dict:
    return _math_doc(task, row, where, _cmil_text(task, row, where, number, "id"))


def _cmil_text(task, row, where, number, column) -> str:
    """A column that must be non-empty text (an id, a passage, an answer); TaskError naming the row."""
    value = row[column]
    if not isinstance(value, str) or not value.strip():
        raise TaskError(f"{task}: {where} row {number} has {column} {value!r}, not a non-empty text")
    return value


# ---- file and hub readers -----------------------------------------------------------------------

def _load_hub(task, path, name, split=None):
    import datasets

    try:
        return datasets.load_dataset(path, name, split=split)
    except Exception as err:  # network, missing config: one line, naming the task
        raise TaskError(f"{task}: cannot load hub dataset {path} ({name}): {' '.join(str(err).split())}") from None


def _read_tsv(task, path: Path, header: bool, columns: tuple[str, ...] = ()) -> list[dict]:
    if not path.is_file():
        raise MissingTaskData(f"{task}: missing data file {path}")
    lines = list(csv.reader(io.StringIO(_read_text(task, path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    if header:
        if not lines:
            raise TaskError(f"{task}: {path} is empty")
        columns, lines = tuple(lines[0]), lines[1:]
    rows = []
    for number, values in enumerate(lines, start=2 if header else 1):
        if not any(values):
            continue
        if len(values) != len(columns):
            raise TaskError(f"{task}: {path} line {number} has {len(values)} columns, expected {len(columns)} ({', '.join(columns)})")
        rows.append(dict(zip(columns, values)))
    return rows


def _read_jsonl(task, path: Path) -> list[dict]:
    if not path.is_file():
        raise MissingTaskData(f"{task}: missing data file {path}")
    rows = []
    for number, line in enumerate(_read_text(task, path).splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskError(f"{task}: {path} line {number} is not JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise TaskError(f"{task}: {path} line {number} is not a JSON object")
            rows.append(row)
    return rows


def _read_json_list(task, path: Path) -> list[dict]:
    if not path.is_file():
        raise MissingTaskData(f"{task}: missing data file {path}")
    try:
        rows = json.loads(_read_text(task, path))
    except json.JSONDecodeError as err:
        raise TaskError(f"{task}: {path} is not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise TaskError(f"{task}: {path} must hold a JSON list of objects")
    return rows


def _read_text(task, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise TaskError(f"{task}: {path} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise TaskError(f"{task}: cannot read {path}: {err.strerror}") from None


def _require_columns(task, rows, where, columns) -> None:
    """Every row has every column, with a value: a JSON null would otherwise be scored as "None"."""
    for i, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise TaskError(f"{task}: {where} has no column {missing[0]!r} (item {i + 1})")
        empty = [c for c in columns if row[c] is None]
        if empty:
            raise TaskError(f"{task}: {where} item {i + 1} has no value (null) for {empty[0]!r}")


def _empty_like(docs: list[dict]):
    """An empty split with the same columns, so lm-eval can build a task with no exemplars."""
    import datasets

    return datasets.Dataset.from_list(docs[:1]).select([])
