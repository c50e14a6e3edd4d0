"""Bad input through the real `harness` program: one line naming the culprit, and nothing else happens.

Each case runs `python -m harness.cli ...` in a subprocess inside a small world (a registry of
tiny random checkpoints, local task data, an empty results store in the harness home) after
breaking one thing in it, and asserts what a user relies on:
- the exit code is 2, as for every user error;
- stderr ends with one line `harness <command>: error: ...` that names the culprit;
- no "Traceback" anywhere in the output;
- nothing new on disk (no run folder, merge, partial file), except the file-hash cache;
- no row in the results store.

Every case fails before a server, lm-eval's scoring or the zoo's training starts, so the table runs
in the fast tier.
"""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from tasks.languages import MLIC, data_code
from tests.merges.conftest import finetuned, random_weights, save_checkpoint
from tests.tasks.conftest import _write_mlic

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HOME = "harness-home"  # the harness home inside the world (the conftest's autouse fixture points HARNESS_HOME there)
# Written by a run that fails later: a complete cache of checkpoint file hashes, never partial.
ALLOWED_NEW = {f"{HOME}/cache", f"{HOME}/cache/file_hashes.json"}
UIG_MLIC = data_code("uig", MLIC)
TC_DEV = "lrm_mlic_tc_uig_dev"

REGISTRY = """\
name: faults
models:
  base: {kind: base, path: models/base}
  sft: {kind: sft, path: models/sft}
  ct-uig: {kind: ct, langs: [uig], path: models/ct}
  ties-uig:
    kind: merge
    langs: [uig]
    recipe:
      merge_method: ties
      base_model: base
      models:
        - {model: ct-uig, parameters: {density: 0.5, weight: 1.0}}
        - {model: sft, parameters: {density: 0.5, weight: 1.0}}
  wavg-uig:
    kind: merge
    langs: [uig]
    recipe:
      merge_method: linear
      models:
        - {model: ct-uig, parameters: {weight: 0.5}}
        - {model: sft, parameters: {weight: 0.5}}
"""


# ---- the world ----------------------------------------------------------------------------------

def make_world(root: Path) -> Path:
    """Tiny checkpoints (with a tokenizer file), the registry, uig MLiC-Eval data, an empty store."""
    base = random_weights(0)
    for name, weights in (("base", base), ("sft", finetuned(base, 1)), ("ct", finetuned(base, 2))):
        folder = save_checkpoint(root / "models" / name, weights)
        write_tokenizer(folder)
    (root / "registry.yaml").write_text(REGISTRY)
    _write_mlic(root / "data", UIG_MLIC)
    from harness.store import ResultStore

    ResultStore(f"sqlite:///{root / HOME / 'results.db'}").engine.dispose()
    return root


def write_tokenizer(folder: Path) -> None:
    """A minimal tokenizer that loads: the cases after the tokenizer check (bad task data) reach it."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    Tokenizer(WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")).save(str(folder / "tokenizer.json"))


def snapshot(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def stored_rows(root: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{root / HOME / 'results.db'}")
    with engine.connect() as conn:
        count = sum(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
                    for table in ("results", "models", "sweep_trials"))
    engine.dispose()
    return count


def harness(root: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HARNESS_HOME": str(root / HOME), "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", "harness.cli", *argv], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


# ---- ways to break the world --------------------------------------------------------------------

def write(relative: str, content: str | bytes) -> Callable[[Path], None]:
    def prepare(root: Path) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return prepare


def add_models(entries: str) -> Callable[[Path], None]:
    """More registry entries (YAML lines under `models:`)."""

    def prepare(root: Path) -> None:
        with open(root / "registry.yaml", "a") as registry:
            registry.write(entries)

    return prepare


def copy_of_ct(name: str, damage: Callable[[Path], None]) -> Callable[[Path], None]:
    """A damaged copy of the ct checkpoint in models/<name>, registered as id <name> (language uig)."""

    def prepare(root: Path) -> None:
        import shutil

        shutil.copytree(root / "models" / "ct", root / "models" / name)
        damage(root / "models" / name)
        add_models(f"  {name}: {{kind: ct, langs: [uig], path: models/{name}}}\n")(root)

    return prepare


def truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)


def pickle_only(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def no_tokenizer(folder: Path) -> None:
    (folder / "tokenizer.json").unlink()


def edit_data(task_file: str, edit: Callable[[list[dict]], None]) -> Callable[[Path], None]:
    """Change the rows of one MLiC-Eval uig JSON file (e.g. `tc/dev.json`)."""

    def prepare(root: Path) -> None:
        kind, name = task_file.split("/")
        from tasks import layout

        path = layout.mlic_dir(root / "data", kind, UIG_MLIC) / name
        rows = json.loads(path.read_text(encoding="utf-8"))
        edit(rows)
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")

    return prepare


def set_first(key: str, value) -> Callable[[list[dict]], None]:
    def edit(rows: list[dict]) -> None:
        rows[0][key] = value

    return edit


def latin1_data(root: Path) -> None:
    from tasks import layout

    path = layout.mlic_dir(root / "data", "tc", UIG_MLIC) / "dev.json"
    path.write_bytes(path.read_bytes().replace(b"text 0", "t\xe9xt 0".encode("latin-1")))


def damaged_merge_cache(root: Path) -> None:
    """Build ties-uig into the merge cache, then damage its statistics file."""
    from harness.build import materialize
    from harness.registry import load_registry

    built = materialize(load_registry(root / "registry.yaml"), "ties-uig", progress=False)
    (built.path / "conflict_stats.json").write_text("{ not json")


def truncated_store(root: Path) -> None:
    store = root / HOME / "results.db"
    data = store.read_bytes()
    (root / "truncated.db").write_bytes(data[: len(data) // 3])


def recipe(method: str, parameters: str) -> str:
    """A recipe file over the world's checkpoint folders; `parameters` are each model's."""
    return (f"merge_method: {method}\nbase_model: models/base\nmodels:\n"
            f"  - {{model: models/ct, parameters: {{{parameters}}}}}\n"
            f"  - {{model: models/sft, parameters: {{{parameters}}}}}\n")


def tiny_gguf(relative: str, architecture: str) -> Callable[[Path], None]:
    """A valid GGUF file of one small float32 tensor, declaring `architecture`."""

    def prepare(root: Path) -> None:
        import gguf
        import numpy as np

        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = gguf.GGUFWriter(str(path), architecture)
        writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return prepare


def both(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def prepare(root: Path) -> None:
        for step in steps:
            step(root)

    return prepare


# ---- the table ----------------------------------------------------------------------------------

REG = ("--registry", "registry.yaml")
EVAL = ("eval", *REG, "--backend", "hf", "--data-dir", "data", "--split", "dev", "--tasks", TC_DEV)


@dataclass(frozen=True)
class BadInput:
    id: str
    argv: tuple[str, ...]  # after `harness`, run in the world folder
    culprit: str  # what the error line must name
    prepare: Callable[[Path], None] = field(default=lambda root: None)


CASES = [
    # the command line
    BadInput("unknown-model", ("eval", *REG, "--model", "nosuch"), "'nosuch'"),
    BadInput("unknown-lang", ("eval", *REG, "--model", "ct-uig", "--lang", "xx"), "xx"),
    BadInput("limit-zero", (*EVAL, "--model", "ct-uig", "--limit", "0"), "--limit"),
    BadInput("threads-negative", ("merge", "recipe.yaml", "out", "--threads", "-2"), "threads",
             write("recipe.yaml", recipe("ties", "density: 0.5, weight: 1.0"))),
    BadInput("store-in-memory", (*EVAL, "--model", "ct-uig", "--store", "sqlite://"), "in-memory"),
    # registry files
    BadInput("registry-duplicate-id", ("models", "--registry", "dup.yaml"), "duplicate key 'a'",
             write("dup.yaml", "models:\n  a: {kind: base, path: x}\n  a: {kind: sft, path: y}\n")),
    BadInput("registry-aliases-string", ("models", "--registry", "alias.yaml"), "aliases",
             write("alias.yaml", "models:\n  a: {kind: base, path: x, aliases: bas}\n")),
    BadInput("registry-binary", ("models", "--registry", "binary.yaml"), "binary.yaml is not UTF-8",
             write("binary.yaml", bytes(range(128, 256)) * 4)),
    BadInput("registry-latin1", ("models", "--registry", "latin1.yaml"), "latin1.yaml is not UTF-8",
             write("latin1.yaml", "models:\n  a: {kind: base, path: caf\xe9}\n".encode("latin-1"))),
    BadInput("registry-list-key", ("models", "--registry", "key.yaml"), "a key must be a name",
             write("key.yaml", "models:\n  [a, b]: {kind: base, path: x}\n")),
    BadInput("registry-path-list", ("models", "--registry", "path.yaml"), "path must be text",
             write("path.yaml", "models:\n  a: {kind: base, path: [x, y]}\n")),
    # recipes and grids
    BadInput("weight-nan", ("merge", "recipe.yaml", "out"), "weight",
             write("recipe.yaml", recipe("ties", "density: 0.5, weight: .nan"))),
    BadInput("density-inf", ("merge", "recipe.yaml", "out"), "density",
             write("recipe.yaml", recipe("ties", "density: .inf, weight: 1.0"))),
    BadInput("linear-weights-sum-zero", ("merge", "recipe.yaml", "out"), "weight",
             write("recipe.yaml", "merge_method: linear\nmodels:\n  - {model: models/ct, parameters: {weight: 1.0}}\n"
                                  "  - {model: models/sft, parameters: {weight: -1.0}}\n")),
    BadInput("grid-sft-weight-1.5", ("sweep", *REG, "--model", "wavg-uig", "--grid-file", "grid.yaml", "--backend", "hf",
                                     "--data-dir", "data"), "sft_weight",
             write("grid.yaml", "sft_weight: [1.5]\n")),
    BadInput("grid-density-nan", ("sweep", *REG, "--model", "ties-uig", "--grid-file", "grid.yaml", "--backend", "hf",
                                  "--data-dir", "data"), "density",
             write("grid.yaml", "models.sft.density: [.nan]\n")),
    # checkpoints
    BadInput("checkpoint-pickle-only", (*EVAL, "--model", "pickled"), "safetensors", copy_of_ct("pickled", pickle_only)),
    BadInput("checkpoint-truncated", (*EVAL, "--model", "truncated"), "model.safetensors",
             copy_of_ct("truncated", truncate_weights)),
    BadInput("checkpoint-config-not-json", (*EVAL, "--model", "badconfig"), "config.json",
             copy_of_ct("badconfig", lambda folder: (folder / "config.json").write_text("{ not json"))),
    BadInput("checkpoint-no-tokenizer", (*EVAL, "--model", "notok"), "no tokenizer", copy_of_ct("notok", no_tokenizer)),
    # GGUF checkpoints: `harness import`, and a registry path that needs it
    BadInput("import-not-gguf", ("import", "models/ct/model.safetensors", "out"), "is not a GGUF file"),
    BadInput("import-folder-without-gguf", ("import", "models/ct", "out"), "holds 0 .gguf files"),
    BadInput("import-folder-with-two-gguf", ("import", "ggufs", "out"), "holds 2 .gguf files (a.gguf, b.gguf)",
             both(tiny_gguf("ggufs/a.gguf", "llama"), tiny_gguf("ggufs/b.gguf", "llama"))),
    BadInput("import-out-dir-exists", ("import", "tiny.gguf", "models/sft"), "models/sft already exists",
             tiny_gguf("tiny.gguf", "llama")),
    BadInput("import-unsupported-architecture", ("import", "tiny.gguf", "out"), "architecture 'nosucharch'",
             tiny_gguf("tiny.gguf", "nosucharch")),
    BadInput("registry-gguf-path", (*EVAL, "--model", "gguf"), "tiny.gguf is a GGUF checkpoint",
             both(tiny_gguf("models/gguf/tiny.gguf", "llama"),
                  add_models("  gguf: {kind: ct, langs: [uig], path: models/gguf}\n"))),
    # task data
    BadInput("data-not-utf8", (*EVAL, "--model", "ct-uig"), "is not UTF-8", latin1_data),
    BadInput("data-text-null", (*EVAL, "--model", "ct-uig"), "null", edit_data("tc/dev.json", set_first("text", None))),
    BadInput("data-label-without-en", (*EVAL, "--model", "ct-uig"), "'en'",
             edit_data("tc/dev.json", set_first("label", {"zh": "x"}))),
    BadInput("tasks-broken-data", ("tasks", "--lang", "uig", "--data-dir", "data"), "is not UTF-8", latin1_data),
    # results stores
    BadInput("store-not-a-database-eval", (*EVAL, "--model", "ct-uig", "--store", "sqlite:///junk.db"),
             "file is not a database", write("junk.db", b"not a database" * 100)),
    BadInput("store-not-a-database-sweep", ("sweep", *REG, "--model", "ties-uig", "--grid", "densities", "--backend", "hf",
                                            "--data-dir", "data", "--store", "sqlite:///junk.db"),
             "file is not a database", write("junk.db", b"not a database" * 100)),
    BadInput("store-not-a-database-leaderboard", ("leaderboard", "--store", "sqlite:///junk.db"),
             "file is not a database", write("junk.db", b"not a database" * 100)),
    BadInput("store-truncated", (*EVAL, "--model", "ct-uig", "--store", "sqlite:///truncated.db"), "truncated.db",
             truncated_store),
    BadInput("leaderboard-store-url", ("leaderboard", "--store", "BAD"), "'BAD'"),
    BadInput("leaderboard-store-unknown-database", ("leaderboard", "--store", "nosuchdb://host/results"), "nosuchdb"),
    # JSON indexes the harness keeps
    BadInput("zoo-manifest-not-json", ("zoo", "info"), "zoo.json", write(f"{HOME}/zoo/zoo.json", "{ not json")),
    BadInput("zoo-manifest-binary", ("zoo", "info"), "zoo.json", write(f"{HOME}/zoo/zoo.json", bytes(range(128, 256)))),
    BadInput("merge-cache-stats-not-json", ("merge", *REG, "ties-uig"), "conflict_stats.json", damaged_merge_cache),
]


@pytest.fixture
def world(tmp_path) -> Path:
    return make_world(tmp_path)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_naming_the_culprit_and_changes_nothing(case: BadInput, world: Path):
    case.prepare(world)
    before = snapshot(world)
    result = harness(world, *case.argv)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"harness {case.argv[0]}: error: "), output
    assert case.culprit in last_line
    assert snapshot(world) - before <= ALLOWED_NEW
    assert stored_rows(world) == 0


# ---- a run folder's sample log, read by the leaderboard page ------------------------------------

@pytest.mark.parametrize("content", [b"{ not json\n", "caf\xe9".encode("latin-1") + b"\n", b"[1, 2]\n"],
                         ids=["not-json", "not-utf8", "not-an-object"])
def test_damaged_sample_log_is_one_line_naming_the_file(tmp_path, content):
    from harness import HarnessError
    from leaderboard.samples import read_samples

    path = tmp_path / "samples_lrm_mlic_tc_uig_dev_2026-01-01T00-00-00.000001.jsonl"
    path.write_bytes(b'{"doc_id": 0}\n' + content)
    with pytest.raises(HarnessError) as info:
        read_samples(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
