"""A model saved with tied embeddings (no lm_head.weight) merged with one saved untied: its lm_head
is its embedding, for every method, and the output config matches what is written."""

from __future__ import annotations

import json

import pytest
import torch

from merges import MergeError, run_merge

from .conftest import finetuned, llama_config, load_folder, random_weights, save_checkpoint

LM_HEAD, EMBEDDING = "lm_head.weight", "model.embed_tokens.weight"


def model(name: str, weight: float, density: float | None = None, protect: bool = False) -> dict:
    params = {"weight": weight, **({"density": density} if density is not None else {}),
              **({"protect": True} if protect else {})}
    return {"model": name, "parameters": params}


RECIPES = {
    "linear": {"merge_method": "linear", "models": [model("sft", 0.4), model("ct", 0.6)]},
    "task_arithmetic": {"merge_method": "task_arithmetic", "base_model": "base",
                        "models": [model("sft", 1.0), model("ct", 0.7)]},
    "ties": {"merge_method": "ties", "base_model": "base", "models": [model("sft", 1.0, 0.5), model("ct", 1.0, 0.4)],
             "parameters": {"normalize": True}},
    "ties_sv": {"merge_method": "ties_sv", "base_model": "base",
                "models": [model("sft", 1.0, 0.5, protect=True), model("ct", 1.0, 0.4)], "parameters": {"slack": 0.2}},
    "dare_linear": {"merge_method": "dare_linear", "base_model": "base",
                    "models": [model("sft", 1.0, 0.5), model("ct", 1.0, 0.6)], "parameters": {"seed": 3}},
    "dare_ties": {"merge_method": "dare_ties", "base_model": "base",
                  "models": [model("sft", 1.0, 0.5), model("ct", 1.0, 0.6)], "parameters": {"seed": 3}},
}


def without_lm_head(tensors: dict) -> dict:
    return {name: value for name, value in tensors.items() if name != LM_HEAD}


def explicitly_untied(tensors: dict) -> dict:
    return {**without_lm_head(tensors), LM_HEAD: tensors[EMBEDDING].clone()}


def save_pair(root, name: str, tensors: dict, tied: bool, dtype: torch.dtype) -> tuple:
    """The model saved tied (no lm_head), and the same model saved untied with lm_head = embedding."""
    tensors = {key: value.to(dtype) for key, value in tensors.items()}
    vocab = tensors[EMBEDDING].shape[0]
    dtype_name = str(dtype).removeprefix("torch.")
    if not tied:
        folder = save_checkpoint(root / name, tensors, llama_config(vocab, dtype=dtype_name))
        return folder, folder
    return (save_checkpoint(root / name, without_lm_head(tensors),
                            llama_config(vocab, tie_word_embeddings=True, dtype=dtype_name)),
            save_checkpoint(root / f"{name}-untied", explicitly_untied(tensors), llama_config(vocab, dtype=dtype_name)))


def tied_base_untied_ct(root, dtype: torch.dtype = torch.float32, extra_rows: int = 0) -> tuple[dict, dict]:
    """Tied base, tied SFT, and a CT model saved untied whose lm_head has moved off its embedding;
    also the same three with the tied ones saved explicitly untied."""
    base = random_weights(0)
    sft, ct = finetuned(base, 1), finetuned(base, 2, extra_rows=extra_rows)
    base[LM_HEAD], sft[LM_HEAD] = base[EMBEDDING], sft[EMBEDDING]  # tied: one matrix
    tied, untied = {}, {}
    for name, tensors, is_tied in (("base", base, True), ("sft", sft, True), ("ct", ct, False)):
        tied[name], untied[name] = save_pair(root, name, tensors, is_tied, dtype)
    return tied, untied


@pytest.mark.parametrize("method", RECIPES)
def test_a_missing_lm_head_of_a_tied_model_is_its_embedding(method, tmp_path):
    tied, untied = tied_base_untied_ct(tmp_path)
    recipe = RECIPES[method]
    out = run_merge(recipe, tied.get, tmp_path / "out", progress=False).path
    reference = run_merge(recipe, untied.get, tmp_path / "reference", progress=False).path
    merged, expected = load_folder(out), load_folder(reference)
    assert sorted(merged) == sorted(expected) and LM_HEAD in merged
    for name in merged:
        assert torch.equal(merged[name], expected[name]), name
    assert not torch.equal(merged[LM_HEAD], merged[EMBEDDING])
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_ties_with_extended_vocabulary_over_a_tied_base(dtype, tmp_path):
    # bfloat16: TIES runs on the CPU kernel, which reads the aliased embedding as the lm_head too.
    tied, untied = tied_base_untied_ct(tmp_path, dtype, extra_rows=16)
    out = load_folder(run_merge(RECIPES["ties"], tied.get, tmp_path / "out", progress=False).path)
    expected = load_folder(run_merge(RECIPES["ties"], untied.get, tmp_path / "reference", progress=False).path)
    assert out[LM_HEAD].shape == (144, 64) and out[LM_HEAD].dtype == dtype
    assert all(torch.equal(out[name], expected[name]) for name in expected) and sorted(out) == sorted(expected)


def test_the_untied_output_loads_in_transformers_with_its_own_lm_head(tmp_path):
    from transformers import AutoModelForCausalLM

    tied, _ = tied_base_untied_ct(tmp_path)
    out = run_merge(RECIPES["ties"], tied.get, tmp_path / "out", progress=False).path
    loaded = AutoModelForCausalLM.from_pretrained(out)
    merged = load_folder(out)
    assert loaded.lm_head.weight.data_ptr() != loaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(loaded.lm_head.weight, merged[LM_HEAD])
    assert torch.equal(loaded.model.embed_tokens.weight, merged[EMBEDDING])


def test_models_all_tied_give_a_tied_output(tmp_path):
    from transformers import AutoModelForCausalLM

    tied, _ = tied_base_untied_ct(tmp_path)
    ct = without_lm_head(load_folder(tied["ct"]))
    tied["ct"] = save_checkpoint(tmp_path / "ct-tied", ct, llama_config(tie_word_embeddings=True))
    out = run_merge(RECIPES["ties"], tied.get, tmp_path / "out", progress=False).path
    assert LM_HEAD not in load_folder(out)
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()


def test_a_missing_lm_head_in_a_model_configured_untied_is_an_error(tmp_path):
    tied, _ = tied_base_untied_ct(tmp_path)
    sft = load_folder(tied["sft"])
    tied["sft"] = save_checkpoint(tmp_path / "sft-broken", sft, llama_config(tie_word_embeddings=False))
    with pytest.raises(MergeError, match=r"^model 'sft' has no lm_head.weight although its config says "
                                         r"tie_word_embeddings: false$"):
        run_merge(RECIPES["ties"], tied.get, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
