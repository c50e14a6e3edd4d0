"""Checks of a checkpoint folder before the harness spends time on it, each a one-line HarnessError.

A truncated weights file or a missing tokenizer would otherwise surface minutes later, deep inside
transformers, vLLM or lm-eval, as a traceback that names neither the model nor the file.
"""

from pathlib import Path

from harness import HarnessError, one_line
from harness.files import read_json


def check_weights(model_id: str, folder: Path) -> None:
    """config.json is JSON and every safetensors file is whole (its header matches its size).

    Opening a file with safetensors reads and validates its header only, not the tensors: cheap
    even for a 7B model's shards.
    """
    from safetensors import SafetensorError, safe_open

    config = read_json(folder / "config.json", f"config of model {model_id!r}")
    if not isinstance(config, dict):
        raise HarnessError(f"model {model_id!r}: {folder / 'config.json'} must hold a JSON object")
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="np"):
                pass
        except (SafetensorError, OSError) as err:
            raise HarnessError(f"model {model_id!r}: {file} is not a complete safetensors file "
                               f"(truncated or damaged: {one_line(err, 200)})") from None


# A Hugging Face tokenizer is saved as one of these (fast, SentencePiece, byte-level BPE).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


def check_tokenizer(model_id: str, folder: Path) -> None:
    """The tokenizer loads from the folder, as both evaluation backends will load it."""
    from transformers import AutoTokenizer

    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise HarnessError(f"model {model_id!r}: no tokenizer in {folder} (none of {', '.join(TOKENIZER_FILES)}); "
                           "evaluation needs one: copy the tokenizer files of the model it was trained from")
    try:
        AutoTokenizer.from_pretrained(str(folder))
    except Exception as err:  # missing files, broken JSON, a class transformers lacks: all the same to a user
        raise HarnessError(f"model {model_id!r}: cannot load a tokenizer from {folder} "
                           f"(evaluation needs one): {one_line(err, 200)}") from None
