"""The evaluation suite: task families, task and group names, main metrics, and the YAML files.

A task family is one benchmark's task (tasks/languages.py BENCHMARKS); every language the
benchmark has data for gets the family's dev and test tasks. A language's default suite is the
paper's (§4, Tables 2 and 6); `all` adds every other benchmark that has the language:

              default suite                                         also in `all`
    tam ory   sib (SIB-200 topics, 7 labels), belebele (4 options)
    tel ben   sib, belebele, mgsm
    bod       mlic_tc, mlic_mrc, mlic_rs (MLiC-Eval, multiple choice), mlic_math   sib, belebele, cmil_*
    uig       mlic_tc, mlic_mrc, mlic_rs, mlic_math                               sib, cmil_*
    mvf       mlic_tc, mlic_mrc, mlic_rs, mlic_math                               cmil_*
    eng       all seven (control); its MLiC-style four exist only in the zoo's synthetic data
    khk       sib, belebele (extra: no paper suite, so all it has)

cmil_* is CMiLBench's three foundation tasks with a fixed answer: cmil_tc (topics, multiple choice),
cmil_mrc (extractive reading comprehension, generated and scored by ROUGE-L and exact match) and
cmil_math; it is read only from a local clone of its GitHub repository (`on_hub` False).

Task `lrm_<family>_<lang>_<split>` for every family of the `all` suite; group `lrm_<lang>_<split>`
over the language's default suite (the plain mean of its tasks' main metric, reported as the
group's `acc`); `lrm_all_<split>` for the default suites of the seven target languages (the
plain mean over all their tasks; the English control and extra languages are not in it). Every
module that builds or reads a task name does it through this one.

The lm-eval YAML files beside this module are written by `write_task_files()`: run
`python -m tasks.suite` after changing the matrix; a test checks they are up to date.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import TaskError
from tasks.languages import (ALL_SUITE, BELEBELE, BENCHMARKS, CMILBENCH, DEFAULT_SUITE, LANGUAGES, MGSM, MLIC,
                             SIB200, SUITES, TARGET_LANGUAGES, Language, benchmarks_of)

PREFIX = "lrm"
SPLITS = ("dev", "test")
# The group metric: math tasks report their exact_match under this name too (tasks/utils.py).
GROUP_METRIC = "acc"
# The variable that points the task loaders (tasks/utils.py) at a local data folder.
DATA_DIR_ENV = "HARNESS_DATA_DIR"
# The folder lm-eval is given as its include path: the YAML files live beside this module.
TASKS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Family:
    name: str
    dataset: str
    source: str  # the benchmark's key in tasks.languages.BENCHMARKS
    label: str  # the column heading in the leaderboard's per-language tables (as in the paper)
    main_metric: str  # "acc" (multiple choice, log-likelihood), "exact_match" (math) or "rougeL" (extractive answers)
    template: str  # the YAML template folder under tasks/
    fewshot: bool  # whether the dataset gives few-shot exemplars (train split)
    # The main metric a uniform random guess scores: 1/options for multiple choice, 0 for generation.
    chance: float = 0.0


# In the paper's column order.
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("sib", "SIB-200 topic classification", SIB200, "SIB-200", "acc", "sib", True, 1 / 7),
        Family("belebele", "Belebele reading comprehension", BELEBELE, "Belebele", "acc", "belebele", False, 1 / 4),
        Family("mgsm", "MGSM grade-school math", MGSM, "MGSM", "exact_match", "mgsm", False),
        Family("mlic_tc", "MLiC-Eval text classification", MLIC, "TC", "acc", "mlic_tc", True, 1 / 7),
        Family("mlic_mrc", "MLiC-Eval reading comprehension (dialogues)", MLIC, "MRC", "acc", "mlic_mrc", True, 1 / 4),
        Family("mlic_rs", "MLiC-Eval response selection", MLIC, "RS", "acc", "mlic_rs", True, 1 / 4),
        Family("mlic_math", "MLiC-Eval math", MLIC, "Math", "exact_match", "mlic_math", True),
        Family("cmil_tc", "CMiLBench text classification (SIB-200 topics)", CMILBENCH, "CMiL TC", "acc", "cmil_tc", False, 1 / 7),
        Family("cmil_mrc", "CMiLBench extractive reading comprehension", CMILBENCH, "CMiL MRC", "rougeL",
               "cmil_mrc", False),
        Family("cmil_math", "CMiLBench math", CMILBENCH, "CMiL Math", "exact_match", "cmil_math", False),
    ]
}


# ---- names ---------------------------------------------------------------------------------------

def families_of(lang: str, suite: str = DEFAULT_SUITE) -> list[str]:
    """The task families of a language in a suite ('default': the paper's; 'all': every benchmark
    with its data), in the paper's order."""
    _language(lang)
    sources = benchmarks_of(lang, _suite(suite))
    return [name for name, family in FAMILIES.items() if family.source in sources]


def synthetic_only(family: str, lang: str) -> bool:
    """Whether the task has no real dataset behind it, only the zoo's synthetic data (English MLiC-Eval)."""
    return FAMILIES[family].source in _language(lang).synthetic_only


def on_hub(family: str) -> bool:
    """Whether the family's data can be downloaded; False: only a local --data-dir has it (CMiLBench)."""
    return BENCHMARKS[FAMILIES[family].source].on_hub


def task_name(family: str, lang: str, split: str) -> str:
    """`lrm_<family>_<lang>_<split>`; TaskError for an unknown split or language."""
    split = _split(split)
    return f"{PREFIX}_{family}_{_language(lang).code}_{split}"


def task_names(lang: str, split: str, suite: str = DEFAULT_SUITE) -> list[str]:
    """The tasks of one language, split and suite, e.g. lrm_sib_tam_test, lrm_belebele_tam_test."""
    return [task_name(family, lang, split) for family in families_of(lang, suite)]


def chance_level(task: str) -> float:
    """The main metric of a uniform random guess on a task (FAMILIES' `chance`)."""
    return FAMILIES[parse_task_name(task)[0]].chance


def in_default_suite(task: str) -> bool:
    """Whether a task is in its language's default suite (the tasks its averages are over)."""
    family, lang, _split = parse_task_name(task)
    return family in families_of(lang)


def group_name(lang: str, split: str) -> str:
    """The language's group (`lrm_tam_test`), or the whole suite's for lang 'all' (`lrm_all_test`)."""
    if lang != "all":
        _language(lang)
    return f"{PREFIX}_{lang}_{_split(split)}"


def parse_task_name(name: str) -> tuple[str, str, str]:
    """(family, lang, split) of a task name; TaskError for anything else."""
    head, _, split = name.rpartition("_")
    head, _, lang = head.rpartition("_")
    prefix, _, family = head.partition("_")
    if prefix != PREFIX or family not in FAMILIES or lang not in LANGUAGES or split not in SPLITS \
            or family not in families_of(lang, ALL_SUITE):
        raise TaskError(f"not a task of this harness: {name!r} (expected {PREFIX}_<family>_<lang>_<dev|test>)")
    return family, lang, split


def main_metric(task_name: str) -> str:
    """The metric a task is reported by: 'acc' (multiple choice), 'exact_match' (math) or 'rougeL'
    (CMiLBench's extractive reading comprehension).

    For a group name (`lrm_tam_test`, `lrm_all_test`) it is 'acc', the group's mean of main metrics.
    """
    group_lang = _group_lang(task_name)
    if group_lang is not None:
        return GROUP_METRIC
    return FAMILIES[parse_task_name(task_name)[0]].main_metric


def lang_of(task_name: str) -> str:
    """The language code of a task or language group name (TaskError for the whole-suite group)."""
    group_lang = _group_lang(task_name)
    if group_lang is not None and group_lang != "all":
        return group_lang
    return parse_task_name(task_name)[1]


def _group_lang(name: str) -> str | None:
    """The language code (or 'all') of a group name, None for any other name."""
    parts = name.split("_")
    if len(parts) == 3 and parts[0] == PREFIX and (parts[1] in LANGUAGES or parts[1] == "all") and parts[2] in SPLITS:
        return parts[1]
    return None


def _language(lang: str) -> Language:
    """The Language of a code; TaskError naming the known codes for anything else."""
    if lang not in LANGUAGES:
        raise TaskError(f"unknown language {lang!r}; known: {', '.join(LANGUAGES)}")
    return LANGUAGES[lang]


def _suite(suite: str) -> str:
    if suite not in SUITES:
        raise TaskError(f"unknown suite {suite!r}; expected {' or '.join(SUITES)}")
    return suite


def _split(split: str) -> str:
    if split not in SPLITS:
        raise TaskError(f"unknown split {split!r}; expected dev or test")
    return split


# ---- local data ----------------------------------------------------------------------------------

def data_env(data_dir: Path | None) -> dict[str, str]:
    """Environment that makes the tasks read local files under data_dir (None: the hub datasets).

    With None the variable is set empty (not left out), so a value inherited from the shell
    cannot send a hub run to local files.
    """
    if data_dir is None:
        return {DATA_DIR_ENV: ""}
    path = Path(data_dir).expanduser().resolve()
    if not path.is_dir():
        raise TaskError(f"data folder not found: {path}")
    return {DATA_DIR_ENV: str(path)}


# ---- the lm-eval YAML files ----------------------------------------------------------------------

HEADER = "# Written by `python -m tasks.suite`; edit the _template.yaml beside it instead.\n"


def render_task_files() -> dict[str, str]:
    """Every generated task and group YAML under tasks/, as {relative path: text}."""
    files: dict[str, str] = {}
    for lang in LANGUAGES:
        for split in SPLITS:
            for family in families_of(lang, ALL_SUITE):
                name = task_name(family, lang, split)
                files[f"{FAMILIES[family].template}/{name}.yaml"] = HEADER + (
                    f"include: _template.yaml\n"
                    f"task: {name}\n"
                    f"dataset_kwargs:\n  family: {family}\n  lang: {lang}\n  split: {split}\n"
                )
    for split in SPLITS:
        for lang in LANGUAGES:
            group = group_name(lang, split)
            files[f"groups/{group}.yaml"] = HEADER + _group_yaml(
                group, f"{group} ({LANGUAGES[lang].name} average)", task_names(lang, split))
        whole = group_name("all", split)
        files[f"groups/{whole}.yaml"] = HEADER + _group_yaml(
            whole, f"{whole} (all tasks of the target languages, average)",
            [group_name(lang, split) for lang in TARGET_LANGUAGES])
    return files


def _group_yaml(name: str, alias: str, members: list[str]) -> str:
    member_lines = "".join(f"  - {member}\n" for member in members)
    return (
        f"group: {name}\n"
        f"group_alias: {alias}\n"
        f"task:\n{member_lines}"
        # The plain mean of the tasks' main metrics: math tasks also report exact_match as acc.
        f"aggregate_metric_list:\n"
        f"  - metric: {GROUP_METRIC}\n    filter_list: [none]\n    aggregation: mean\n    weight_by_size: false\n"
        f"metadata:\n  version: 1.0\n"
    )


def write_task_files(root: Path = TASKS_DIR) -> list[Path]:
    """Write the generated YAML files (atomically, one by one); returns the paths written."""
    written = []
    for relative, text in render_task_files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_task_files():
        print(written_path.relative_to(TASKS_DIR.parent))
