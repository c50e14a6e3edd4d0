"""`harness tasks`: the evaluation tasks per language, with their item counts in local data.

Task names, families and main metrics come from `tasks.suite`; the item counts from the task
loaders (`tasks.utils.read_task_docs`) over a local data folder. `--suite default` (the default)
lists each language's default suite (the paper's) and names the other benchmarks that have the
language; `--suite all` lists those too. A split without data there is listed as not counted;
a split whose data is there but broken (not UTF-8, not JSON, a bad label) is listed too, and makes
the command fail after the listing, naming the first such file.
"""

from dataclasses import dataclass
from pathlib import Path

from harness import HarnessError
from tasks.errors import MissingTaskData, TaskError
from tasks.languages import ALL_SUITE, CONTROL, DEFAULT_SUITE, EXTRA, LANGUAGES, SUITES
from tasks.suite import FAMILIES, PREFIX, SPLITS, families_of, group_name, synthetic_only
from tasks.utils import read_task_docs


# ---- split sizes from local data ----------------------------------------------------------------

@dataclass(frozen=True)
class NotCounted:
    """Why a split's items cannot be counted."""

    reason: str  # one line naming the task and the file
    broken: bool  # the data is there but unreadable (False: there is no data)


def split_sizes(lang: str, data_dir: Path, suite: str = DEFAULT_SUITE) -> dict[str, dict[str, int | NotCounted]]:
    """{family: {split: item count, or why it cannot be counted}} from local files."""
    sizes: dict[str, dict[str, int | NotCounted]] = {}
    for family in families_of(lang, suite):
        sizes[family] = {}
        for split in SPLITS:
            try:
                sizes[family][split] = len(read_task_docs(family, lang, split, Path(data_dir))[0])
            except TaskError as err:
                sizes[family][split] = NotCounted(str(err), broken=not isinstance(err, MissingTaskData))
    return sizes


# ---- `harness tasks` ----------------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--lang", choices=sorted(LANGUAGES), help="only this language")
    parser.add_argument("--split", choices=SPLITS, help="only this split's task names")
    parser.add_argument("--suite", choices=SUITES, default=DEFAULT_SUITE,
                        help="default: each language's default suite (the paper's); all: every benchmark "
                             "that has the language")
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
    broken: list[str] = []  # problems of data that is there but unreadable
    for lang in langs:
        language = LANGUAGES[lang]
        print(f"\n{lang}  {language.name}{ROLE_NOTES.get(language.role, '')}  "
              f"groups: {', '.join(group_name(lang, s) for s in splits)}")
        sizes = split_sizes(lang, data_dir, args.suite) if data_dir is not None else None
        rows = [("task", *splits, "main metric", "dataset")]
        for family in families_of(lang, args.suite):
            counts = []
            for split in splits:
                value = sizes[family][split] if sizes else "?"
                if isinstance(value, NotCounted):
                    problems.append(value.reason)
                    if value.broken:
                        broken.append(value.reason)
                    value = "-"
                counts.append(str(value))
            rows.append((f"{PREFIX}_{family}_{lang}_<split>", *counts, FAMILIES[family].main_metric,
                         FAMILIES[family].dataset + _dataset_note(family, lang)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        others = [f"{PREFIX}_{family}_{lang}_<split>" for family in families_of(lang, ALL_SUITE)
                  if family not in families_of(lang, args.suite)]
        if others:
            print(f"  with --suite all also: {', '.join(others)}")
    print(f"\nwhole suite (the target languages): {', '.join(group_name('all', s) for s in splits)}")
    if problems:
        print(f"\n{len(problems)} split(s) not counted (-):")
        for problem in problems:
            print(f"  {problem}")
    if broken:
        raise TaskError(f"{len(broken)} split(s) have broken data (listed above); the first: {broken[0]}")
    return 0


ROLE_NOTES = {
    CONTROL: "  (control: not a merge target, not in lrm_all)",
    EXTRA: "  (extra: evaluated only; no CT model or merge, not in lrm_all)",
}


def _dataset_note(family: str, lang: str) -> str:
    if synthetic_only(family, lang):
        return " (zoo data only)"
    if family not in families_of(lang):
        return " (not in the default suite)"
    return ""


def _data_dir_for_listing(args) -> Path | None:
    if args.data_dir is not None:
        if not args.data_dir.is_dir():
            raise HarnessError(f"data folder not found: {args.data_dir}")
        return args.data_dir.resolve()
    from harness.registry import load_registry

    registry_dir = load_registry(args.registry).data_dir
    return registry_dir if registry_dir is not None and registry_dir.is_dir() else None

