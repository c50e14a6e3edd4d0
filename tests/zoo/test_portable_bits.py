"""A zoo has the same bits whatever the number of cores it is built on.

The regression baseline pins the zoo models' hashes, so a zoo that changed with the core count
would fail `harness regress` on every machine but the one the baseline was made on.
"""

import hashlib
import json
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Builds a zoo as a machine with `cores` cores would: the process may run on that many cores,
# and torch, OpenMP, MKL and the tokenizers library (Rayon) default to that many threads.
BUILD_ON_CORES = """
import os, pickle, sys
from pathlib import Path

dest, cores = Path(sys.argv[1]), int(sys.argv[2])
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
import torch

torch.set_num_threads(cores)
from harness.zoo.build import build

build(dest, pickle.load(sys.stdin.buffer), progress=False, workers=cores)
"""


def build_on_cores(dest: Path, config, cores: int) -> None:
    threads = str(cores)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "RAYON_NUM_THREADS": threads,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", BUILD_ON_CORES, str(dest), threads],
                   input=pickle.dumps(config), env=env, check=True, timeout=600)


def file_hashes(zoo: Path) -> dict[str, str]:
    """sha256 of every file of the zoo but its manifest (which records build times)."""
    return {str(path.relative_to(zoo)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(zoo.rglob("*")) if path.is_file() and path.name != "zoo.json"}


def test_a_zoo_built_on_one_core_and_on_two_is_bit_identical(tmp_path, tiny_config):
    config = replace(tiny_config, languages=("uig",))  # seven: base, sft-flan, ct-uig and its two, lora-uig, lora-comb
    one, two = tmp_path / "one-core", tmp_path / "two-cores"
    build_on_cores(one, config, cores=1)  # one model at a time, in the building process
    build_on_cores(two, config, cores=2)  # two models at a time, in worker processes
    hashes_one, hashes_two = file_hashes(one), file_hashes(two)
    assert any(name.endswith("model.safetensors") for name in hashes_one)
    assert hashes_one.keys() == hashes_two.keys()
    differing = [name for name in hashes_one if hashes_one[name] != hashes_two[name]]
    assert not differing, f"files that depend on the number of cores: {differing}"
    assert any(name.endswith("adapter_model.safetensors") for name in hashes_one)
    assert len(heldout_losses(one)) == 7  # every model's
    assert heldout_losses(one) == heldout_losses(two)


def heldout_losses(zoo: Path) -> dict[str, dict]:
    """Each model's held-out losses from the zoo's manifest."""
    records = json.loads((zoo / "zoo.json").read_text())["artifacts"]
    return {name: record["heldout_loss"] for name, record in records.items() if "heldout_loss" in record}
