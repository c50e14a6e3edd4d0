"""Fixtures for the task tests: a local data folder in the real layouts, a TaskManager, a tiny model.

SIB-200 and MGSM are the committed excerpts of the real files (tests/fixtures/data), English included;
CMiLBench is a fixture in its real schema with no CMiLBench text (tests/fixtures/data/make_cmilbench.py).
Belebele and MLiC-Eval are not available as files, so small fixtures are written in their real schemas: Belebele rows as the
hub exports them (link, question_number, flores_passage, question, mc_answer1-4,
correct_answer_num), MLiC-Eval JSON lists in data/<task>/<lang>/{train_1..3,dev,test}.json.
"""

import json
from pathlib import Path

import pytest

from tasks import layout
from tasks.languages import BELEBELE, LANGUAGES, MLIC, data_code
from tasks.suite import TASKS_DIR, data_env

BELEBELE_ARTICLES = 60  # about 1.8 questions each, like the real 488 passages / 900 questions
MLIC_SIZES = {"train_1": 3, "train_2": 3, "train_3": 3, "dev": 4, "test": 8}
TC_LABELS = ("politics", "economy", "culture", "sports")


def belebele_rows(flores: str) -> list[dict]:
    rows = []
    for article in range(BELEBELE_ARTICLES):
        for number in range(1, 3 if article % 5 else 2):  # every fifth article has one question
            rows.append({
                "link": f"https://en.wikinews.org/wiki/Article_{article}",
                "question_number": number,
                "flores_passage": f"{flores} passage {article} " + "word " * 20,
                "question": f"question {number} about article {article}?",
                "mc_answer1": "first", "mc_answer2": "second", "mc_answer3": "third", "mc_answer4": "fourth",
                "correct_answer_num": str(1 + (article + number) % 4),
                "dialect": flores, "ds": "2023-05-03",
            })
    return rows


def mlic_rows(task: str, lang: str, split: str, count: int) -> list[dict]:
    rows = []
    for i in range(count):
        item_id = f"{lang}-{task}-{split}-{i}"
        if task == "tc":
            label = TC_LABELS[i % len(TC_LABELS)]
            rows.append({"id": item_id, "text": f"{lang} text {i}", "label": {"en": label, "zh": label}})
        elif task == "mrc":
            rows.append({"id": item_id, "context": [f"A: turn {i}", "B: reply"], "question": "who spoke?",
                         "options": ["A", "B", "both", "nobody"], "answer": "ABCD"[i % 4]})
        elif task == "rs":
            rows.append({"id": item_id, "context": [f"A: hello {i} from {split}", "B: hi"],
                         "options": ["bye", "thanks", "yes", "no"], "answer": "ABCD"[(i + 1) % 4]})
        else:
            rows.append({"id": item_id, "question": f"{i} + 2 = ?", "answer": i + 2,
                         "cot": {"en": f"{i} plus 2 is {i + 2}.", "zh": "..."}})
    return rows


def write_fixture_data(root: Path, real_data: Path) -> Path:
    """A full local data folder for every language and benchmark that has it (English MLiC-Eval as the
    zoo writes it); returns root."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("sib200", "mgsm", "cmilbench"):
        (root / name).symlink_to(real_data / name, target_is_directory=True)
    for lang in LANGUAGES:
        flores = data_code(lang, BELEBELE)
        if flores is not None:
            path = layout.belebele_file(root, flores)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in belebele_rows(flores)))
        if data_code(lang, MLIC) is not None:
            _write_mlic(root, data_code(lang, MLIC))
    return root


def _write_mlic(root: Path, mlic_lang: str) -> None:
    for task in layout.MLIC_TASKS:
        folder = layout.mlic_dir(root, task, mlic_lang)
        folder.mkdir(parents=True, exist_ok=True)
        for split, count in MLIC_SIZES.items():
            rows = mlic_rows(task, mlic_lang, split, count)
            (folder / f"{split}.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1))


@pytest.fixture(scope="session")
def data_dir(real_data, tmp_path_factory) -> Path:
    return write_fixture_data(tmp_path_factory.mktemp("task-data") / "data", real_data)


@pytest.fixture(scope="session")
def task_manager():
    """A TaskManager over the project's tasks only.

    The lrm_ tasks include nothing of lm-eval's own, and indexing lm-eval's 14,000 tasks takes
    about 15 s, so they are left out (include_defaults=False); a task YAML that needed one of them
    would fail here.
    """
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


@pytest.fixture
def local_data(data_dir, monkeypatch) -> Path:
    """Point the tasks at the fixture data folder, the way the harness does (data_env)."""
    for key, value in data_env(data_dir).items():
        monkeypatch.setenv(key, value)
    return data_dir


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, real_data) -> Path:
    """A random 2-layer Llama (hidden 128, 4 heads) with a byte-level BPE tokenizer trained here."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [line for path in sorted(real_data.glob("sib200/*/dev.tsv")) for line in path.read_text().splitlines()]
    texts += ["Classify the topic of the text. Read the passage and answer the question. The answer is 42."]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3)
    model_dir = tmp_path_factory.mktemp("tiny-model")
    LlamaForCausalLM(config).save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def eval_tiny_bod(harness_cli, model_dir: Path, data_dir: Path, tmp_path: Path, task: str) -> tuple[str, str]:
    """`harness eval --backend hf --tasks TASK --data-dir DATA` of a one-model registry (`tiny-bod`, a
    base model of Tibetan) into a fresh SQLite store; returns its stdout and the store URL."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(f"name: tiny-bod\nmodels:\n  tiny-bod:\n    kind: base\n    langs: [bod]\n    path: {model_dir}\n")
    store_url = f"sqlite:///{tmp_path / 'results.db'}"
    code, out, err = harness_cli("eval", "--registry", str(registry), "--model", "tiny-bod", "--backend", "hf",
                                 "--tasks", task, "--data-dir", str(data_dir), "--store", store_url)
    assert code == 0, err
    return out, store_url
