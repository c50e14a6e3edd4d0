"""DARE: seeded and reproducible; the rescaled vector is unbiased."""

from __future__ import annotations

import math

import torch

from merges import run_merge
from merges.methods.dare import dare_drop_in_place

from .conftest import load_folder


def dare_recipe(method: str, seed: int) -> dict:
    return {"merge_method": method, "base_model": "base",
            "models": [{"model": "sft", "parameters": {"weight": 1.0, "density": 0.4}},
                       {"model": "ct-a", "parameters": {"weight": 0.8, "density": 0.6}}],
            "parameters": {"seed": seed}}


def test_same_seed_same_merge_any_thread_count(tiny_models, tmp_path):
    for method in ("dare_linear", "dare_ties"):
        one = load_folder(run_merge(dare_recipe(method, 5), tiny_models.get, tmp_path / f"{method}1",
                                    threads=1, progress=False).path)
        three = load_folder(run_merge(dare_recipe(method, 5), tiny_models.get, tmp_path / f"{method}3",
                                      threads=3, progress=False).path)
        other = load_folder(run_merge(dare_recipe(method, 6), tiny_models.get, tmp_path / f"{method}o",
                                      progress=False).path)
        assert all(torch.equal(one[k], three[k]) for k in one)
        assert any(not torch.equal(one[k], other[k]) for k in one)


def test_drop_rate_and_unbiased_expectation():
    """Each of 50 values is repeated 40,000 times; every copy is dropped independently.

    The mean of the rescaled copies must be the value within 5 standard errors
    (|v| * sqrt((1-p) / (p * n)), about 1.9% of |v| here). Without the 1/p rescaling the mean
    would be p * v, 70% off, so the test cannot pass by accident.
    """
    density, copies = 0.3, 40_000
    values = torch.linspace(-1.0, 1.0, 50, dtype=torch.float64) + 0.01
    delta = values.repeat_interleave(copies)
    dropped = dare_drop_in_place(delta.clone(), density, seed=123)
    kept_fraction = (dropped != 0).double().mean().item()
    assert abs(kept_fraction - density) < 5 * math.sqrt(density * (1 - density) / delta.numel())
    means = dropped.reshape(50, copies).mean(dim=1)
    standard_error = values.abs() * math.sqrt((1 - density) / (density * copies))
    assert torch.all((means - values).abs() < 5 * standard_error)
    unscaled = dare_drop_in_place(delta.clone(), density, seed=123, rescale=False).reshape(50, copies).mean(dim=1)
    assert torch.all((unscaled - values).abs() > 5 * standard_error)
    assert torch.equal(dropped, dare_drop_in_place(delta.clone(), density, seed=123))


def test_dare_ties_reports_survivors_as_trimmed(tiny_models, tmp_path):
    result = run_merge(dare_recipe("dare_ties", 1), tiny_models.get, tmp_path / "out", progress=False)
    total = result.stats["total"]["sft"]
    assert abs(total["trimmed"] / total["params"] - 0.4) < 0.01
    assert 0 < total["discarded"] < total["trimmed"]
