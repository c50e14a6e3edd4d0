"""Tiny Llama-shaped checkpoints for the merge tests (hidden 64, 2 layers, vocab 128, fp32)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

HIDDEN, LAYERS, VOCAB = 64, 2, 128


def llama_config(vocab: int = VOCAB, **overrides) -> dict:
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": 128, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": vocab, "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "dtype": "float32",
        "bos_token_id": 1, "eos_token_id": 2,
    }
    config.update(overrides)
    return config


def llama_shapes(vocab: int = VOCAB, layers: int = LAYERS) -> dict[str, tuple[int, ...]]:
    shapes = {"model.embed_tokens.weight": (vocab, HIDDEN), "model.norm.weight": (HIDDEN,),
              "lm_head.weight": (vocab, HIDDEN)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.k_proj.weight": (HIDDEN, HIDDEN),
            p + "self_attn.v_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
            p + "mlp.gate_proj.weight": (128, HIDDEN), p + "mlp.up_proj.weight": (128, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, 128),
            p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,),
        })
    return shapes


def random_weights(seed: int, vocab: int = VOCAB, dtype=torch.float32) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: (torch.randn(shape, generator=generator) * 0.02).to(dtype)
            for name, shape in llama_shapes(vocab).items()}


def finetuned(base: dict[str, torch.Tensor], seed: int, scale: float = 0.01, extra_rows: int = 0) -> dict:
    """base plus noise; `extra_rows` appends new vocabulary rows to the embedding and lm_head."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in base.items():
        out[name] = tensor + torch.randn(tensor.shape, generator=generator).to(tensor.dtype) * scale
        if extra_rows and name.endswith(("embed_tokens.weight", "lm_head.weight")):
            out[name] = torch.cat([out[name], torch.randn(extra_rows, tensor.shape[1], generator=generator)])
    return out


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], config: dict | None = None,
                    shards: int = 1, tokenizer_tag: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tensors["model.embed_tokens.weight"].shape[0]
    (folder / "config.json").write_text(json.dumps(config or llama_config(vocab)))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    if tokenizer_tag:
        (folder / "tokenizer_config.json").write_text(json.dumps({"tag": tokenizer_tag}))
    names = list(tensors)
    if shards == 1:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
        return folder
    weight_map = {}
    for s in range(shards):
        part = names[s::shards]
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: tensors[k].contiguous() for k in part}, str(folder / file))
        weight_map.update({k: file for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """base, and three fine-tunes of it (one of them sharded), fp32."""
    root = tmp_path_factory.mktemp("tiny-models")
    base = random_weights(0)
    return {
        "base": save_checkpoint(root / "base", base, tokenizer_tag="base"),
        "sft": save_checkpoint(root / "sft", finetuned(base, 1), shards=2, tokenizer_tag="sft"),
        "ct-a": save_checkpoint(root / "ct-a", finetuned(base, 2, scale=0.02), tokenizer_tag="ct-a"),
        "ct-b": save_checkpoint(root / "ct-b", finetuned(base, 3), tokenizer_tag="ct-b"),
    }


def load_folder(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors
