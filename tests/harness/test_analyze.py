"""`harness analyze similarity` through the real CLI: registry ids to a printed cosine matrix that
equals merges.similarity's, stored in the results store (a rerun replaces the rows); the base is
chosen by the documented rule; bad input is one error line and exit 2, with nothing stored."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.store import ResultStore, vector_similarities
from merges.similarity import similarity
from tests.merges.conftest import finetuned, llama_config, random_weights, save_checkpoint
from tests.merges.test_lora import peft_adapter


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("analyze")
    base = random_weights(0)
    found = {
        "base": save_checkpoint(root / "base", base, llama_config()),
        "other-base": save_checkpoint(root / "other-base", finetuned(base, 9), llama_config()),
        "ct-a": save_checkpoint(root / "ct-a", finetuned(base, 1), llama_config()),
        "wide": save_checkpoint(root / "wide", finetuned(base, 2, extra_rows=2), llama_config(vocab=130)),
    }
    found["lora-a"] = peft_adapter(found["base"], root / "lora-a", seed=3, rank=4)
    found["lora-b"] = peft_adapter(found["base"], root / "lora-b", seed=4, rank=8, targets=("q_proj", "up_proj"))
    return found


def write_registry(path: Path, folders: dict[str, Path], lora_b_base: str = "base") -> Path:
    models = {
        "base": {"kind": "base", "path": str(folders["base"])},
        "other-base": {"kind": "sft", "path": str(folders["other-base"])},
        "ct-a": {"kind": "ct", "langs": ["uig"], "path": str(folders["ct-a"])},
        "wide": {"kind": "ct", "langs": ["uig"], "path": str(folders["wide"])},
        "lora-a": {"kind": "adapter", "langs": ["uig"], "path": str(folders["lora-a"]), "base": "base"},
        "lora-b": {"kind": "adapter", "langs": ["tam"], "path": str(folders["lora-b"]), "base": lora_b_base},
    }
    path.write_text(yaml.safe_dump({"name": "test", "models": models}))
    return path


@pytest.fixture
def registry(tmp_path, folders) -> Path:
    return write_registry(tmp_path / "registry.yaml", folders)


def analyze(capsys, registry: Path, store: str, *args: str) -> tuple[int, str, str]:
    code = main(["analyze", "similarity", *args, "--registry", str(registry), "--store", store])
    out, err = capsys.readouterr()
    return code, out, err


def printed_matrix(out: str, names: list[str]) -> dict[tuple[str, str], float]:
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == names)
    cells = {}
    for line in lines[header + 1: header + 1 + len(names)]:
        row, *values = line.split()
        cells.update({(row, name): float(value) for name, value in zip(names, values)})
    return cells


def test_prints_and_stores_the_cosine_matrix(capsys, tmp_path, registry, folders):
    store = f"sqlite:///{tmp_path / 'results.db'}"
    names = ["lora-a", "ct-a", "lora-b"]
    code, out, err = analyze(capsys, registry, store, *names)
    assert code == 0, err
    assert "against base 'base' (the adapters' base)" in out
    expected = similarity({name: folders[name] for name in names}, ("base", folders["base"])).cosine
    cells = printed_matrix(out, names)
    for i, x in enumerate(names):
        for j, y in enumerate(names):
            assert cells[(x, y)] == pytest.approx(float(expected[i, j]), abs=5e-4)
    rows = vector_similarities(ResultStore(store, readonly=True))
    assert len(rows) == 9 and set(rows["base"]) == {"base"}
    stored = rows.set_index(["model", "other"])["cosine"]
    assert stored[("lora-a", "ct-a")] == pytest.approx(float(expected[0, 1]), rel=1e-12)
    assert stored[("ct-a", "lora-a")] == stored[("lora-a", "ct-a")]

    assert analyze(capsys, registry, store, *names)[0] == 0  # the same builds again: rows replaced, not added
    assert len(vector_similarities(ResultStore(store, readonly=True))) == 9


def test_full_models_take_the_registrys_base_kind_model_or_base_option(capsys, tmp_path, registry, folders):
    store = f"sqlite:///{tmp_path / 'results.db'}"
    code, out, err = analyze(capsys, registry, store, "ct-a", "other-base")
    assert code == 0, err
    assert "against base 'base' (the registry's model of kind base)" in out
    code, out, err = analyze(capsys, registry, store, "ct-a", "base", "--base", "other-base")
    assert code == 0, err
    assert "against base 'other-base' (--base)" in out
    assert set(vector_similarities(ResultStore(store, readonly=True))["base"]) == {"base", "other-base"}


@pytest.mark.parametrize("ids, words", [
    (["lora-a", "ct-z"], "unknown model id 'ct-z' in registry 'test'"),
    (["ct-a", "wide"], "model 'wide': tensor lm_head.weight is [130, 64] but base model 'base' has [128, 64]"),
    (["ct-a", "base"], "model 'base': its language vector is zero (it equals base model 'base')"),
    (["lora-a", "ct-a", "lora-a"], "model 'lora-a' is given twice"),
    (["lora-a"], "similarity needs at least two model ids"),
    (["lora-a", "lora-b", "--base", "other-base"], "model 'lora-a' was trained over 'base', not --base 'other-base'"),
])
def test_bad_input_is_one_line_and_stores_nothing(capsys, tmp_path, registry, ids, words):
    store_file = tmp_path / "results.db"
    code, out, err = analyze(capsys, registry, f"sqlite:///{store_file}", *ids)
    assert code == 2
    last_line = err.strip().splitlines()[-1]  # after the progress bar, when the error comes from the vectors
    assert last_line.startswith("harness analyze: error: ") and words in last_line, err
    assert "Traceback" not in err
    assert not store_file.exists() or vector_similarities(ResultStore(f"sqlite:///{store_file}", readonly=True)).empty


def test_adapters_of_different_bases_are_refused(capsys, tmp_path, folders):
    registry = write_registry(tmp_path / "registry.yaml", folders, lora_b_base="other-base")
    code, _, err = analyze(capsys, registry, f"sqlite:///{tmp_path / 'results.db'}", "lora-a", "lora-b")
    assert code == 2
    assert err.strip() == ("harness analyze: error: the models have different bases (lora-a: base, lora-b: other-base); "
                           "compare models of one base")
