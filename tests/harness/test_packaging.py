"""A non-editable install works: the wheel holds every file the packages read, and `harness` runs from it.

The wheel is built from a copy of the source tree (so no build/ or *.egg-info lands in the
checkout), with this venv's setuptools and no network (--no-build-isolation, --no-index), and
installed with --target into a temporary folder. The commands then run from another folder with
only that install on PYTHONPATH, so nothing can be read from the source tree by accident.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("harness", "merges", "tasks", "leaderboard")
NOT_SHIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                   check=True, capture_output=True, text=True)


def package_files(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for package in PACKAGES for path in (root / package).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder the wheel was installed into (--target)."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    for package in PACKAGES:
        shutil.copytree(SOURCE_ROOT / package, source / package, ignore=NOT_SHIPPED)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(SOURCE_ROOT / name, source / name)
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(work / "dist"), str(source))
    [wheel] = (work / "dist").glob("*.whl")
    pip("install", "--no-deps", "--no-index", "--target", str(work / "site"), str(wheel))
    return work / "site"


def run_installed(installed: Path, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(installed), "HARNESS_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, *argv], cwd=elsewhere, env=env, capture_output=True, text=True)


def test_the_wheel_ships_every_file_of_the_packages(installed):
    missing = package_files(SOURCE_ROOT) - package_files(installed)
    assert not missing, f"in the source tree but not installed (pyproject's package-data?): {sorted(missing)}"


def test_harness_models_runs_from_the_installed_wheel(installed, tmp_path):
    shipped = installed.resolve() / "harness" / "registries"
    zoo = run_installed(installed, tmp_path, "-m", "harness.cli", "models")
    assert zoo.returncode == 0, zoo.stderr
    assert f"registry zoo: {shipped / 'zoo.yaml'}" in zoo.stdout  # the installed harness, not the source tree
    assert "ties-uig-flan" in zoo.stdout and "sft-flan" in zoo.stdout
    paper = run_installed(installed, tmp_path, "-m", "harness.cli", "models", "--registry", "paper", "--kind", "base")
    assert paper.returncode == 0, paper.stderr
    assert f"registry paper: {shipped / 'paper.yaml'}" in paper.stdout
    assert "meta-llama/Llama-2-7b-hf" in paper.stdout
