"""Reading lm-eval's per-sample logs (`samples_<task>_<timestamp>.jsonl` in a result's run_dir).

lm-eval 0.4.13 writes one JSON object per (document, filter): `doc_id`, `doc`, `target` (a string),
`arguments` ({"gen_args_0": {"arg_0": prompt, "arg_1": continuation or generation kwargs}, ...}),
`resps` / `filtered_resps` (stringified: ["-1.2", "False"] log-likelihood pairs for multiple
choice, the generated text for generation), `filter`, `metrics` (names) and one value per metric.

Two readers: `read_samples` (whole records, for the sample browser) and `item_scores` (one metric's
per-document values, for the paired bootstraps of the Compare view and the tie groups). The second
decodes only `doc_id`, `filter` and the metric (msgspec skips the rest: about 10x faster than
json.loads on lm-eval's multi-MB logs) and keeps what it read per file and modification time.
"""

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec
import pandas as pd

from harness import HarnessError, one_line

TIMESTAMP = r"\d{4}-\d{2}-\d{2}T[0-9.\-]+"


def find_samples_file(run_dir: str | Path | None, task: str) -> Path | None:
    """The newest samples file of a task in a run folder, or None when there is none."""
    if not isinstance(run_dir, (str, Path)) or not run_dir or not Path(run_dir).is_dir():
        return None  # no run folder recorded (NaN/None from the store) or it was deleted
    # Match the whole name: the prefix of `lrm_sib_tam_test` must not pick up another task's file.
    pattern = re.compile(rf"samples_{re.escape(task)}_({TIMESTAMP})\.jsonl")
    # Only the folder itself: `harness eval` stages unfinished tasks in hidden subfolders.
    found = [p for p in Path(run_dir).glob(f"samples_{task}_*.jsonl") if pattern.fullmatch(p.name)]
    return max(found, key=lambda p: pattern.fullmatch(p.name).group(1)) if found else None


def read_samples(path: Path) -> list[dict]:
    """The file's records; a damaged file (not UTF-8, a line not a JSON object) is a one-line HarnessError."""
    try:
        with open(path, encoding="utf-8") as lines:
            records = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as err:  # ValueError: UnicodeDecodeError and JSONDecodeError
        raise HarnessError(f"cannot read the sample log {path}: {one_line(err, 200)}") from None
    if not all(isinstance(record, dict) for record in records):
        raise HarnessError(f"cannot read the sample log {path}: a line is not a JSON object")
    return records


def filters_of(samples: list[dict]) -> list[str]:
    """The filters a task logged, in file order (math tasks may log several per document)."""
    return list(dict.fromkeys(s.get("filter", "none") for s in samples))


def _one_filter(samples: list[dict], filter_name: str | None) -> list[dict]:
    names = filters_of(samples)
    if not names:
        return []
    chosen = filter_name if filter_name in names else names[0]
    return [s for s in samples if s.get("filter", "none") == chosen]


def item_scores(path: Path, metric: str, filter_name: str | None = None) -> pd.Series:
    """Per-document value of a metric in a sample log (index doc_id), for one filter (default: the
    first logged); documents without the metric are left out. Read once per file version (path,
    modification time and size): do not change the returned Series. A damaged file is a one-line
    HarnessError naming it."""
    stat = Path(path).stat()
    return _item_scores(str(path), stat.st_mtime_ns, stat.st_size, metric, filter_name)


def logged_item_scores(run_dir: str | Path | None, task: str, metric: str, filter_name: str | None) -> pd.Series | None:
    """`item_scores` of the task's newest sample log in a run folder; None when it logged none."""
    path = find_samples_file(run_dir, task)
    return item_scores(path, metric, filter_name) if path is not None else None


@lru_cache(maxsize=1024)  # a few KB per log: every log a large store's tables test
def _item_scores(path: str, mtime_ns: int, size: int, metric: str, filter_name: str | None) -> pd.Series:
    try:
        with open(path, "rb") as lines:
            records = _item_decoder(metric).decode_lines(lines.read())
    except (OSError, msgspec.MsgspecError) as err:  # also not UTF-8, a line not a JSON object, no doc_id
        raise HarnessError(f"cannot read the sample log {path}: {one_line(err, 200)}") from None
    names = list(dict.fromkeys(record.filter for record in records))
    chosen = filter_name if filter_name in names else (names[0] if names else None)
    values = {record.doc_id: float(record.value) for record in records
              if record.filter == chosen and record.value is not msgspec.UNSET}
    return pd.Series(values, dtype=float).sort_index()


@lru_cache(maxsize=None)
def _item_decoder(metric: str) -> msgspec.json.Decoder:
    """Decodes a log line into its doc_id, filter and `metric` value (UNSET where it has none)."""
    item = msgspec.defstruct("LoggedItem", [("doc_id", int | str), ("filter", str, "none"), ("value", Any, msgspec.UNSET)],
                             rename={"value": metric})
    return msgspec.json.Decoder(item)


def browser_rows(samples: list[dict], metric: str, filter_name: str | None = None, task: str | None = None) -> pd.DataFrame:
    """What the sample browser shows: prompt, options or generation, the model's answer, correct.
    For a math task the answer is the number its scorer reads from the generation."""
    read_answer = _math_answer if task is not None and _is_math(task) else None
    records = []
    for sample in _one_filter(samples, filter_name):
        args = [sample["arguments"][key] for key in sorted(sample["arguments"], key=_arg_index)]
        prompt = args[0].get("arg_0", "") if args else ""
        if args and isinstance(args[0].get("arg_1"), str):  # multiple choice: one continuation per option
            options = [a["arg_1"] for a in args]
            loglikelihoods = [float(r[0]) for r in sample["filtered_resps"]]
            best = max(range(len(options)), key=loglikelihoods.__getitem__)
            shown_options = " | ".join(o.strip() for o in options)
            answer, target = options[best].strip(), _option(sample["target"], options)
        else:  # generation: the raw text and what the filter extracted from it
            shown_options = _first_text(sample.get("resps"))
            answer, target = _first_text(sample.get("filtered_resps")), sample["target"]
            if read_answer is not None:
                answer = read_answer(answer)
        records.append(
            {
                "doc_id": sample["doc_id"],
                "prompt": prompt,
                "options / generation": shown_options,
                "model answer": answer,
                "target": target,
                "correct": bool(float(sample.get(metric, 0.0)) >= 1.0),
            }
        )
    return pd.DataFrame(
        records, columns=["doc_id", "prompt", "options / generation", "model answer", "target", "correct"]
    )


def _is_math(task: str) -> bool:
    """Math tasks are the ones scored by exact match on a number (tasks.utils.math_results)."""
    from tasks.errors import TaskError
    from tasks.suite import main_metric

    try:
        return main_metric(task) == "exact_match"
    except TaskError:
        return False


def _math_answer(generation: str) -> str:
    """The number the math scorer compares with the answer (tasks.utils.extract_final_number)."""
    from tasks.utils import extract_final_number

    number = extract_final_number(generation)
    if number is None:
        return "(no number)"
    return str(int(number)) if number == int(number) else str(number)


def _arg_index(key: str) -> int:
    return int(key.rsplit("_", 1)[-1])


def _option(target: str, options: list[str]) -> str:
    """A multiple-choice target is the gold option's index (as text) or the gold text itself."""
    if target.isdigit() and int(target) < len(options):
        return options[int(target)].strip()
    return target


def _first_text(nested) -> str:
    while isinstance(nested, list) and nested:
        nested = nested[0]
    return nested if isinstance(nested, str) else ""
