"""Language-vector similarity throughput at Llama-2-7B's tensor shapes, to extrapolate the paper's setting.

    .venv/bin/python bench/similarity_bench.py [--models 7] [--layers 1] [--rank 16] [--dtype float16]

Writes a base and N full fine-tunes holding `--layers` decoder layers of Llama-2-7B (hidden 4096,
MLP 11008; no embeddings) into a temporary folder, then times merges.similarity over the N full
models (every tensor of the base and of each model read, a row block at a time) against the I/O
floor (reading the same tensors once with safetensors, nothing computed), and over N LoRA
adapters of rank `--rank` on all seven projections. Prints GB of tensors read per second, peak RSS,
and the time this throughput gives for the paper's 7 Llama-2-7B CT models and their base (8 x 6.74B
parameters in float16 = 108 GB read). The files were just written, so they are read from the page
cache: the figure is the compute rate; reading cold from a disk slower than it adds the difference.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

HIDDEN, MLP = 4096, 11008
LLAMA2_7B_PARAMS = 6.74e9
PROJECTIONS = {"self_attn.q_proj": (HIDDEN, HIDDEN), "self_attn.k_proj": (HIDDEN, HIDDEN),
               "self_attn.v_proj": (HIDDEN, HIDDEN), "self_attn.o_proj": (HIDDEN, HIDDEN),
               "mlp.gate_proj": (MLP, HIDDEN), "mlp.up_proj": (MLP, HIDDEN), "mlp.down_proj": (HIDDEN, MLP)}


def layer_shapes(layers: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for i in range(layers):
        shapes.update({f"model.layers.{i}.{name}.weight": shape for name, shape in PROJECTIONS.items()})
        shapes[f"model.layers.{i}.input_layernorm.weight"] = (HIDDEN,)
        shapes[f"model.layers.{i}.post_attention_layernorm.weight"] = (HIDDEN,)
    return shapes


def write_model(folder: Path, shapes: dict, seed: int, dtype: torch.dtype, base: dict | None = None) -> dict:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in shapes.items():
        noise = torch.randn(shape, generator=generator) * 0.02
        tensors[name] = ((base[name].float() + noise * 0.05) if base is not None else noise).to(dtype)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": HIDDEN}))
    save_file(tensors, str(folder / "model.safetensors"))
    return tensors


def write_adapter(folder: Path, layers: int, rank: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(layers):
        for name, (out, inner) in PROJECTIONS.items():
            stem = f"base_model.model.model.layers.{i}.{name}"
            tensors[f"{stem}.lora_A.weight"] = torch.randn(rank, inner, generator=generator) * 0.01
            tensors[f"{stem}.lora_B.weight"] = torch.randn(out, rank, generator=generator) * 0.01
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": [p.split(".")[1] for p in PROJECTIONS]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "adapter_model.safetensors"))


def peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM; unlike ru_maxrss, not inherited from the parent)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def read_floor(folders: list[Path]) -> float:
    """Seconds to read every tensor of these models once with safetensors: the I/O floor."""
    from safetensors import safe_open

    start = time.perf_counter()
    for folder in folders:
        with safe_open(str(folder / "model.safetensors"), framework="pt", device="cpu") as handle:
            for name in handle.keys():
                handle.get_tensor(name).clone()  # a copy: the tensor alone may only map the file
    return time.perf_counter() - start


def measure(root: Path, models: int) -> None:
    """In a fresh process (so that peak RSS is the similarity's, not the writing's): time both runs."""
    from merges.similarity import similarity

    full = {f"ct-{i}": root / f"ct-{i}" for i in range(models)}
    adapters = {f"lora-{i}": root / f"lora-{i}" for i in range(models)}
    rss_start = peak_rss_kib()
    start = time.perf_counter()
    read = similarity(full, ("base", root / "base")).bytes_read
    seconds = time.perf_counter() - start
    rss = peak_rss_kib()
    floor = read_floor([root / "base", *full.values()])  # after the peak is taken: it holds whole tensors
    start = time.perf_counter()
    adapter_read = similarity(adapters).bytes_read
    adapter_seconds = time.perf_counter() - start
    print(json.dumps({"floor": floor, "seconds": seconds, "read": read, "rss_start": rss_start, "rss": rss,
                      "adapter_seconds": adapter_seconds, "adapter_read": adapter_read}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=7)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process's folder
    args = parser.parse_args()
    if args.measure is not None:
        measure(args.measure, args.models)
        return 0
    dtype = getattr(torch, args.dtype)
    shapes = layer_shapes(args.layers)
    with tempfile.TemporaryDirectory(prefix="similarity-bench-") as tmp:
        root = Path(tmp)
        base = write_model(root / "base", shapes, 0, dtype)
        for i in range(args.models):
            write_model(root / f"ct-{i}", shapes, i + 1, dtype, base)
            write_adapter(root / f"lora-{i}", args.layers, args.rank, 100 + i)
        del base
        child = subprocess.run([sys.executable, __file__, "--measure", str(root), "--models", str(args.models)],
                               capture_output=True, text=True, check=True)
    got = json.loads(child.stdout.splitlines()[-1])
    rate = got["read"] / got["seconds"]
    paper_bytes = 8 * LLAMA2_7B_PARAMS * 2
    print(f"{args.models} full models + base, {args.layers} Llama-2-7B layer(s), {args.dtype}: "
          f"{got['read'] / 1e9:.2f} GB read in {got['seconds']:.1f} s = {rate / 1e9:.3f} GB/s, "
          f"{got['seconds'] / got['floor']:.1f}x the I/O floor ({got['floor']:.1f} s to read the same tensors); "
          f"peak RSS {got['rss'] / 2**20:.2f} GiB (after imports: {got['rss_start'] / 2**20:.2f} GiB)")
    print(f"{args.models} adapters, rank {args.rank}: {got['adapter_read'] / 1e6:.0f} MB of factors "
          f"in {got['adapter_seconds']:.2f} s")
    print(f"paper's 7 CT models + base (8 x 6.74B params, float16, {paper_bytes / 1e9:.0f} GB): "
          f"estimated {paper_bytes / rate / 60:.0f} min at this rate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
