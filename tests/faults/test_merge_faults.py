"""Faults during `harness merge`: each ends in one line naming the culprit, a non-zero exit, no
traceback and no output or partial folder left behind; an interrupted merge, rerun, gives the
same bytes as an uninterrupted one.

- merged values that are not finite although the inputs are (a recipe parameter overflowed them);
- Ctrl-C (SIGINT) and SIGTERM during a merge: the merge stops within about a second;
- disk full (ENOSPC) and a read-only output folder: on a real small tmpfs where this machine lets
  an unprivileged user+mount namespace mount one (`unshare -rm`), else skipped; ENOSPC also
  simulated in-process, and a folder without write permission (skipped as root);
- truncated or corrupt safetensors inputs and indexes.
"""

from __future__ import annotations

import errno
import filecmp
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

import merges.io
from harness import cli
from merges import MergeError
from merges.kernels import ties_cpu
from tests.merges.conftest import finetuned, llama_config, random_weights, save_checkpoint

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def harness_merge(*argv: str, capsys) -> tuple[int, list[str]]:
    """`harness merge ...` in-process: the exit code and stderr's lines, progress bar left out."""
    capsys.readouterr()
    code = cli.main(["merge", *argv])
    return code, [line for line in capsys.readouterr().err.strip().splitlines() if "tensor/s]" not in line]


def assert_nothing_left(parent: Path) -> None:
    """Neither the output folder nor a `.NAME.partial-PID` folder in the output's (empty) parent."""
    assert not parent.exists() or os.listdir(parent) == [], sorted(os.listdir(parent))


def write_recipe(folder: Path, recipe: dict) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


# ---- merged values that are not finite ---------------------------------------------------------

def three_models(tmp_path: Path, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> dict[str, str]:
    base = {name: tensor * scale for name, tensor in random_weights(0, dtype=torch.float32).items()}
    tuned = {f"m{i}": finetuned(base, i, scale=1.0) for i in (1, 2)}  # task vectors of about 1
    config = llama_config(dtype=str(dtype).removeprefix("torch."))
    folders = {"base": save_checkpoint(tmp_path / "base", {k: v.to(dtype) for k, v in base.items()}, config)}
    for name, tensors in tuned.items():
        folders[name] = save_checkpoint(tmp_path / name, {k: v.to(dtype) for k, v in tensors.items()}, config)
    return {name: str(folder) for name, folder in folders.items()}


def recipe_of(models: dict[str, str], method: str, parameters: dict | None = None,
              model_parameters: dict | None = None, **top) -> dict:
    """A recipe merging m1 and m2 (over base, for the methods that take one)."""
    return {"merge_method": method, **({"base_model": models["base"]} if method != "linear" else {}),
            "models": [{"model": models[name], "parameters": dict(model_parameters or {"weight": 1.0})}
                       for name in ("m1", "m2")],
            "parameters": parameters or {}, **top}


NOT_FINITE = (r"harness merge: error: tensor [\w.]+\.weight: the merged values are NaN or infinite although every "
              r"input is finite; likely culprit: ")


@pytest.mark.parametrize("method, parameters, model_parameters, top, culprit", [
    ("task_arithmetic", {"lambda": 1e38}, None, {}, r"parameters\.lambda = 1e\+38"),
    ("linear", {"normalize": False}, {"weight": 3e38}, {}, r"models\[0\]\.parameters\.weight = 3e\+38"),
    ("linear", {}, None, {"dtype": "float16"}, r"dtype float16"),
])
def test_merged_values_that_are_not_finite_are_refused_naming_tensor_and_parameter(
        method, parameters, model_parameters, top, culprit, tmp_path, capsys):
    scale = 1e7 if top.get("dtype") == "float16" else 1.0  # beyond float16's 65504
    models = three_models(tmp_path / "models", torch.float32, scale)
    recipe = write_recipe(tmp_path, recipe_of(models, method, parameters, model_parameters, **top))
    code, err = harness_merge(str(recipe), str(tmp_path / "out" / "merged"), capsys=capsys)
    assert code == 2 and len(err) == 1, err
    assert re.match(NOT_FINITE + culprit, err[0]), err[0]
    assert_nothing_left(tmp_path / "out")


@pytest.mark.parametrize("kernel", [True, False], ids=["fused CPU kernel", "torch"])
def test_a_ties_merge_that_overflows_is_refused_on_either_path(kernel, tmp_path, capsys, monkeypatch):
    from merges import engine

    if kernel and ties_cpu.library() is None:
        pytest.skip("no C compiler: TIES runs as torch operations here")
    if not kernel:
        monkeypatch.setattr(engine.Merge, "_uses_cpu_kernel", lambda self, name, out: False)
    kernel_calls, real_kernel = [], ties_cpu.merge
    monkeypatch.setattr(ties_cpu, "merge", lambda *args: kernel_calls.append(1) or real_kernel(*args))
    models = three_models(tmp_path / "models", torch.bfloat16)
    recipe = write_recipe(tmp_path, recipe_of(models, "ties", {"lambda": 1e38}, {"weight": 1.0, "density": 0.5},
                                              dtype="bfloat16"))
    code, err = harness_merge(str(recipe), str(tmp_path / "out" / "merged"), capsys=capsys)
    assert code == 2 and len(err) == 1, err
    assert re.match(NOT_FINITE + r"parameters\.lambda = 1e\+38", err[0]), err[0]
    assert bool(kernel_calls) == kernel
    assert_nothing_left(tmp_path / "out")


# ---- Ctrl-C and SIGTERM ------------------------------------------------------------------------

BIG_MODELS = ("m1", "m2", "m3")


def big_models(folder: Path) -> dict[str, str]:
    """A base and three bfloat16 fine-tunes whose DARE-TIES merge takes several seconds on 2
    cores (torch methods: the fused kernel is TIES only), in many small tensors: a long queue to
    cancel, each tensor quick to finish."""
    shapes = {f"model.layers.{i}.mlp.{kind}.weight": (512, 1024) for i in range(64) for kind in ("up", "down")}
    generator = torch.Generator().manual_seed(0)
    base = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    folders = {}
    for name, noise in (("base", 0.0), *((model, 0.01 * (i + 1)) for i, model in enumerate(BIG_MODELS))):
        folders[name] = folder / name
        folders[name].mkdir(parents=True)
        (folders[name] / "config.json").write_text(json.dumps({"architectures": ["Toy"], "model_type": "toy"}))
        tensors = {k: (v + noise * torch.randn(v.shape, generator=generator)).to(torch.bfloat16) for k, v in base.items()}
        save_file(tensors, str(folders[name] / "model.safetensors"))
    return {name: str(path) for name, path in folders.items()}


@pytest.fixture(scope="module")
def big_recipe(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("big")
    models = big_models(folder)
    recipe = {"merge_method": "dare_ties", "base_model": models["base"], "dtype": "bfloat16",
              "models": [{"model": models[name], "parameters": {"weight": 1.0, "density": 0.5}} for name in BIG_MODELS]}
    return write_recipe(folder, recipe)


@pytest.fixture(scope="module")
def complete_merge(big_recipe) -> tuple[Path, float]:
    """The big recipe merged without interruption, and how long that took."""
    out = big_recipe.parent / "complete"
    start = time.monotonic()
    process = merge_process(big_recipe, out)
    assert process.wait(timeout=300) == 0, process.communicate()
    return out, time.monotonic() - start


@pytest.mark.parametrize("fault", ["Ctrl-C", "an error in another tensor"])
def test_a_stopped_merge_drops_its_queue_and_running_tensors_stop_at_their_next_write(fault, tmp_path, monkeypatch):
    """In-process and deterministic: while the first two tensors merge (one per thread), the
    first is interrupted (Ctrl-C: SIGINT to this process, which Python raises in the main
    thread) or fails. The queued third tensor never starts, the second stops at its next write,
    nothing is published."""
    from merges import engine
    from merges.io import MergeCancelled

    models = small_models(tmp_path / "models")
    real_merge_into, started, cancelled = engine.Merge.merge_into, [], []

    def merge_into(self, job, writer):
        started.append(job.name)
        if len(started) == 1:
            time.sleep(0.2)  # the second thread starts its tensor meanwhile
            if fault == "Ctrl-C":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise MergeError("a bad tensor")
        time.sleep(0.5)  # still running when the merge stops
        try:
            return real_merge_into(self, job, writer)
        except MergeCancelled:
            cancelled.append(job.name)
            raise

    monkeypatch.setattr(engine.Merge, "merge_into", merge_into)
    recipe = recipe_of(models, "task_arithmetic")
    with pytest.raises(KeyboardInterrupt if fault == "Ctrl-C" else MergeError):
        engine.run_merge(recipe, Path, tmp_path / "out" / "merged", threads=2, progress=False)
    assert len(started) == 2, started
    assert sorted(cancelled) == sorted(started if fault == "Ctrl-C" else started[1:])
    assert_nothing_left(tmp_path / "out")


def test_the_failing_tensor_is_named_even_when_a_tensor_it_cancelled_finishes_first(tmp_path, monkeypatch):
    """The failing tensor cancels the writer and only then raises; a tensor running beside it hits the
    cancelled writer and finishes first, with MergeCancelled. The error shown is the real one."""
    from merges import engine
    from merges.io import MergeCancelled

    models = small_models(tmp_path / "models")
    started = []

    def merge_into(self, job, writer):
        started.append(job.name)
        if len(started) == 1:
            time.sleep(0.2)  # the second thread starts its tensor meanwhile
            writer.cancel()
            time.sleep(0.3)  # the second tensor's MergeCancelled completes its future first
            raise MergeError("the real failure")
        while not writer.cancelled:
            time.sleep(0.01)
        raise MergeCancelled(f"tensor {job.name}: the merge was cancelled")

    monkeypatch.setattr(engine.Merge, "merge_into", merge_into)
    with pytest.raises(MergeError, match="the real failure"):
        engine.run_merge(recipe_of(models, "task_arithmetic"), Path, tmp_path / "out" / "merged", threads=2,
                         progress=False)
    assert_nothing_left(tmp_path / "out")


def merge_process(recipe: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", "merge", str(recipe), str(out), "--threads", "2"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_merging(process: subprocess.Popen, out: Path, timeout: float = 60) -> None:
    """Until the merge's partial folder holds its shard (the threads are merging), then a little more."""
    partial = out.parent / f".{out.name}.partial-{process.pid}"
    deadline = time.monotonic() + timeout
    while not list(partial.glob("*.safetensors")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the merge did not start"
        time.sleep(0.05)
    time.sleep(0.5)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_merge_stops_within_seconds_and_leaves_nothing(signum, big_recipe, complete_merge, tmp_path):
    complete, merge_seconds = complete_merge
    out = tmp_path / "out" / "merged"
    process = merge_process(big_recipe, out)
    wait_until_merging(process, out)
    sent = time.monotonic()
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    stopped_after = time.monotonic() - sent
    assert process.returncode == 130, stderr
    assert stopped_after < 3, f"stopped {stopped_after:.1f} s after the signal (a whole merge: {merge_seconds:.1f} s)"
    lines = [line for line in stderr.strip().splitlines() if "tensor/s]" not in line and line.strip()]
    assert lines == ["harness merge: interrupted"], stderr
    assert "Traceback" not in stderr
    assert_nothing_left(out.parent)

    if signum != signal.SIGINT:
        return  # the state left is the same (nothing): one rerun, which takes a whole merge, is enough
    # Run again: the same bytes as the uninterrupted merge.
    rerun = merge_process(big_recipe, out)
    assert rerun.wait(timeout=300) == 0, rerun.communicate()
    assert sorted(os.listdir(out)) == sorted(os.listdir(complete))
    _, mismatch, errors = filecmp.cmpfiles(out, complete, os.listdir(complete), shallow=False)
    assert mismatch == [] and errors == []


# ---- disk full and read-only folders -----------------------------------------------------------

def small_models(folder: Path) -> dict[str, str]:
    """Three float32 checkpoints with a 12 MB merge: more than the small tmpfs below holds."""
    generator = torch.Generator().manual_seed(1)
    shapes = {f"layer.{i}.weight": (1024, 1024) for i in range(3)}
    folders = {}
    for name in ("base", "m1", "m2"):
        folders[name] = folder / name
        folders[name].mkdir(parents=True)
        (folders[name] / "config.json").write_text(json.dumps({"architectures": ["Toy"], "model_type": "toy"}))
        (folders[name] / "tokenizer.json").write_text(json.dumps({"model": name}))
        save_file({k: torch.randn(shape, generator=generator) for k, shape in shapes.items()},
                  str(folders[name] / "model.safetensors"))
    return {name: str(path) for name, path in folders.items()}


@pytest.fixture
def small_recipe(tmp_path) -> Path:
    return write_recipe(tmp_path, recipe_of(small_models(tmp_path / "models"), "task_arithmetic"))


def can_mount_tmpfs() -> str | None:
    """Why a user+mount namespace cannot mount a tmpfs here, or None when it can."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"cannot mount a tmpfs in a user namespace: {probe.stderr.strip()}"


def merge_on_tmpfs(mount_point: Path, options: str, *argv: str, env: dict | None = None) -> tuple[int, str, str]:
    """`harness merge ARGV...` with a fresh tmpfs mounted (`options`) at MOUNT in a user+mount
    namespace; returns the exit code, stderr and what the tmpfs holds afterwards (dot files too,
    folders listed with their contents)."""
    mount_point.mkdir(exist_ok=True)
    script = (f'mount -t tmpfs -o {options} tmpfs "$1" || exit 99; shift; "$@"; code=$?; '
              f'echo "LEFT:$(cd "{mount_point}" && find . -mindepth 1 | sort | tr "\\n" " ")" >&2; exit $code')
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", str(mount_point), sys.executable, "-m",
                             "harness.cli", "merge", *argv],
                            env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=300)
    assert result.returncode != 99, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if "tensor/s]" not in line and line.strip()]
    left = lines.pop()
    assert left.startswith("LEFT:"), result.stderr
    return result.returncode, "\n".join(lines), left.removeprefix("LEFT:").strip()


@pytest.mark.parametrize("options, message", [
    ("size=2m", "No space left on device"),
    ("ro,size=2m", "Read-only file system"),
])
def test_disk_full_or_read_only_on_a_real_tmpfs(options, message, small_recipe, tmp_path):
    reason = can_mount_tmpfs()
    if reason:
        pytest.skip(reason)
    code, stderr, left = merge_on_tmpfs(tmp_path / "mnt", options, str(small_recipe), str(tmp_path / "mnt" / "merged"))
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert re.match(rf"harness merge: error: cannot write the merged model {re.escape(str(tmp_path))}/mnt/merged: "
                    rf"{message}: {re.escape(str(tmp_path))}/mnt/\.merged\.partial-\d+", stderr), stderr
    assert left == ""  # no partial folder on the full (or read-only) file system


@pytest.mark.parametrize("options, message", [
    ("size=8k", r"cannot write the merged model {home}/merges/ties-\S+: No space left on device: "
                r"{home}/merges/\.ties-\S+\.partial-\d+/\S+"),  # the shard or the file written before it
    ("ro", r"cannot write the merge cache {home}/merges: Read-only file system"),
])
def test_a_full_or_read_only_merge_cache_is_one_line(options, message, tmp_path):
    """`harness merge ID` builds into the merge cache under HARNESS_HOME, here a small tmpfs."""
    reason = can_mount_tmpfs()
    if reason:
        pytest.skip(reason)
    models = small_models(tmp_path / "models")
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"name": "faults", "models": {
        **{name: {"kind": "base" if name == "base" else "ct", "path": models[name], "langs": ["tam"]}
           for name in models},
        "ties": {"kind": "merge", "langs": ["tam"], "recipe": {
            "merge_method": "ties", "base_model": "base",
            "models": [{"model": name, "parameters": {"weight": 1.0, "density": 0.5}} for name in ("m1", "m2")]}}}}))
    home = tmp_path / "home"
    code, stderr, left = merge_on_tmpfs(home, options, "ties", "--registry", str(registry),
                                        env={"HARNESS_HOME": str(home)})
    assert code == 2 and "Traceback" not in stderr, stderr
    assert re.fullmatch("harness merge: error: " + message.format(home=re.escape(str(home))), stderr), stderr
    # Only the entry's lock file (kept, as filelock does) is left in the cache: no partial, no merge.
    assert [entry for entry in left.split() if entry.startswith("./merges/") and not entry.endswith(".lock")] == []


def test_disk_full_while_writing_a_shard_is_one_line_naming_it(small_recipe, tmp_path, monkeypatch, capsys):
    real_pwrite, calls = os.pwrite, []

    def pwrite(fd, data, offset):
        calls.append(offset)
        if len(calls) > 1:  # the first tensor fits, the disk is full after it
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(merges.io.os, "pwrite", pwrite)
    out = tmp_path / "out" / "merged"
    code, err = harness_merge(str(small_recipe), str(out), capsys=capsys)
    assert code == 2, err
    assert len(err) == 1 and re.fullmatch(
        rf"harness merge: error: cannot write the merged model {re.escape(str(out))}: No space left on device: "
        rf"{re.escape(str(out.parent))}/\.merged\.partial-{os.getpid()}/model-00001-of-00001\.safetensors", err[0]), err
    assert_nothing_left(out.parent)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a folder without write permission")
def test_a_folder_without_write_permission_is_one_line_naming_it(small_recipe, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, err = harness_merge(str(small_recipe), str(locked / "merged"), capsys=capsys)
        assert code == 2 and len(err) == 1, err
        assert re.fullmatch(rf"harness merge: error: cannot write the merged model {re.escape(str(locked))}/merged: "
                            rf"Permission denied: {re.escape(str(locked))}/\.merged\.partial-\d+", err[0]), err
        assert_nothing_left(locked)
    finally:
        locked.chmod(0o755)


# ---- truncated or corrupt inputs ---------------------------------------------------------------

def corrupt(folder: Path, problem: str) -> Path:
    """Damage the checkpoint in `folder`; returns the file the error must name."""
    shard = folder / "model.safetensors"
    data = shard.read_bytes()
    index = folder / "model.safetensors.index.json"
    damaged = {
        "empty file": (shard, b""),
        "not safetensors": (shard, b"PK\x03\x04 a zip file, say" * 10),
        "header length beyond the file": (shard, struct.pack("<Q", 1 << 40) + data[8:]),
        "header not JSON": (shard, struct.pack("<Q", 16) + b"{not json at all" + data[24:]),
        "data truncated": (shard, data[:len(data) // 2]),
        "index not JSON": (index, b"{\"weight_map\": "),
        "index not UTF-8": (index, b"\xff\xfe{}"),
        "index a list": (index, b"[]"),
        "index weight_map not a mapping": (index, b"{\"weight_map\": [\"model.safetensors\"]}"),
    }
    path, content = damaged[problem]
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("problem", ["empty file", "not safetensors", "header length beyond the file",
                                     "header not JSON", "data truncated", "index not JSON", "index not UTF-8",
                                     "index a list", "index weight_map not a mapping"])
def test_a_truncated_or_corrupt_input_is_one_line_naming_the_file(problem, small_recipe, tmp_path, capsys):
    models = yaml.safe_load(small_recipe.read_text())
    damaged = corrupt(Path(models["models"][1]["model"]), problem)
    out = tmp_path / "out" / "merged"
    code, err = harness_merge(str(small_recipe), str(out), capsys=capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("harness merge: error: model ") and str(damaged) in err[0], err[0]
    assert_nothing_left(tmp_path / "out")
