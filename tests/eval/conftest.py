"""Fixtures of the evaluation tests: a tiny Llama checkpoint, tiny lm-eval tasks, a shared vLLM server.

The tiny model is random (no training): hidden 128 with 4 heads (vLLM's CPU attention needs a head
size of 32 or more), 2 layers, a byte-level BPE tokenizer trained in a second. A wide initializer
makes its next-token distributions peaked, so greedy decoding has no near-ties that float noise
could flip between vLLM and transformers.
"""

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

TASK_LANG = "uig"
MC_TASK = f"lrm_mlic_tc_{TASK_LANG}_dev"  # multiple choice, scored by log-likelihood
GEN_TASK = f"lrm_mlic_math_{TASK_LANG}_dev"  # generate_until, exact match on the extracted number
TOPICS = ["science", "travel", "sports", "politics", "health"]
WORDS = "the a of in river stone market team vote doctor planet ticket goal law clinic star bus match".split()


def _sentence(i: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(5 + i % 4))


def build_tiny_model(dest: Path) -> Path:
    """A float32 safetensors Llama checkpoint with its tokenizer in `dest`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    dest.mkdir(parents=True, exist_ok=True)
    corpus = [_sentence(i) for i in range(200)] + [f"Question: {i} plus {i + 1}? The answer is {2 * i + 1}." for i in range(100)]
    corpus += [f"Classify the topic of the text.\nOptions: {', '.join(TOPICS)}\nTopic: {t}" for t in TOPICS]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    # Only the corpus's (ASCII) characters as the alphabet: every token decodes to whole characters, so
    # generations compare as text without half-decoded UTF-8 bytes.
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<s>", "</s>"])
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(dest)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        initializer_range=0.15,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(dest, safe_serialization=True)
    return dest


def write_tiny_tasks(dest: Path, n_items: int = 12) -> Path:
    """Two lm-eval tasks over local JSON files: a topic multiple choice and a math generation task."""
    dest.mkdir(parents=True, exist_ok=True)
    mc_rows = [{"text": _sentence(i), "label": i % len(TOPICS)} for i in range(n_items)]
    math_rows = [{"question": f"{i} plus {i + 1}?", "answer": str(2 * i + 1)} for i in range(n_items)]
    for name, rows in (("mc", mc_rows), ("math", math_rows)):
        (dest / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    options = ", ".join(TOPICS)
    (dest / f"{MC_TASK}.yaml").write_text(
        f"""task: {MC_TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {dest / 'mc.jsonl'}
validation_split: validation
output_type: multiple_choice
doc_to_text: "Classify the topic of the text.\\nText: {{{{text}}}}\\nOptions: {options}\\nTopic:"
doc_to_target: label
doc_to_choice: {json.dumps([' ' + t for t in TOPICS])}
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""",
        encoding="utf-8",
    )
    (dest / f"{GEN_TASK}.yaml").write_text(
        f"""task: {GEN_TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {dest / 'math.jsonl'}
validation_split: validation
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: answer
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 12
  do_sample: false
filter_list:
  - name: get-answer
    filter:
      - function: regex
        regex_pattern: "(-?[0-9]+)"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 2.0
""",
        encoding="utf-8",
    )
    return dest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_tasks(tmp_path_factory) -> Path:
    return write_tiny_tasks(tmp_path_factory.mktemp("tiny-tasks"))


@pytest.fixture
def bad_model(tmp_path) -> Path:
    """A folder that looks like a checkpoint to the harness but that vLLM cannot load."""
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["NoSuchModelForCausalLM"]}))
    return folder


@pytest.fixture(scope="session")
def vllm_server(tiny_model, tmp_path_factory):
    """One vLLM server on the tiny model for the whole test session (start-up costs ~35 s)."""
    from harness.server import ServerConfig, VLLMServer

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    log = tmp_path_factory.mktemp("server") / "server.log"
    server = VLLMServer(ServerConfig(model_dir=tiny_model, served_name="tiny", log_path=log))
    server.start()
    yield server
    server.stop()
