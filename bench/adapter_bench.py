"""Benchmark: merging language adapters into one adapter, ours against PEFT's add_weighted_adapter.

Generates (in a child process, no download) a random bf16 Llama-shaped base of about 1B
parameters (hidden 2048, 16 layers, intermediate 5632, vocabulary 32000 by default) and, per
LoRA rank, `--adapters` random PEFT adapters over it (q, k, v, o, gate, up, down; A and B
random, float32, written as safetensors directly). Then, per rank, each side in its own
subprocess (its peak RSS is the process's own, `resource.getrusage`):

  ours            `merges.merge` of the adapters with TIES (weights 1, density --density) and
                  `output: {format: adapter, rank: R}`: a PEFT adapter folder
  ours-knots      the same with knots_ties
  peft-ties_svd   PEFT: load the base, load the adapters, add_weighted_adapter(combination_type
                  "ties_svd", same weights and density, svd_rank R, svd_full_matrices False:
                  PEFT's default True computes a full U that the truncation drops), save it
  peft-ties       the same with combination_type "ties" (it merges the A and B factors
                  separately, not ΔW: cheaper, and another merge; for reference)

Each side's wall time is from the start of its work (after imports) to its adapter on disk.
Last line per rank: `rank=<R> ours_vs_peft_ties_svd_wall=<ratio> ours_vs_peft_ties_wall=<ratio>
ours_peak_rss_gb=<ours> peft_ties_svd_peak_rss_gb=<peft>`.

    .venv/bin/python bench/adapter_bench.py                              # ~1B, ranks 16 and 64
    .venv/bin/python bench/adapter_bench.py --layers 4 --ranks 16        # a quick try

On a shared, loaded machine, LAPACK's OpenMP threads spin against each other (an SVD of a
1408 x 512 matrix took 2.6 s on 2 threads and 0.24 s on 1 at load 10 on 2 cores):
`--torch-threads 1` gives both sides one thread per process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
           "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
SIDES = ("ours", "ours-knots", "peft-ties_svd", "peft-ties")


def llama_config(args) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": args.hidden,
            "intermediate_size": args.intermediate, "num_hidden_layers": args.layers,
            "num_attention_heads": args.hidden // 64, "num_key_value_heads": args.hidden // 64,
            "vocab_size": args.vocab, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}


def module_shape(args, module: str) -> tuple[int, int]:
    """(out, in) of a target module."""
    if module in ("gate_proj", "up_proj"):
        return args.intermediate, args.hidden
    if module == "down_proj":
        return args.hidden, args.intermediate
    return args.hidden, args.hidden


def generate(args, root: Path) -> None:
    """The bf16 base and, per rank, the adapters, written with safetensors."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    base = root / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(llama_config(args)))
    tensors = {"model.embed_tokens.weight": (args.vocab, args.hidden), "model.norm.weight": (args.hidden,),
               "lm_head.weight": (args.vocab, args.hidden)}
    for layer in range(args.layers):
        for module, block in TARGETS.items():
            tensors[f"model.layers.{layer}.{block}.{module}.weight"] = module_shape(args, module)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"model.layers.{layer}.{norm}.weight"] = (args.hidden,)
    save_file({name: (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
               for name, shape in tensors.items()}, str(base / "model.safetensors"))
    for rank in args.ranks:
        for index in range(args.adapters):
            folder = root / f"r{rank}" / f"lang{index}"
            folder.mkdir(parents=True)
            config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(base),
                      "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0, "bias": "none",
                      "target_modules": sorted(TARGETS), "fan_in_fan_out": False, "use_rslora": False,
                      "use_dora": False, "inference_mode": True}
            (folder / "adapter_config.json").write_text(json.dumps(config))
            factors = {}
            for layer in range(args.layers):
                for module, block in TARGETS.items():
                    out, inp = module_shape(args, module)
                    stem = f"base_model.model.model.layers.{layer}.{block}.{module}"
                    factors[stem + ".lora_A.weight"] = torch.randn(rank, inp, generator=generator) / inp ** 0.5
                    factors[stem + ".lora_B.weight"] = torch.randn(out, rank, generator=generator) * 0.01
            save_file(factors, str(folder / "adapter_model.safetensors"))


def run_ours(root: Path, rank: int, density: float, method: str, out: Path) -> None:
    import merges

    adapters = sorted(p.name for p in (root / f"r{rank}").iterdir())
    recipe = {"merge_method": method, "base_model": "base",
              "models": [{"model": name, "parameters": {"weight": 1.0, "density": density}} for name in adapters],
              "output": {"format": "adapter", "rank": rank}}
    folders = {"base": root / "base", **{name: root / f"r{rank}" / name for name in adapters}}
    merges.merge(recipe, folders, out, progress=False)


def run_peft(root: Path, rank: int, density: float, combination: str, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapters = sorted((root / f"r{rank}").iterdir())
    model = AutoModelForCausalLM.from_pretrained(str(root / "base"), dtype=torch.bfloat16)
    model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=adapters[0].name)
    for adapter in adapters[1:]:
        model.load_adapter(str(adapter), adapter_name=adapter.name)
    names = [adapter.name for adapter in adapters]
    # PEFT's default svd_full_matrices=True computes the full out x out U of every module, which the
    # rank-r truncation throws away: at 1B that alone ran past 38 min at rank 16. The peer is PEFT at
    # its fast setting, which gives the same factors.
    options = {"svd_rank": rank, "svd_full_matrices": False} if combination.endswith("_svd") else {}
    model.add_weighted_adapter(names, [1.0] * len(names), "merged", combination_type=combination,
                               density=density, **options)
    model.save_pretrained(str(out), selected_adapters=["merged"])


def child(args) -> None:
    """One side, timed from here; prints its wall time and peak RSS as JSON."""
    if args.side.startswith("ours"):
        import merges  # noqa: F401  (imports are not timed, on either side)
        import torch  # noqa: F401
    else:
        import peft  # noqa: F401
        import transformers  # noqa: F401
    root, out = Path(args.root), Path(args.out)
    start = time.perf_counter()
    if args.side.startswith("ours"):
        run_ours(root, args.rank, args.density, "knots_ties" if args.side == "ours-knots" else "ties", out)
    else:
        run_peft(root, args.rank, args.density, args.side.removeprefix("peft-"), out)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux
    print(json.dumps({"wall_s": wall, "peak_rss_gb": peak}))


def child_env(args) -> dict[str, str]:
    """The environment of every child: this one, the project importable, and with --torch-threads
    the same OpenMP thread count for both sides."""
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), TOKENIZERS_PARALLELISM="false")
    if args.torch_threads:
        env["OMP_NUM_THREADS"] = str(args.torch_threads)
    return env


def timed(args, root: Path, side: str, rank: int) -> dict:
    out = root / f"out-{side}-r{rank}"
    command = [sys.executable, __file__, "--child", side, "--root", str(root), "--out", str(out),
               "--rank", str(rank), "--density", str(args.density)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, env=child_env(args))
    if done.returncode != 0:
        raise SystemExit(f"{side} at rank {rank} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  rank {rank:3d}  {side:14s} {result['wall_s']:7.1f} s  peak RSS {result['peak_rss_gb']:.2f} GB",
          flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--adapters", type=int, default=5)
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--density", type=float, default=0.5)
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="OMP_NUM_THREADS for both sides (default: torch's own choice)")
    parser.add_argument("--workdir", default=None, help="where the checkpoints go (default: a temporary folder)")
    parser.add_argument("--child", dest="side", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as temp:
        root = Path(temp)
        params = 2 * args.vocab * args.hidden + args.layers * sum(
            a * b for a, b in (module_shape(args, m) for m in TARGETS))
        print(f"base: {params / 1e9:.2f}B params bf16; {args.adapters} adapters per rank {args.ranks}; "
              f"TIES density {args.density}, weights 1", flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sys, bench.adapter_bench as b; b.generate_main(sys.argv[1:])",
                        str(root), json.dumps(vars(args))], check=True, cwd=PROJECT_ROOT, env=child_env(args))
        print(f"generated in {time.perf_counter() - start:.0f} s", flush=True)
        lines = []
        for rank in args.ranks:
            results = {side: timed(args, root, side, rank) for side in args.sides}
            line = f"rank={rank}"
            if "ours" in results:
                for peer in ("peft-ties_svd", "peft-ties"):
                    if peer in results:
                        ratio = results["ours"]["wall_s"] / results[peer]["wall_s"]
                        line += f" ours_vs_{peer.replace('-', '_')}_wall={ratio:.3f}"
                line += f" ours_peak_rss_gb={results['ours']['peak_rss_gb']:.2f}"
            if "peft-ties_svd" in results:
                line += f" peft_ties_svd_peak_rss_gb={results['peft-ties_svd']['peak_rss_gb']:.2f}"
            lines.append(line)
        print("\n".join(lines))


def generate_main(argv: list[str]) -> None:
    generate(argparse.Namespace(**json.loads(argv[1])), Path(argv[0]))


if __name__ == "__main__":
    main()
