"""A language's average score: the one definition `harness eval` prints and the leaderboard shows.

The average of a language is the unweighted mean of the main metric over the language's expected
tasks, and it exists only when every expected task has a score: an average over fewer tasks would
not be comparable with one over all of them, so with a task missing the average is missing (and
the caller says which tasks are missing).

Which tasks are expected: `harness eval`, `harness experiment` and the sweep's trial scores expect
all of the language's tasks on the split (`language_tasks`), so a run of `--tasks` holding 2 of a
language's 4 tasks prints no average for it, and says so; the leaderboard expects, for every model,
the language's tasks that any model in the store has on the split, so that all the averages in one
column cover the same tasks (a model lacking one of them shows none).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RULE = ("a language's average is the unweighted mean of the main metric over all of its default-suite tasks, "
        "and is missing when any of those tasks has no score")


@dataclass(frozen=True)
class LanguageAverage:
    value: float | None  # None: missing, because a task in `missing` has no score (or none was expected)
    missing: tuple[str, ...]  # the expected tasks without a score


def language_average(expected_tasks: Iterable[str], scores: Mapping[str, float | None]) -> LanguageAverage:
    """The average over `expected_tasks` of `scores` (task -> main-metric value; None or NaN: no score)."""
    expected = list(dict.fromkeys(expected_tasks))
    missing = tuple(task for task in expected if not _is_score(scores.get(task)))
    if missing or not expected:
        return LanguageAverage(None, missing)
    return LanguageAverage(sum(scores[task] for task in expected) / len(expected), ())


def language_tasks(lang: str, split: str, present: Iterable[str]) -> list[str]:
    """All of a language's tasks on the split (tasks.suite.task_names), less its synthetic-only ones
    (the English MLiC-style tasks, which the real datasets lack) that are not in `present`."""
    from tasks import suite

    present = set(present)
    return [task for task in suite.task_names(lang, split)
            if task in present or not suite.synthetic_only(suite.parse_task_name(task)[0], lang)]


def _is_score(value: float | None) -> bool:
    return value is not None and value == value  # NaN is the one value not equal to itself
