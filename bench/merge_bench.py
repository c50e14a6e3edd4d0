"""Benchmark: our TIES merge against mergekit's and against the I/O floor, in one run.

Generates three random bf16 Llama-shaped checkpoints (base, sft, ct) of about --params
parameters each (no download), then times, each in its own subprocess so that its peak RSS can
be measured:

  ours      `harness merge recipe.yaml OUT` (TIES, density 0.6, bf16 out)
  mergekit  `mergekit-yaml` with the same recipe (its entry point, run as a module)
  io_floor  reading every byte of the three inputs and writing one model-sized output with
            safetensors (no arithmetic): no merge can be faster than this

Before timing, the page cache is warmed for everyone (every input read once) and our CPU kernel
is compiled (cached under ~/.cache/merges, so this costs a second once per machine; the time is
printed). Before each timed step the dirty pages that earlier steps left are flushed to disk
(`sync`), so that no step pays for another's writes: otherwise the first step after generating
6 GB of checkpoints runs while the operating system writes them back, and seems slower.
The floor and our merge then run alternately `--repeat` times (default 5; one such run takes
seconds) and the fastest run of each is compared, as timeit does: noise only ever adds time,
and on a virtual machine, for tens of seconds after the checkpoints are written, it can double
both. mergekit, which takes minutes, runs once. Peak RSS is the highest of the runs. Each
step's output is deleted after it (untimed), so that outputs do not pile up in memory.

Last line: `ties_vs_mergekit_wall=<ratio> ties_vs_io_floor=<ratio> peak_rss_gb=<ours>`.
Peak RSS is the operating system's high-water mark for the step's process, printed in GiB ("GB").
Targets: at most 0.5x mergekit's wall time, at most 1.2x the I/O floor, at most 2 GB RSS.
With `--device cpu --device cuda`, both merges run on each device over the same checkpoints and
one such line per device is printed, each after `device=<name>`, the last device's last.

    .venv/bin/python bench/merge_bench.py --params 1e8      # a quick try
    .venv/bin/python bench/merge_bench.py                   # 1e9: about 6 GB of inputs on disk
    python bench/merge_bench.py --device cpu --device cuda  # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VOCAB = 32000
SHARD_BYTES = 2 * 1024**3


def llama_shape(params: float) -> dict:
    """A Llama-2-like config (intermediate ~ 2.7 x hidden) with about `params` parameters."""
    hidden = 2048 if params >= 5e8 else 1024 if params >= 1e8 else 512
    intermediate = round(2.6875 * hidden / 64) * 64
    per_layer = 4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden
    layers = max(1, round((params - 2 * VOCAB * hidden) / per_layer))
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
            "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": hidden // 64,
            "num_key_value_heads": hidden // 64, "vocab_size": VOCAB, "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "dtype": "bfloat16"}


def tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    h, i = config["hidden_size"], config["intermediate_size"]
    shapes = {"model.embed_tokens.weight": (VOCAB, h)}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{p}self_attn.{name}.weight"] = (h, h)
        shapes[f"{p}mlp.gate_proj.weight"] = (i, h)
        shapes[f"{p}mlp.up_proj.weight"] = (i, h)
        shapes[f"{p}mlp.down_proj.weight"] = (h, i)
        shapes[f"{p}input_layernorm.weight"] = (h,)
        shapes[f"{p}post_attention_layernorm.weight"] = (h,)
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (VOCAB, h)
    return shapes


def generate_checkpoint(folder: Path, config: dict, seed: int, base_seed: int | None) -> None:
    """Random bf16 weights (base_seed given: base weights plus a small random task vector), sharded."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    base_gen = torch.Generator().manual_seed(base_seed if base_seed is not None else seed)
    own_gen = torch.Generator().manual_seed(seed)
    shard, shard_bytes, weight_map, shards = {}, 0, {}, []

    def flush():
        nonlocal shard, shard_bytes
        name = f"model-{len(shards) + 1:05d}.safetensors"
        save_file(shard, str(folder / name))
        weight_map.update({k: name for k in shard})
        shards.append(name)
        shard, shard_bytes = {}, 0

    for name, shape in tensor_shapes(config).items():
        tensor = torch.randn(shape, generator=base_gen) * 0.02
        if base_seed is not None:
            tensor += torch.randn(shape, generator=own_gen) * 0.002
        tensor = tensor.to(torch.bfloat16)
        if shard and shard_bytes + tensor.nbytes > SHARD_BYTES:
            flush()
        shard[name] = tensor
        shard_bytes += tensor.nbytes
    flush()
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


# The checkpoints are generated in a child process: in this one, the heap that generating them
# leaves behind (about 2 GB that the allocator keeps) made the merges timed afterwards slower.
GENERATE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from merge_bench import generate_checkpoint
work, config = Path(sys.argv[2]), json.loads(sys.argv[3])
for name, seed, base_seed in (("base", 0, None), ("sft", 1, 0), ("ct", 2, 0)):
    generate_checkpoint(work / name, config, seed, base_seed)
"""

# What `harness merge RECIPE OUT` runs (harness/build.py), without the CLI's other subcommands'
# imports: it freezes what is loaded before merging (see there).
OURS = """
import gc, sys
from pathlib import Path
from merges import load_recipe, run_merge
gc.freeze()
recipe, out, device, threads = sys.argv[1:]
run_merge(load_recipe(recipe), Path, Path(out), device=device, threads=int(threads) or None, progress=False)
if device == "cuda":
    import torch
    print(f"  ours on cuda: peak GPU memory {torch.cuda.max_memory_allocated() / 1e9:.2f} GB", file=sys.stderr)
"""

# Compiles the fused C kernel that ours uses for TIES on the CPU, or loads it from its cache.
WARM_KERNEL = """
import sys
from merges.kernels import ties_cpu
sys.exit(ties_cpu.library() is None)
"""

# safetensors' get_tensor maps the file and reads nothing until the tensor is used, so the first
# input is read by save_file as it writes it out, and the others through plain file reads into
# one reused buffer: every input byte is read once and one output is written.
IO_FLOOR = """
import sys, json
from pathlib import Path
from safetensors import safe_open
from safetensors.torch import save_file
inputs, out = [Path(p) for p in sys.argv[1:-1]], Path(sys.argv[-1])
out.mkdir()
buffer = memoryview(bytearray(64 * 1024 * 1024))
for folder in inputs:
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    for file in sorted(set(weight_map.values())):
        if folder == inputs[0]:
            with safe_open(str(folder / file), "pt") as handle:
                save_file({name: handle.get_tensor(name) for name in handle.keys()}, str(out / file))
        else:
            with open(folder / file, "rb", buffering=0) as handle:
                while handle.readinto(buffer):
                    pass
"""


# Runs a command and prints its peak RSS in KiB. Linux carries a process's high-water RSS across
# fork and exec, so a child forked straight from this (multi-GB) process would report at least
# this process's size; forked from this small launcher, it reports its own.
LAUNCHER = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(process.pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one subprocess."""
    start = time.perf_counter()
    launched = subprocess.run([sys.executable, "-c", LAUNCHER, *command], env=env, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if launched.returncode != 0:
        sys.exit(f"benchmark step failed: {' '.join(command)}")
    return wall, int(launched.stdout.split()[-1]) / 1024**2  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=float, default=1e9, help="parameters per checkpoint (default 1e9)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to put checkpoints (default: a temp dir)")
    parser.add_argument("--threads", type=int, default=None, help="our merge's --threads")
    parser.add_argument("--device", action="append", choices=["cpu", "cuda"],
                        help="device for both merges; repeat to time each (default: cpu)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="times the floor and our merge run, alternately; their fastest runs are compared (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the generated checkpoints")
    args = parser.parse_args()
    devices = list(dict.fromkeys(args.device or ["cpu"]))

    work = Path(tempfile.mkdtemp(prefix="merge-bench-", dir=args.workdir))
    try:
        config = llama_shape(args.params)
        count = sum(torch.Size(s).numel() for s in tensor_shapes(config).values())
        print(f"checkpoints: {count / 1e9:.2f}B parameters each, bf16, hidden {config['hidden_size']}, "
              f"{config['num_hidden_layers']} layers, in {work}", flush=True)
        print(f"machine: {os.cpu_count()} CPUs" + (f", GPU {torch.cuda.get_device_name()}" if "cuda" in devices else ""),
              flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", GENERATE, str(Path(__file__).parent), str(work), json.dumps(config)],
                       check=True)
        print(f"generated in {time.perf_counter() - start:.1f} s", flush=True)

        recipe = {"merge_method": "ties", "base_model": str(work / "base"),
                  "models": [{"model": str(work / m), "parameters": {"weight": 1.0, "density": 0.6}}
                             for m in ("sft", "ct")],
                  "parameters": {"normalize": True, "lambda": 1.0}, "dtype": "bfloat16"}
        recipe_path = work / "recipe.yaml"
        recipe_path.write_text(yaml.safe_dump(recipe))
        env = {**os.environ, "PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        inputs = [str(work / m) for m in ("base", "sft", "ct")]
        # Warm the page cache the same way for everyone: read every input file once.
        timed([sys.executable, "-c", IO_FLOOR, *inputs, str(work / "warmup")])
        shutil.rmtree(work / "warmup")
        if "cpu" in devices:
            compile_wall, _ = timed([sys.executable, "-c", WARM_KERNEL], env)
            print(f"ours' CPU kernel compiled or loaded from its cache in {compile_wall:.1f} s (not timed below)",
                  flush=True)

        def quick_steps(round_: int) -> list[tuple[str, list[str], Path]]:
            """The floor and our merge on each device: label, command, output folder."""
            floor = work / f"floor-{round_}"
            steps = [("io_floor", [sys.executable, "-c", IO_FLOOR, *inputs, str(floor)], floor)]
            for device in devices:
                out = work / f"ours-{device}-{round_}"
                steps.append((f"ours[{device}]", [sys.executable, "-c", OURS, str(recipe_path), str(out), device,
                                                  str(args.threads or 0)], out))
            return steps

        def mergekit_step(device: str) -> tuple[str, list[str], Path]:
            # mergekit.scripts.run_yaml is what the `mergekit-yaml` script runs; run as a module, it is
            # found wherever mergekit is installed (a venv's bin/ or a pip --target folder).
            out = work / f"mergekit-{device}"
            return (f"mergekit[{device}]", [sys.executable, "-m", "mergekit.scripts.run_yaml", str(recipe_path), str(out),
                                            "--no-copy-tokenizer", "--out-shard-size", "2B"]
                    + (["--cuda"] if device == "cuda" else []), out)

        runs: dict[str, list[tuple[float, float]]] = {}
        steps = [step for round_ in range(args.repeat) for step in quick_steps(round_)]
        for label, command, out in steps + [mergekit_step(device) for device in devices]:
            os.sync()
            runs.setdefault(label, []).append(timed(command, env))
            print(f"{label:14s} wall {runs[label][-1][0]:8.1f} s   peak RSS {runs[label][-1][1]:6.2f} GB", flush=True)
            # Outputs are not kept: their page cache would crowd the memory that later steps write into.
            shutil.rmtree(out, ignore_errors=True)
        # The fastest run of each step, and its highest peak RSS.
        results = {label: (min(wall for wall, _ in timings), max(rss for _, rss in timings))
                   for label, timings in runs.items()}
        if args.repeat > 1:
            print("fastest: " + ", ".join(f"{label} {wall:.1f} s" for label, (wall, _) in results.items()), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for device in devices:
        ours_wall, ours_rss = results[f"ours[{device}]"]
        prefix = f"device={device} " if len(devices) > 1 else ""
        print(f"{prefix}ties_vs_mergekit_wall={ours_wall / results[f'mergekit[{device}]'][0]:.3f} "
              f"ties_vs_io_floor={ours_wall / results['io_floor'][0]:.3f} peak_rss_gb={ours_rss:.2f}")


if __name__ == "__main__":
    main()
