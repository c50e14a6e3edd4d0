"""The evaluation tasks: names, groups, main metrics, local data, and `harness tasks`.

Every language has dev and test variants of its tasks (paper §4, Tables 2 and 6):

    tam tel ory ben   sib (SIB-200 topics, 7 labels), belebele (4 options), mgsm (tel, ben only)
    bod uig mvf       mlic_tc, mlic_mrc, mlic_rs (MLiC-Eval, multiple choice), mlic_math

Task `lrm_<family>_<lang>_<split>`; group `lrm_<lang>_<split>` (the plain mean of its tasks' main
metric, reported as the group's `acc`); `lrm_all_<split>` for the whole suite (the plain mean over
all its tasks). The lm-eval YAML files under `tasks/` are written by `write_task_files()`
(`python -m harness.tasklist` after changing the matrix); a test checks they are up to date.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from harness import HarnessError
from harness.languages import LANGUAGES
from harness.paths import TASKS_DIR

PREFIX = "lrm"
SPLITS = ("dev", "test")
DATA_DIR_ENV = "HARNESS_DATA_DIR"  # read by tasks/utils.py
# The group metric: math tasks report their exact_match under this name too (tasks/utils.py).
GROUP_METRIC = "acc"


@dataclass(frozen=True)
class Family:
    name: str
    dataset: str
    main_metric: str  # "acc" (multiple choice, log-likelihood) or "exact_match" (generation)
    template: str  # the YAML template folder under tasks/
    fewshot: bool  # whether the dataset gives few-shot exemplars (train split)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("sib", "SIB-200 topic classification", "acc", "sib", True),
        Family("belebele", "Belebele reading comprehension", "acc", "belebele", False),
        Family("mgsm", "MGSM grade-school math", "exact_match", "mgsm", False),
        Family("mlic_tc", "MLiC-Eval text classification", "acc", "mlic_tc", True),
        Family("mlic_mrc", "MLiC-Eval reading comprehension (dialogues)", "acc", "mlic_mrc", True),
        Family("mlic_rs", "MLiC-Eval response selection", "acc", "mlic_rs", True),
        Family("mlic_math", "MLiC-Eval math", "exact_match", "mlic_math", True),
    ]
}


def families_of(lang: str) -> list[str]:
    """The task families a language is evaluated on."""
    language = _language(lang)
    if language.suite == "flores":
        return ["sib", "belebele"] + (["mgsm"] if language.mgsm else [])
    return ["mlic_tc", "mlic_mrc", "mlic_rs", "mlic_math"]


def task_name(family: str, lang: str, split: str) -> str:
    return f"{PREFIX}_{family}_{lang}_{_split(split)}"


def task_names(lang: str, split: str) -> list[str]:
    """The tasks of one language and split, e.g. lrm_sib_tam_test, lrm_belebele_tam_test."""
    return [task_name(family, lang, split) for family in families_of(lang)]


def group_name(lang: str, split: str) -> str:
    """The language's group (`lrm_tam_test`), or the whole suite's for lang 'all' (`lrm_all_test`)."""
    if lang != "all":
        _language(lang)
    return f"{PREFIX}_{lang}_{_split(split)}"


def parse_task_name(name: str) -> tuple[str, str, str]:
    """(family, lang, split) of a task name; HarnessError for anything else."""
    head, _, split = name.rpartition("_")
    head, _, lang = head.rpartition("_")
    prefix, _, family = head.partition("_")
    if prefix != PREFIX or family not in FAMILIES or lang not in LANGUAGES or split not in SPLITS \
            or family not in families_of(lang):
        raise HarnessError(f"not a task of this harness: {name!r} (expected {PREFIX}_<family>_<lang>_<dev|test>)")
    return family, lang, split


def main_metric(task_name: str) -> str:
    """The metric a task is reported by: 'acc' (multiple choice) or 'exact_match' (math).

    For a group name (`lrm_tam_test`, `lrm_all_test`) it is 'acc', the group's mean of main metrics.
    """
    parts = task_name.split("_")
    if len(parts) == 3 and parts[0] == PREFIX and (parts[1] in LANGUAGES or parts[1] == "all") and parts[2] in SPLITS:
        return GROUP_METRIC
    return FAMILIES[parse_task_name(task_name)[0]].main_metric


def lang_of(task_name: str) -> str:
    """The language code of a task or language group name."""
    parts = task_name.split("_")
    if len(parts) == 3 and parts[0] == PREFIX and parts[1] in LANGUAGES and parts[2] in SPLITS:
        return parts[1]
    return parse_task_name(task_name)[1]


def data_env(data_dir: Path | None) -> dict[str, str]:
    """Environment that makes the tasks read local files under data_dir (None: the hub datasets).

    With None the variable is set empty (not left out), so a value inherited from the shell
    cannot send a hub run to local files.
    """
    if data_dir is None:
        return {DATA_DIR_ENV: ""}
    path = Path(data_dir).expanduser().resolve()
    if not path.is_dir():
        raise HarnessError(f"data folder not found: {path}")
    return {DATA_DIR_ENV: str(path)}


def _language(lang: str):
    if lang not in LANGUAGES:
        raise HarnessError(f"unknown language {lang!r}; known: {', '.join(LANGUAGES)}")
    return LANGUAGES[lang]


def _split(split: str) -> str:
    if split not in SPLITS:
        raise HarnessError(f"unknown split {split!r}; expected dev or test")
    return split


# ---- the lm-eval YAML files ---------------------------------------------------------------------

def render_task_files() -> dict[str, str]:
    """Every generated task and group YAML under tasks/, as {relative path: text}."""
    files: dict[str, str] = {}
    header = "# Written by `python -m harness.tasklist`; edit the _template.yaml beside it instead.\n"
    for lang in LANGUAGES:
        for split in SPLITS:
            for family in families_of(lang):
                name = task_name(family, lang, split)
                files[f"{FAMILIES[family].template}/{name}.yaml"] = header + (
                    f"include: _template.yaml\n"
                    f"task: {name}\n"
                    f"dataset_kwargs:\n  family: {family}\n  lang: {lang}\n  split: {split}\n"
                )
    for split in SPLITS:
        for lang in LANGUAGES:
            title = f"{group_name(lang, split)} ({LANGUAGES[lang].name} average)"
            files[f"groups/{group_name(lang, split)}.yaml"] = header + _group_yaml(
                group_name(lang, split), title, task_names(lang, split))
        files[f"groups/{group_name('all', split)}.yaml"] = header + _group_yaml(
            group_name("all", split), f"{group_name('all', split)} (all tasks, average)", [group_name(lang, split) for lang in LANGUAGES])
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


# ---- split sizes from local data ----------------------------------------------------------------

def split_sizes(lang: str, data_dir: Path) -> dict[str, dict[str, int | str]]:
    """{family: {split: item count, or the one-line reason it cannot be counted}} from local files."""
    from tasks.utils import read_task_docs

    sizes: dict[str, dict[str, int | str]] = {}
    for family in families_of(lang):
        sizes[family] = {}
        for split in SPLITS:
            try:
                sizes[family][split] = len(read_task_docs(family, lang, split, Path(data_dir))[0])
            except HarnessError as err:
                sizes[family][split] = str(err)
    return sizes


# ---- `harness tasks` ----------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--lang", choices=sorted(LANGUAGES), help="only this language")
    parser.add_argument("--split", choices=SPLITS, help="only this split's task names")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="local data folder to count items in (default: the registry's data_dir, "
                             "the zoo's synthetic data, when it exists)")


def run(args) -> int:
    data_dir = _data_dir_for_listing(args)
    splits = [args.split] if args.split else list(SPLITS)
    langs = [args.lang] if args.lang else list(LANGUAGES)
    if data_dir is None:
        print("item counts unknown: no local data (give --data-dir, or build the zoo's data with `harness zoo build`)")
    else:
        print(f"item counts from {data_dir}")
    problems: list[str] = []
    for lang in langs:
        language = LANGUAGES[lang]
        print(f"\n{lang}  {language.name}  groups: {', '.join(group_name(lang, s) for s in splits)}")
        sizes = split_sizes(lang, data_dir) if data_dir is not None else None
        rows = [("task", *splits, "main metric", "dataset")]
        for family in families_of(lang):
            counts = []
            for split in splits:
                value = sizes[family][split] if sizes else "?"
                if isinstance(value, str) and value != "?":
                    problems.append(value)
                    value = "-"
                counts.append(str(value))
            rows.append((f"{PREFIX}_{family}_{lang}_<split>", *counts, FAMILIES[family].main_metric, FAMILIES[family].dataset))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    print(f"\nwhole suite: {', '.join(group_name('all', s) for s in splits)}")
    if problems:
        print(f"\n{len(problems)} split(s) not counted (-):")
        for problem in problems:
            print(f"  {problem}")
    return 0


def _data_dir_for_listing(args) -> Path | None:
    if args.data_dir is not None:
        if not args.data_dir.is_dir():
            raise HarnessError(f"data folder not found: {args.data_dir}")
        return args.data_dir.resolve()
    from harness.registry import load_registry

    registry_dir = load_registry(args.registry).data_dir
    return registry_dir if registry_dir is not None and registry_dir.is_dir() else None


if __name__ == "__main__":
    for written_path in write_task_files():
        print(written_path.relative_to(TASKS_DIR.parent))
