"""Shared fixtures.

The zoo is built once per machine into `.harness-test/` (or $HARNESS_TEST_HOME) and reused: it
is cached by its definition, so a second test run does not retrain it.
"""

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
TEST_HOME = Path(os.environ.get("HARNESS_TEST_HOME", PROJECT_ROOT / ".harness-test"))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own empty harness home unless it asks for the shared zoo home."""
    monkeypatch.setenv("HARNESS_HOME", str(tmp_path / "harness-home"))
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))


@pytest.fixture(scope="session")
def zoo_home() -> Path:
    """A harness home holding the built zoo (built on first use, then cached)."""
    from harness.zoo import build_zoo

    build_zoo(TEST_HOME / "zoo", progress=False)
    return TEST_HOME


@pytest.fixture
def use_zoo_home(zoo_home, monkeypatch) -> Path:
    """Point HARNESS_HOME at the built zoo's home for this test."""
    monkeypatch.setenv("HARNESS_HOME", str(zoo_home))
    return zoo_home


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def harness_cli(capsys):
    """Run `harness ...` in-process; returns (exit code, stdout, stderr)."""
    from harness import cli

    def run(*argv: str):
        capsys.readouterr()
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run
