"""One server across sweep trials: weights reloaded in place must score like the new model itself."""

import json
import urllib.request

import pytest
import torch

from harness.registry import load_registry
from harness.server import DEV_MODE_ENV, ServerConfig, VLLMServer, reload_weights

PROMPT = "Anna has 12 tickets. Ravi gave her 3 more."


def served_prompt_logprobs(server: VLLMServer, token_ids: list[int]) -> list[float]:
    body = {"model": "trial", "prompt": token_ids, "max_tokens": 1, "echo": True, "logprobs": 0, "temperature": 0}
    request = urllib.request.Request(server.completions_url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        logprobs = json.load(response)["choices"][0]["logprobs"]["token_logprobs"]
    return logprobs[1:len(token_ids)]  # the first prompt token has none; the last entry is the generated one


def hf_prompt_logprobs(model_dir, token_ids: list[int]) -> list[float]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([token_ids])).logits[0, :-1].log_softmax(-1)
    return logits.gather(1, torch.tensor(token_ids[1:])[:, None])[:, 0].tolist()


@pytest.mark.slow
def test_reloaded_weights_score_like_the_reloaded_model(use_zoo_home, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    registry = load_registry()
    first, second = registry.resolve("sft-flan").path, registry.resolve("ct-uig").path
    token_ids = AutoTokenizer.from_pretrained(str(first))(PROMPT)["input_ids"]
    for key, value in DEV_MODE_ENV.items():
        monkeypatch.setenv(key, value)
    with VLLMServer(ServerConfig(first, "trial", tmp_path / "vllm.log")) as server:
        before = served_prompt_logprobs(server, token_ids)
        reload_weights(server.url, second)
        after = served_prompt_logprobs(server, token_ids)
    assert before == pytest.approx(hf_prompt_logprobs(first, token_ids), abs=1e-3)
    expected = hf_prompt_logprobs(second, token_ids)
    assert after == pytest.approx(expected, abs=1e-3)
    assert max(abs(a - b) for a, b in zip(before, expected)) > 0.1  # the two models really differ here
