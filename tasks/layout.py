"""Where each dataset's files sit inside a local data folder (`--data-dir`).

The layouts are the ones people actually download (paths relative to the data folder):

    sib200/<flores>/{train,dev,test}.tsv   SIB-200 GitHub layout: index_id, category, text (header row)
    sib200/<flores>/labels.txt             one category per line
    mgsm/mgsm_<bn|te|en>.tsv               MGSM GitHub TSV: question, answer (no header)
    belebele/<flores>.jsonl                Belebele as exported from the hub, one question a line
    mlic-eval/data/<task>/<bo|ug|mn>/{train_1,train_2,train_3,dev,test}.json   MLiC-Eval, JSON lists
    cmilbench/data/Foundation_Tasks/<Task>/<bo|ug|mn>.json   CMiLBench: a clone of its GitHub repository

(<flores> is the benchmark's own code for the language, e.g. tam_Taml, bod_Tibt, khk_Cyrl, or
eng_Latn for the English control; MLiC-Eval has no English, and only the zoo writes an `en`
folder there. CMiLBench keeps one JSON list per task and language, named by its code: `git clone
https://github.com/4real3000/CMiLBench <data-dir>/cmilbench` is all it takes.) The test fixtures
(`tests/fixtures/data`: real SIB-200 and MGSM excerpts, CMiLBench's schema with no CMiLBench text)
follow this layout, and `harness zoo build` writes a synthetic data folder in it for the seven
languages and English.
"""

from pathlib import Path

SIB_SPLITS = ("train", "dev", "test")
# MLiC-Eval's folder name for each task family used by the paper (the release it used, hub
# `pkupie/mlic-eval`, GitHub luciusssss/MLiC-Eval: data/<task>/<lang>/{train_1..3,dev,test}.json).
MLIC_TASKS = {
    "tc": "text_classification",
    "mrc": "reading_comprehension",
    "rs": "response_selection",
    "math": "math",
}


def sib200_file(data_dir: Path, flores: str, split: str) -> Path:
    return Path(data_dir) / "sib200" / flores / f"{split}.tsv"


def sib200_labels_file(data_dir: Path, flores: str) -> Path:
    return Path(data_dir) / "sib200" / flores / "labels.txt"


def mgsm_file(data_dir: Path, mgsm_lang: str) -> Path:
    return Path(data_dir) / "mgsm" / f"mgsm_{mgsm_lang}.tsv"


def belebele_file(data_dir: Path, flores: str) -> Path:
    return Path(data_dir) / "belebele" / f"{flores}.jsonl"


# The renamed release (MiLiC-Eval, hub `pkupie/milic-eval`) split text classification into a
# sentence set and a passage set; the passage set is the paper's TC (48 dev / 504 test).
MLIC_RENAMED_TASKS = {"tc": "text_classification_passage"}


def mlic_task_folders(task: str) -> tuple[str, ...]:
    """The folder names one MLiC-Eval task has had, the paper's release first."""
    renamed = MLIC_RENAMED_TASKS.get(task)
    return (MLIC_TASKS[task],) + ((renamed,) if renamed else ())


def mlic_dir(data_dir: Path, task: str, mlic_lang: str) -> Path:
    """Folder of one MLiC-Eval task in one language; `task` is a key of MLIC_TASKS.

    The first of the task's folder names that exists, else the paper release's name (the one
    to write new data under).
    """
    candidates = [Path(data_dir) / "mlic-eval" / "data" / name / mlic_lang for name in mlic_task_folders(task)]
    return next((folder for folder in candidates if folder.is_dir()), candidates[0])


# CMiLBench's folder under data/Foundation_Tasks/ for each task family the harness runs (GitHub
# 4real3000/CMiLBench; the other foundation tasks and the knowledge and safety tasks are not used).
CMILBENCH_TASKS = {
    "tc": "Text_Classification",
    "mrc": "Machine_Reading_Comprehension",
    "math": "Math_Reasoning",
}


def cmilbench_file(data_dir: Path, task: str, cmil_lang: str) -> Path:
    """The JSON list of one CMiLBench task in one language; `task` is a key of CMILBENCH_TASKS."""
    return Path(data_dir) / "cmilbench" / "data" / "Foundation_Tasks" / CMILBENCH_TASKS[task] / f"{cmil_lang}.json"
