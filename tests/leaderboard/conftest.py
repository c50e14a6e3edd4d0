"""A results store with known rows and lm-eval sample logs, for the leaderboard tests.

Test split (scores in %; language = mean of its tasks; Average over Tamil, Telugu, Uyghur):

    model             kind          Tamil (SIB, Belebele)  Telugu (SIB, MGSM)  Uyghur (TC, Math)  Average
    base              base          35.0 (30, 40)          10.0 (20, 0)        30.0 (50, 10)      25.0
    sft-flan          sft           55.0 (50, 60)          30.0 (40, 20)       40.0 (60, 20)      41.7
    ct-uig            ct            –                      –                   50.0 (70, 30)      –
    ties-uig-flan     merge TIES    – (SIB 50 only)        –                   60.0 (80, 40)      –
    ties-sv-uig-flan  merge TIES-SV –                      –                   61.0 (82, 40)      –

Dev split: base only, SIB Tamil 90. Also stored and never shown: an acc_norm row of base, and an
older build of ties-sv-uig-flan (its results must be hidden by the newer build's).
Sample logs (lm-eval 0.4.13's format): TC of both merges (50 docs: TIES right on docs 0-39,
TIES-SV on 0-40) and Math of ties-sv-uig-flan (20 docs, right on 0-7).
"""

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.store import ModelRecord, ResultRow, ResultStore
from tasks.suite import main_metric

TIMESTAMP = "2026-01-02T03-04-05.678901"
TEST_SCORES = {
    "base": {"sib_tam": 0.30, "belebele_tam": 0.40, "sib_tel": 0.20, "mgsm_tel": 0.00, "mlic_tc_uig": 0.50, "mlic_math_uig": 0.10},
    "sft-flan": {"sib_tam": 0.50, "belebele_tam": 0.60, "sib_tel": 0.40, "mgsm_tel": 0.20, "mlic_tc_uig": 0.60, "mlic_math_uig": 0.20},
    "ct-uig": {"mlic_tc_uig": 0.70, "mlic_math_uig": 0.30},
    "ties-uig-flan": {"sib_tam": 0.50, "mlic_tc_uig": 0.80, "mlic_math_uig": 0.40},
    "ties-sv-uig-flan": {"mlic_tc_uig": 0.82, "mlic_math_uig": 0.40},
}
KINDS = {"base": "base", "sft-flan": "sft", "ct-uig": "ct", "ties-uig-flan": "merge", "ties-sv-uig-flan": "merge"}
TIES_SV_RECIPE = {
    "merge_method": "ties_sv",
    "base_model": "base",
    "models": [
        {"model": "sft-flan", "parameters": {"weight": 1.0, "density": 0.6, "protect": True}},
        {"model": "ct-uig", "parameters": {"weight": 1.0, "density": 0.6}},
    ],
    "parameters": {"normalize": True, "lambda": 1.0, "slack": 0.2},
    "dtype": "float32",
}
TIES_SV_STATS = {
    "method": "ties_sv",
    "models": ["sft-flan", "ct-uig"],
    "protected": "sft-flan",
    "slack": 0.2,
    "total": {
        "sft-flan": {"params": 1000, "trimmed": 600, "discarded": 30, "kept_by_slack": 12},
        "ct-uig": {"params": 1000, "trimmed": 600, "discarded": 150, "kept_by_slack": 0},
    },
    "tensors": {
        "model.layers.0.mlp.up_proj.weight": {
            "sft-flan": {"params": 500, "trimmed": 300, "discarded": 10, "kept_by_slack": 6},
            "ct-uig": {"params": 500, "trimmed": 300, "discarded": 120, "kept_by_slack": 0},
        },
        "model.embed_tokens.weight": {
            "sft-flan": {"params": 500, "trimmed": 300, "discarded": 20, "kept_by_slack": 6},
            "ct-uig": {"params": 500, "trimmed": 300, "discarded": 30, "kept_by_slack": 0},
        },
    },
}


def task_name(short: str, split: str = "test") -> str:
    return f"lrm_{short}_{split}"


def result_row(model: str, model_hash: str, short: str, value: float, *, split="test", metric=None, run_dir=None, n=50, created_at=None) -> ResultRow:
    task = task_name(short, split)
    return ResultRow(
        model=model,
        model_hash=model_hash,
        task=task,
        lang=short.rsplit("_", 1)[1],
        split=split,
        task_version="1.0",
        metric=metric or main_metric(task),
        value=value,
        stderr=0.05,
        n=n,
        backend="server",
        harness_version="0.1.0",
        lm_eval_version="0.4.13",
        data_hash="d",
        num_fewshot=0,
        run_dir=str(run_dir) if run_dir else None,
        created_at=created_at or datetime.now(timezone.utc),
    )


def write_mc_samples(run_dir: Path, task: str, correct_docs: set[int], n_docs: int) -> Path:
    """lm-eval's multiple-choice sample lines: two options, the gold is option 1 ("animals")."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"samples_{task}_{TIMESTAMP}.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        for doc_id in range(n_docs):
            right = doc_id in correct_docs
            prompt = f"Text {doc_id}: the cat sat\nTopic:"
            lls = ["-2.5", "-0.5"] if right else ["-0.25", "-3.0"]
            sample = {
                "doc_id": doc_id,
                "doc": {"text": f"the cat sat {doc_id}", "label": 1},
                "target": "1",
                "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": " business"}, "gen_args_1": {"arg_0": prompt, "arg_1": " animals"}},
                "resps": [[[lls[0], "False"]], [[lls[1], "False"]]],
                "filtered_resps": [[lls[0], "False"], [lls[1], "False"]],
                "filter": "none",
                "metrics": ["acc"],
                "doc_hash": f"d{doc_id}",
                "prompt_hash": f"p{doc_id}",
                "target_hash": "t1",
                "acc": 1.0 if right else 0.0,
            }
            out.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return path


def write_math_samples(run_dir: Path, task: str, correct_docs: set[int], n_docs: int) -> Path:
    """lm-eval's generation sample lines: the raw text in resps, the extracted number in filtered_resps."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f"samples_{task}_{TIMESTAMP}.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        for doc_id in range(n_docs):
            answer = str(doc_id + 2)
            said = answer if doc_id in correct_docs else "7"
            sample = {
                "doc_id": doc_id,
                "doc": {"question": f"{doc_id} + 2 = ?", "answer": answer},
                "target": answer,
                "arguments": {"gen_args_0": {"arg_0": f"Q: {doc_id} + 2 = ?\nA:", "arg_1": {"until": ["\n"], "do_sample": False}}},
                "resps": [[f" The answer is {said}"]],
                "filtered_resps": [said],
                "filter": "flexible",
                "metrics": ["exact_match"],
                "doc_hash": f"d{doc_id}",
                "prompt_hash": f"p{doc_id}",
                "target_hash": f"t{doc_id}",
                "exact_match": 1.0 if doc_id in correct_docs else 0.0,
            }
            out.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return path


@pytest.fixture
def store_url(tmp_path) -> str:
    """The store described in the module docstring, written through ResultStore."""
    url = f"sqlite:///{tmp_path / 'results.db'}"
    store = ResultStore(url)
    runs = tmp_path / "runs"
    write_mc_samples(runs / "ties", task_name("mlic_tc_uig"), set(range(40)), 50)
    write_mc_samples(runs / "ties-sv", task_name("mlic_tc_uig"), set(range(41)), 50)
    write_math_samples(runs / "ties-sv", task_name("mlic_math_uig"), set(range(8)), 20)
    run_dirs = {"ties-uig-flan": runs / "ties", "ties-sv-uig-flan": runs / "ties-sv"}
    long_ago = datetime.now(timezone.utc) - timedelta(days=3)
    for model, scores in TEST_SCORES.items():
        model_hash = f"hash-{model}"
        store.record_model(
            ModelRecord(
                model_hash=model_hash,
                model=model,
                kind=KINDS[model],
                langs=("uig",) if model != "base" else (),
                recipe=TIES_SV_RECIPE if model == "ties-sv-uig-flan" else ({"merge_method": "ties"} if model == "ties-uig-flan" else None),
                stats=TIES_SV_STATS if model == "ties-sv-uig-flan" else None,
            )
        )
        for short, value in scores.items():
            n = 20 if "math" in short else 50
            when = long_ago + timedelta(hours=1)
            rows = [result_row(model, model_hash, short, value, run_dir=run_dirs.get(model), n=n, created_at=when)]
            if (model, short) == ("base", "sib_tam"):  # a second metric of the same task, one write
                rows.append(result_row(model, model_hash, short, 0.99, metric="acc_norm", created_at=when))
            store.write_task_results(rows)
    store.write_task_results([result_row("base", "hash-base", "sib_tam", 0.90, split="dev", created_at=long_ago + timedelta(hours=1))])
    store.write_task_results([result_row("ties-sv-uig-flan", "hash-old-build", "mlic_tc_uig", 0.10, created_at=long_ago)])
    store.engine.dispose()
    return url


CHECKPOINT_SCORES = {  # model -> (series, tokens, TC, Math)
    "ct-uig@step100": ("ct-uig", 100, 0.50, 0.30),
    "ct-uig@step200": ("ct-uig", 200, 0.60, 0.30),
    "ties-uig-flan@step100": ("ties-uig-flan", 100, 0.70, 0.40),
    "ties-uig-flan@step200": ("ties-uig-flan", 200, 0.75, 0.40),
}


@pytest.fixture
def curve_store_url(store_url) -> str:
    """The store above plus a Uyghur checkpoint series (CHECKPOINT_SCORES; the last points: ct-uig and
    ties-uig-flan above, at 300 tokens), as `harness curve --model ties-uig` stores it (tests/leaderboard/test_curves.py)."""
    store = ResultStore(store_url)
    for head in ("ct-uig", "ties-uig-flan"):  # the series' last points: the models themselves
        recipe = {"merge_method": "ties"} if KINDS[head] == "merge" else None
        store.record_model(ModelRecord(f"hash-{head}", head, KINDS[head], ("uig",), recipe, series=head, tokens=300))
    for model, (series, tokens, tc, math_score) in CHECKPOINT_SCORES.items():
        recipe = {"merge_method": "ties"} if KINDS[series] == "merge" else None
        store.record_model(ModelRecord(f"hash-{model}", model, KINDS[series], ("uig",), recipe, series=series, tokens=tokens))
        store.write_task_results([result_row(model, f"hash-{model}", "mlic_tc_uig", tc)])
        store.write_task_results([result_row(model, f"hash-{model}", "mlic_math_uig", math_score, n=20)])
    store.engine.dispose()
    return store_url


@pytest.fixture
def empty_store_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    ResultStore(url).engine.dispose()  # creates the tables, writes no rows
    return url


@pytest.fixture
def log_writers() -> SimpleNamespace:
    """The sample-log writers above, for tests that need their own logs."""
    return SimpleNamespace(mc=write_mc_samples, math=write_math_samples)
