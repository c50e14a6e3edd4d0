"""The engine end to end: complete output folders, vocabulary policy, dtypes, shards, bad inputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from harness import cli
from merges import MergeError, load_recipe, run_merge

from .conftest import finetuned, llama_config, load_folder, random_weights, save_checkpoint

TIES_SV = {"merge_method": "ties_sv", "base_model": "base",
           "models": [{"model": "sft", "parameters": {"weight": 1.0, "density": 0.6, "protect": True}},
                      {"model": "ct-a", "parameters": {"weight": 1.0, "density": 0.6}}],
           "parameters": {"slack": 0.2, "normalize": True, "lambda": 1.0},
           "dtype": "float32", "tokenizer_source": "ct-a"}


def test_output_is_a_complete_loadable_model_with_stats(tiny_models, tmp_path):
    from transformers import LlamaForCausalLM

    result = run_merge(TIES_SV, tiny_models.get, tmp_path / "merged", progress=False)
    folder = result.path
    assert json.loads((folder / "tokenizer_config.json").read_text())["tag"] == "ct-a"
    assert (folder / "generation_config.json").is_file()
    assert yaml.safe_load((folder / "merge_recipe.yaml").read_text())["merge_method"] == "ties_sv"
    model = LlamaForCausalLM.from_pretrained(folder)
    merged = load_folder(folder)
    for name, param in model.state_dict().items():
        assert torch.equal(param, merged[name])

    stats = json.loads((folder / "conflict_stats.json").read_text())
    assert stats == result.stats
    assert (stats["method"], stats["models"], stats["protected"], stats["slack"]) == ("ties_sv", ["sft", "ct-a"], "sft", 0.2)
    assert set(stats["tensors"]) == set(merged)
    for model_name in stats["models"]:
        total = stats["total"][model_name]
        assert set(total) == {"params", "trimmed", "discarded", "kept_by_slack"}
        for key in total:
            assert total[key] == sum(t[model_name][key] for t in stats["tensors"].values())
        assert total["params"] == sum(t.numel() for t in merged.values())
    assert stats["total"]["sft"]["kept_by_slack"] > 0 and stats["total"]["ct-a"]["kept_by_slack"] == 0


def test_sharded_output_and_dtypes(tiny_models, tmp_path):
    recipe = dict(TIES_SV, dtype=None)
    one = run_merge(recipe, tiny_models.get, tmp_path / "one", progress=False).path
    many = run_merge(recipe, tiny_models.get, tmp_path / "many", progress=False, max_shard_bytes=60_000).path
    assert len(list(many.glob("*.safetensors"))) > 3
    assert len(json.loads((many / "model.safetensors.index.json").read_text())["weight_map"]) == len(load_folder(one))
    a, b = load_folder(one), load_folder(many)
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == torch.float32 for k in a)
    half = run_merge(recipe, tiny_models.get, tmp_path / "bf16", dtype="bfloat16", progress=False).path
    assert all(t.dtype == torch.bfloat16 for t in load_folder(half).values())
    assert json.loads((half / "config.json").read_text())["dtype"] == "bfloat16"


def test_bf16_inputs_give_bf16_output(tmp_path):
    base = random_weights(0, dtype=torch.bfloat16)
    models = {"base": save_checkpoint(tmp_path / "base", base),
              "x": save_checkpoint(tmp_path / "x", finetuned(base, 1))}
    recipe = {"merge_method": "task_arithmetic", "base_model": "base", "models": [{"model": "x", "parameters": {"weight": 0.5}}]}
    out = load_folder(run_merge(recipe, models.get, tmp_path / "out", progress=False).path)
    assert all(t.dtype == torch.bfloat16 for t in out.values())


def test_extended_vocabulary_rows_come_from_the_model_that_has_them(tmp_path):
    base = random_weights(0)
    sft = finetuned(base, 1)
    ct = finetuned(base, 2, extra_rows=16)
    models = {"base": save_checkpoint(tmp_path / "base", base, tokenizer_tag="base"),
              "sft": save_checkpoint(tmp_path / "sft", sft, tokenizer_tag="sft"),
              "ct": save_checkpoint(tmp_path / "ct", ct, tokenizer_tag="ct")}
    shared_ct = {k: (v[:128] if v.shape[0] == 144 else v) for k, v in ct.items()}
    models["ct-shared"] = save_checkpoint(tmp_path / "ct-shared", shared_ct)
    recipe = {"merge_method": "ties", "base_model": "base",
              "models": [{"model": "sft", "parameters": {"weight": 1.0, "density": 0.5}},
                         {"model": "ct", "parameters": {"weight": 1.0, "density": 0.5}}]}
    result = run_merge(recipe, models.get, tmp_path / "out", progress=False)
    merged = load_folder(result.path)
    reference = load_folder(run_merge(
        dict(recipe, models=[recipe["models"][0], dict(recipe["models"][1], model="ct-shared")]),
        models.get, tmp_path / "reference", progress=False).path)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert merged[name].shape == (144, 64)
        assert torch.equal(merged[name][:128], reference[name])  # shared rows merged as usual
        assert torch.equal(merged[name][128:], ct[name][128:])   # extra rows taken from ct
    assert all(torch.equal(merged[k], reference[k]) for k in merged if merged[k].shape == reference[k].shape)
    assert json.loads((result.path / "config.json").read_text())["vocab_size"] == 144
    assert json.loads((result.path / "tokenizer_config.json").read_text())["tag"] == "ct"
    # Asking for the tokenizer of a model with fewer rows cannot work: its ids miss ct's new rows.
    with pytest.raises(MergeError, match=r"tensor .*: model 'ct' has 144 vocabulary rows.*'sft'"):
        run_merge(dict(recipe, tokenizer_source="sft"), models.get, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


# ---- bad inputs through `harness merge`: one-line error, exit 2, no output folder ---------------

def main(argv: list[str]) -> int:
    """`harness merge ...` through the real CLI entry point, with only the merge subcommand
    registered so that these tests do not depend on the other subcommands' modules."""
    saved = cli.SUBCOMMANDS
    cli.SUBCOMMANDS = {"merge": saved["merge"]}
    try:
        return cli.main(argv)
    finally:
        cli.SUBCOMMANDS = saved


def _error_lines(capsys) -> list[str]:
    """stderr without the progress bar's lines (tqdm draws on stderr too)."""
    return [line for line in capsys.readouterr().err.strip().splitlines() if "tensor/s]" not in line]


def _write_recipe(tmp_path: Path, models: dict, recipe: dict | None = None) -> Path:
    recipe = recipe or {"merge_method": "ties", "base_model": str(models["base"]),
                        "models": [{"model": str(models[n]), "parameters": {"weight": 1.0, "density": 0.5}}
                                   for n in models if n != "base"]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _bad_models(tmp_path: Path, problem: str) -> dict:
    base = random_weights(0)
    broken = finetuned(base, 2)
    config = None
    if problem == "wrong shape":
        broken["model.layers.1.mlp.up_proj.weight"] = torch.zeros(96, 64)
    elif problem == "NaN weights":
        broken["model.layers.0.self_attn.q_proj.weight"][3, 5] = float("nan")
    elif problem == "missing tensor":
        del broken["model.layers.1.post_attention_layernorm.weight"]
    elif problem == "different architectures":
        config = llama_config(architectures=["MistralForCausalLM"], model_type="mistral")
    models = {"base": save_checkpoint(tmp_path / "base", base),
              "ok": save_checkpoint(tmp_path / "ok", finetuned(base, 1)),
              "broken": save_checkpoint(tmp_path / "broken", broken, config=config)}
    if problem == "truncated safetensors":
        file = models["broken"] / "model.safetensors"
        file.write_bytes(file.read_bytes()[:-1000])
    if problem == "missing model":
        models["broken"] = tmp_path / "no-such-model"
    return models


@pytest.mark.parametrize("problem, message", [
    ("truncated safetensors", r"model '.*broken'.*model\.safetensors"),
    ("wrong shape", r"tensor model\.layers\.1\.mlp\.up_proj\.weight: shape \[96, 64\] in model '.*broken'"),
    ("NaN weights", r"tensor model\.layers\.0\.self_attn\.q_proj\.weight of model '.*broken' has NaN"),
    ("missing tensor", r"tensor model\.layers\.1\.post_attention_layernorm\.weight is in model '.*base' but not in model '.*broken'"),
    ("different architectures", r"different architectures: '.*base' is LlamaForCausalLM \(llama\), '.*broken' is MistralForCausalLM"),
    ("missing model", r"model '.*no-such-model': not a folder"),
])
def test_bad_inputs_fail_cleanly(problem, message, tmp_path, capsys):
    recipe = _write_recipe(tmp_path, _bad_models(tmp_path, problem))
    out = tmp_path / "out" / "merged"
    assert main(["merge", str(recipe), str(out)]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and err[0].startswith("harness merge: error: "), err
    assert re.search(message, err[0]), err[0]
    assert not out.exists()
    assert not any((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else True


@pytest.mark.parametrize("recipe, message", [
    ({"models": [{"model": "a"}]}, "merge_method must be one of"),
    ({"merge_method": "ties", "base_model": "b", "models": [{"model": "a", "parameters": {"density": "high"}}]},
     r"models\[0\]\.parameters\.density must be a number"),
    ({"merge_method": "ties", "base_model": "b", "models": [{"model": "a", "parameters": {"density": 1.5}}]},
     r"models\[0\]\.parameters\.density must be in"),
    ({"merge_method": "ties", "models": [{"model": "a"}]}, "base_model is required"),
    ({"merge_method": "ties_sv", "base_model": "b", "models": [{"model": "a"}], "parameters": {"slack": 0.1}},
     "exactly one model with parameters.protect"),
    ({"merge_method": "ties_sv", "base_model": "b", "models": [{"model": "a", "parameters": {"protect": True}}]},
     "parameters.slack is required"),
    ({"merge_method": "linear", "models": [{"model": "a", "paramters": {"weight": 1}}]}, r"unknown key\(s\) \['paramters'\]"),
    ({"merge_method": "linear", "models": "a"}, "models must be a non-empty list"),
])
def test_malformed_recipes_name_the_key(recipe, message, tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["merge", str(path), str(tmp_path / "out")]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("threads", ["0", "-2"])
def test_a_thread_count_below_one_is_a_one_line_error(threads, tiny_models, tmp_path, capsys):
    path = _write_recipe(tmp_path, {name: tiny_models[name] for name in ("base", "sft", "ct-a")})
    assert main(["merge", str(path), str(tmp_path / "out"), "--threads", threads]) == 2
    err = _error_lines(capsys)
    assert err == [f"harness merge: error: threads must be a positive number of merge threads, got {threads}"], err
    assert not (tmp_path / "out").exists()


def test_cli_merges_a_recipe_file_and_prints_a_summary(tiny_models, tmp_path, capsys):
    recipe = dict(TIES_SV, base_model=str(tiny_models["base"]), tokenizer_source=str(tiny_models["ct-a"]),
                  models=[dict(m, model=str(tiny_models[m["model"]])) for m in TIES_SV["models"]])
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["merge", str(path), str(tmp_path / "out"), "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "slack kept" in out and "merged model:" in out
    assert (tmp_path / "out" / "conflict_stats.json").is_file()
    # The output folder exists now: a second run refuses instead of overwriting it.
    assert main(["merge", str(path), str(tmp_path / "out")]) == 2
    assert load_recipe(path).protected == str(tiny_models["sft"])


def test_harness_merge_program_merges_and_exits_cleanly(tiny_models, tmp_path):
    # As its own process (`harness merge` freezes what it has loaded, so that exiting skips
    # walking it): the merged model is complete, and nothing is reported at exit.
    path = _write_recipe(tmp_path, {name: tiny_models[name] for name in ("base", "sft", "ct-a")})
    result = subprocess.run([sys.executable, "-m", "harness.cli", "merge", str(path), str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "merged model:" in result.stdout
    assert [line for line in result.stderr.splitlines() if "tensor/s]" not in line and line.strip()] == []
    in_process = run_merge(load_recipe(path), Path, tmp_path / "in-process", progress=False).path
    merged, expected = load_folder(tmp_path / "out"), load_folder(in_process)
    assert merged.keys() == expected.keys() and all(torch.equal(merged[k], expected[k]) for k in merged)


def test_memory_budget_starts_tensors_in_order_so_a_big_one_is_not_overtaken():
    """A big tensor (over the budget: it runs alone) asked for before a small one starts first,
    although the small one would fit beside what is running; the big one then runs alone."""
    import threading
    import time

    from merges.engine import MemoryBudget

    budget = MemoryBudget(limit_bytes=10)
    started, running = [], []
    release_first = threading.Event()

    def job(name: str, amount: int, hold: threading.Event | None = None):
        with budget.reserve(amount):
            started.append((name, list(running)))
            running.append(name)
            if hold is not None:
                hold.wait(5)
            else:
                time.sleep(0.05)
            running.remove(name)

    first = threading.Thread(target=job, args=("small-1", 4, release_first))
    first.start()
    while not started:
        time.sleep(0.01)
    big = threading.Thread(target=job, args=("big", 100))
    big.start()
    while budget.tickets < 2:  # the big one has asked and waits for the budget to empty
        time.sleep(0.01)
    small = threading.Thread(target=job, args=("small-2", 2))
    small.start()
    while budget.tickets < 3:  # small-2 has asked too
        time.sleep(0.01)
    time.sleep(0.1)  # small-2 fits beside small-1; it must still wait for its turn
    assert [name for name, _ in started] == ["small-1"]
    release_first.set()
    for thread in (first, big, small):
        thread.join(5)
    assert started == [("small-1", []), ("big", []), ("small-2", [])]
