"""`harness regress`: passes on unchanged merge code, fails with a readable table on a change."""

import dataclasses
import json

import pytest
import torch

import merges
from harness import regress
from merges.methods import MethodOutput


@pytest.fixture
def fresh_baseline(use_zoo_home, harness_cli, tmp_path):
    """A baseline made by the current code on this machine's zoo (fingerprints only: fast)."""
    path = tmp_path / "baseline.json"
    code, out, _ = harness_cli("regress", "--update", "--no-scores", "--baseline", str(path))
    assert code == 0 and "baseline written" in out
    return path


def perturb(monkeypatch, method: str, delta: float = 1e-3):
    original = merges.METHODS[method].function

    def perturbed(base, tensors, params):
        output = original(base, tensors, params)
        return MethodOutput(output.tensor + delta, output.counts)

    monkeypatch.setitem(merges.METHODS, method, dataclasses.replace(merges.METHODS[method], function=perturbed))


def test_baseline_covers_every_method_and_two_and_three_models():
    methods = {recipe["merge_method"] for recipe in regress.CASES.values()}
    assert methods == set(merges.METHODS) - set(regress.NOT_BIT_REPRODUCIBLE)
    sizes = {len(recipe["models"]) for recipe in regress.CASES.values()}
    assert sizes == {2, 3}
    slack = [r for r in regress.CASES.values() if r["merge_method"] == "ties_sv"]
    assert all(r["parameters"]["slack"] > 0 for r in slack)
    consensus = {r.get("parameters", {}).get("consensus_method") for r in regress.CASES.values() if r["merge_method"] == "ties"}
    assert consensus == {"sum", "count"}


def test_unchanged_code_passes(fresh_baseline, harness_cli):
    code, out, _ = harness_cli("regress", "--no-scores", "--baseline", str(fresh_baseline))
    assert code == 0, out
    assert f"{len(regress.CASES)} merge(s), every tensor identical" in out


def test_perturbed_method_fails_with_a_table(fresh_baseline, harness_cli, monkeypatch):
    perturb(monkeypatch, "ties_sv")
    code, out, _ = harness_cli("regress", "--no-scores", "--baseline", str(fresh_baseline))
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() [:4] == ["merge", "tensor", "max", "abs"]
    rows = [line for line in lines[2:] if line.strip() and not line.startswith("regress:")]
    merges_listed = {row.split()[0] for row in rows}
    assert merges_listed == {"ties_sv-2", "ties_sv-3"}  # only the perturbed method's merges
    assert any("model.layers.0.mlp.up_proj.weight" in row and "0.001 (sampled)" in row for row in rows)
    assert "2 of 9 merge(s) differ" in out


def test_update_shows_the_diff_then_passes(fresh_baseline, harness_cli, monkeypatch):
    perturb(monkeypatch, "dare_ties", delta=0.5)
    code, out, _ = harness_cli("regress", "--update", "--no-scores", "--baseline", str(fresh_baseline))
    assert code == 0
    assert "dare_ties-3" in out and "0.5 (sampled)" in out and "baseline written" in out
    code, out, _ = harness_cli("regress", "--no-scores", "--baseline", str(fresh_baseline))
    assert code == 0, out


def test_different_zoo_is_reported_as_inputs_differ(fresh_baseline, harness_cli):
    data = json.loads(fresh_baseline.read_text())
    data["inputs"]["ct-uig"] = "0" * 64
    fresh_baseline.write_text(json.dumps(data))
    code, out, _ = harness_cli("regress", "--no-scores", "--baseline", str(fresh_baseline))
    assert code == regress.EXIT_INPUTS_DIFFER
    assert "inputs differ" in out and "ct-uig (baseline 000000000000" in out
    assert "max abs diff" not in out  # no merge is blamed


def test_missing_baseline_is_a_one_line_error(harness_cli, tmp_path):
    code, out, err = harness_cli("regress", "--no-scores", "--baseline", str(tmp_path / "none.json"))
    assert code == 2
    assert err.strip().count("\n") == 0 and "harness regress: error: no regression baseline" in err
    assert not (tmp_path / "none.json").exists()


def test_sampled_difference_is_labelled_and_exact_at_sampled_positions():
    tensor = torch.arange(64, dtype=torch.float32).reshape(8, 8)
    changed = tensor.clone()
    changed.view(-1)[4] += 0.25  # position 4 is sampled (stride 64 // 16 = 4)
    old, new = regress.tensor_fingerprint(tensor), regress.tensor_fingerprint(changed)
    assert old["sha256"] != new["sha256"]
    assert regress.sampled_max_abs_diff(old, new) == "0.25 (sampled)"
    unsampled = tensor.clone()
    unsampled.view(-1)[5] += 1.0
    assert "bytes differ elsewhere" in regress.sampled_max_abs_diff(old, regress.tensor_fingerprint(unsampled))


def test_committed_baseline_matches_this_code(use_zoo_home, harness_cli):
    code, out, _ = harness_cli("regress", "--no-scores")
    if code == regress.EXIT_INPUTS_DIFFER:
        pytest.skip(f"this machine's zoo differs from the one the committed baseline was made from: {out.strip()[:300]}")
    assert code == 0, out


@pytest.mark.slow
def test_scores_are_recorded_and_compared(use_zoo_home, harness_cli, tmp_path):
    path = tmp_path / "baseline.json"
    code, out, _ = harness_cli("regress", "--update", "--case", "ties_sv-2", "--baseline", str(path))
    assert code == 0, out
    scores = json.loads(path.read_text())["merges"]["ties_sv-2"]["scores"]
    assert set(scores) == set(regress.SCORE_TASKS) and all(0.0 <= v <= 1.0 for v in scores.values())
    code, out, _ = harness_cli("regress", "--case", "ties_sv-2", "--baseline", str(path))
    assert code == 0 and "dev scores mean" in out
