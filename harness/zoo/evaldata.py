"""The zoo's synthetic evaluation data, in the real benchmarks' file layouts (`tasks/layout.py`).

Items are drawn once in English from the held-out side of the sentence split (no sentence of
them is in any training corpus) and translated into every language, so the sets are parallel
across languages as FLORES-based benchmarks are. The English control (`eng`) gets the same items
untranslated, in every family, MLiC-Eval's included (which has no real English split). Sizes
are the real benchmarks' sizes:

    sib200/<flores>/{train,dev,test}.tsv, labels.txt   tam tel ory ben eng   701 / 99 / 204 rows
    belebele/<flores>.jsonl                            tam tel ory ben eng   900 questions, 2 a passage
    mgsm/mgsm_<te|bn|en>.tsv                           tel ben eng           250 problems
    mlic-eval/data/<task>/<bo|ug|mn|en>/train_{1,2,3}.json + test.json      bod uig mvf eng
        TC 48/504, MRC 20/200, RS 40/407, math 20/200 (dev = train_1 + train_2 + train_3)
"""

import json
import random
from collections.abc import Callable
from pathlib import Path

from harness.zoo.config import ZooConfig
from harness.zoo.corpora import Rendered, draw_item, render
from harness.zoo.generators import Writer
from harness.zoo.lexicon import TOPIC_LABELS, TOPICS, stable_seed
from tasks import layout, prompts
from tasks.languages import BELEBELE, CONTROL_LANGUAGES, ENGLISH, MGSM, MLIC, SIB200, benchmarks_of, data_code

BELEBELE_DS = "2023-05-03"  # the hub rows carry a date stamp; ours is fixed
LABEL_ZH = {topic.label: topic.label_zh for topic in TOPICS}


def draw_unique(writer: Writer, fmt: str, n: int) -> list:
    """n English items of a format with pairwise different texts."""
    items, seen = [], set()
    while len(items) < n:
        item = draw_item(writer, fmt)
        if item.key not in seen:
            seen.add(item.key)
            items.append(item)
    return items


def _writer(config: ZooConfig, family: str) -> Writer:
    return Writer(random.Random(stable_seed("eval", config.seed, family)), heldout=True)


def write_eval_data(data_dir: Path, config: ZooConfig) -> None:
    """Write every evaluation file for the configured languages and the English control under data_dir:
    each language's default suite (tasks.languages.benchmarks_of), none of the `--suite all` extras."""
    writers = {SIB200: _write_sib, BELEBELE: _write_belebele, MGSM: _write_mgsm, MLIC: _write_mlic}
    langs = list(config.languages) + [lang for lang in CONTROL_LANGUAGES if lang not in config.languages]
    for dataset, write in writers.items():
        with_data = [lang for lang in langs if dataset in benchmarks_of(lang)]
        if with_data:
            write(data_dir, config, with_data)


def _text_lang(lang: str) -> str:
    """The zoo's name for the language its text is rendered in: "en" (untranslated) for English."""
    return "en" if lang == ENGLISH else lang


def _write_sib(data_dir: Path, config: ZooConfig, langs: list[str]) -> None:
    sizes = config.eval_sizes.sib
    items = draw_unique(_writer(config, "sib"), "sib", sum(sizes.values()))
    for lang in langs:
        code = data_code(lang, SIB200)
        start = 0
        for split, n in sizes.items():
            rows = [f"{start + i}\t{item.label}\t{render(item, 'sib', _text_lang(lang), config.seed).text}"
                    for i, item in enumerate(items[start:start + n])]
            _write_text(layout.sib200_file(data_dir, code, split), "index_id\tcategory\ttext\n" + _lines(rows))
            start += n
        _write_text(layout.sib200_labels_file(data_dir, code), _lines(TOPIC_LABELS))


def _write_belebele(data_dir: Path, config: ZooConfig, langs: list[str]) -> None:
    passages = draw_unique(_writer(config, "belebele"), "belebele", config.eval_sizes.belebele // 2)
    for lang in langs:
        code = data_code(lang, BELEBELE)
        rows = []
        for number, item in enumerate(passages):
            for q in range(len(item.questions)):
                r = render(item, "belebele", _text_lang(lang), config.seed, question=q)
                rows.append({
                    "link": f"https://zoo.invalid/belebele/{number}", "question_number": q + 1,
                    "flores_passage": r.text, "question": r.question,
                    **{f"mc_answer{i + 1}": option for i, option in enumerate(r.options)},
                    "correct_answer_num": str(r.answer + 1), "dialect": code, "ds": BELEBELE_DS,
                })
        _write_text(layout.belebele_file(data_dir, code), _lines(json.dumps(row, ensure_ascii=False) for row in rows))


def _write_mgsm(data_dir: Path, config: ZooConfig, langs: list[str]) -> None:
    problems = draw_unique(_writer(config, "mgsm"), "math", config.eval_sizes.mgsm)
    for lang in langs:
        rows = [f"{render(item, 'math', _text_lang(lang), config.seed).text}\t{item.answer}" for item in problems]
        _write_text(layout.mgsm_file(data_dir, data_code(lang, MGSM)), _lines(rows))


def _mlic_tc(r: Rendered, i: int) -> dict:
    return {"id": i, "text": r.text, "label": {"en": r.answer, "zh": LABEL_ZH[r.answer]}}


def _mlic_mrc(r: Rendered, i: int) -> dict:
    return {"id": i, "context": r.turns, "question": r.question, "options": r.options,
            "answer": prompts.LETTERS[r.answer]}


def _mlic_rs(r: Rendered, i: int) -> dict:
    return {"id": i, "context": r.turns, "options": r.options, "answer": prompts.LETTERS[r.answer]}


def _mlic_math(r: Rendered, i: int) -> dict:
    return {"id": i, "question": r.text, "answer": r.answer,
            "cot": {"en": f"{r.working}. The answer is {r.answer}.", "zh": f"{r.working}。答案是 {r.answer}。"}}


# MLiC-Eval task -> its row builder; the task key doubles as the item format.
MLIC_ROWS: dict[str, Callable] = {"tc": _mlic_tc, "mrc": _mlic_mrc, "rs": _mlic_rs, "math": _mlic_math}


def _write_mlic(data_dir: Path, config: ZooConfig, langs: list[str]) -> None:
    for task, (n_dev, n_test) in config.eval_sizes.mlic.items():
        to_row = MLIC_ROWS[task]
        items = draw_unique(_writer(config, f"mlic-{task}"), task, n_dev + n_test)
        # dev is spread over the three train files, as MLiC-Eval ships it
        thirds = [n_dev // 3 + (k < n_dev % 3) for k in range(3)]
        bounds = [0, thirds[0], thirds[0] + thirds[1], n_dev, n_dev + n_test]
        names = ["train_1", "train_2", "train_3", "test"]
        for lang in langs:
            folder = layout.mlic_dir(data_dir, task, data_code(lang, MLIC))
            for name, start, end in zip(names, bounds, bounds[1:]):
                rows = []
                for i in range(start, end):
                    rows.append(to_row(render(items[i], task, _text_lang(lang), config.seed), i))
                _write_text(folder / f"{name}.json", json.dumps(rows, ensure_ascii=False, indent=1) + "\n")


def _lines(rows) -> str:
    return "".join(f"{row}\n" for row in rows)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
