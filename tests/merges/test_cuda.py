"""`--device cuda` merges what `--device cpu` merges: same tensors, same conflict statistics.

Runs only where torch sees a CUDA GPU (skipped in CI, which has none). The vocabulary here is big
enough (32768 x 64 = 2M entries) that TIES's trim takes the sampled-band selection path, whose
sample is drawn on the device, so the exactness of that path is checked on the GPU too.
"""

from __future__ import annotations

import pytest
import torch

from merges import run_merge

from .conftest import finetuned, load_folder, random_weights, save_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")

BIG_VOCAB = 32768


@pytest.fixture(scope="module")
def big_vocab_models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cuda-models")
    base = random_weights(0, vocab=BIG_VOCAB)
    models = {"base": save_checkpoint(root / "base", base)}
    for seed, name in enumerate(("sft", "ct-a", "ct-b"), start=1):
        models[name] = save_checkpoint(root / name, finetuned(base, seed))
    return models


def model(name: str, weight: float, density: float | None = None, protect: bool = False) -> dict:
    params = {"weight": weight}
    if density is not None:
        params["density"] = density
    if protect:
        params["protect"] = True
    return {"model": name, "parameters": params}


CASES = {
    "linear": {"merge_method": "linear", "models": [model("sft", 0.3), model("ct-a", 0.7)]},
    "task_arithmetic": {"merge_method": "task_arithmetic", "base_model": "base",
                        "models": [model("sft", 1.0), model("ct-a", 0.4), model("ct-b", 0.6)],
                        "parameters": {"lambda": 0.7}},
    "ties-sum": {"merge_method": "ties", "base_model": "base",
                 "models": [model("sft", 1.0, 0.6), model("ct-a", 0.8, 0.3), model("ct-b", 0.5, 0.9)]},
    "ties-count": {"merge_method": "ties", "base_model": "base",
                   "models": [model("sft", 1.0, 0.2), model("ct-a", 1.0, 0.7)],
                   "parameters": {"consensus_method": "count", "normalize": False, "lambda": 1.2}},
    "ties_sv": {"merge_method": "ties_sv", "base_model": "base",
                "models": [model("sft", 1.0, 0.6, protect=True), model("ct-a", 1.0, 0.6)],
                "parameters": {"slack": 0.3}},
    "dare_ties": {"merge_method": "dare_ties", "base_model": "base",
                  "models": [model("sft", 1.0, 0.5), model("ct-a", 1.0, 0.5)], "parameters": {"seed": 7}},
    "dare_linear": {"merge_method": "dare_linear", "base_model": "base",
                    "models": [model("sft", 0.5, 0.3), model("ct-a", 0.5, 0.8)], "parameters": {"seed": 7}},
}


@pytest.mark.parametrize("case", CASES)
def test_cuda_merge_equals_cpu_merge(case, big_vocab_models, tmp_path):
    recipe = dict(CASES[case], dtype="float32")
    cpu = run_merge(recipe, big_vocab_models.get, tmp_path / "cpu", device="cpu", progress=False)
    gpu = run_merge(recipe, big_vocab_models.get, tmp_path / "cuda", device="cuda", progress=False)
    ours_cpu, ours_gpu = load_folder(cpu.path), load_folder(gpu.path)
    assert sorted(ours_cpu) == sorted(ours_gpu)
    for name, tensor in ours_cpu.items():
        torch.testing.assert_close(ours_gpu[name], tensor, atol=1e-6, rtol=0, msg=name)
    assert gpu.stats == cpu.stats  # the trim keeps, and the election discards, the same entries
