"""`harness import` on a real GGUF: the dequantised SmolLM2 is a working language model with its tokenizer."""

import json

import pytest
import torch
from safetensors import safe_open

ENGLISH = "The capital of France is Paris. It is known for the Eiffel Tower, which was built in 1889."


def test_imported_checkpoint_is_a_tied_llama_with_gqa(real_lm):
    config = json.loads((real_lm.base / "config.json").read_text())
    assert (config["model_type"], config["tie_word_embeddings"]) == ("llama", True)
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["num_hidden_layers"]) == (9, 3, 30)
    with safe_open(str(real_lm.base / "model.safetensors"), "pt") as weights:
        names = list(weights.keys())
        assert "lm_head.weight" not in names  # tied: one matrix, as the GGUF has it (no output.weight)
        assert {weights.get_slice(name).get_dtype() for name in names} == {"F32"}
        assert sum(weights.get_slice(name).get_shape()[0] * (weights.get_slice(name).get_shape() + [1])[1]
                   for name in names) == 134_515_008


def test_imported_model_predicts_english_and_chats(real_lm):
    """A wrong dequantisation or an unreversed q/k permutation gives a loss near log(49152) = 10.8."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(real_lm.base)
    tokenizer = AutoTokenizer.from_pretrained(real_lm.base)
    ids = tokenizer(ENGLISH, return_tensors="pt").input_ids
    with torch.no_grad():
        assert model(ids, labels=ids).loss.item() < 2.0
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2?"}],
                                           add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    inputs = tokenizer(prompt, return_tensors="pt")
    answer = model.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs.input_ids.shape[1]:]
    assert "4" in tokenizer.decode(answer)


@pytest.mark.parametrize("dtype", ["bfloat16"])  # float16 takes the same path; each import is ~30 s of CPU
def test_import_in_another_dtype_casts_the_dequantised_weights(real_lm, dtype, tmp_path, harness_cli):
    code, out, err = harness_cli("import", str(real_lm.gguf.parent), str(tmp_path / "out"), "--dtype", dtype)
    assert code == 0, err
    assert out.strip() == f"imported {real_lm.gguf} -> {tmp_path / 'out'}"
    assert [path.name for path in tmp_path.iterdir()] == ["out"]  # no temporary folder left beside it
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as ours, \
            safe_open(str(real_lm.base / "model.safetensors"), "pt") as fp32:
        for name in ("model.embed_tokens.weight", "model.layers.7.self_attn.k_proj.weight"):
            assert torch.equal(ours.get_tensor(name), fp32.get_tensor(name).to(getattr(torch, dtype)))
