"""Shared fixtures, and the rule that sorts tests into the fast and the slow tier.

The zoo is built once per machine into `.harness-test/` (or $HARNESS_TEST_HOME) and reused: it
is cached by its definition, so a second test run does not retrain it.

Tiers: `pytest -m "not slow"` runs every test that needs neither the zoo nor a vLLM server. A test
is slow when it is marked so, or when it asks (directly or through other fixtures) for one of
SLOW_FIXTURES; the hook at the bottom marks those, so a new test that builds the zoo cannot slip
into the fast tier unmarked.
"""

import os
import signal
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Small excerpts of the real SIB-200 and MGSM files, in the --data-dir layout (see its README.md).
REAL_DATA = Path(__file__).resolve().parent / "fixtures" / "data"
TEST_HOME = Path(os.environ.get("HARNESS_TEST_HOME", PROJECT_ROOT / ".harness-test"))

# A run started in the background (`nohup ./run test &`) inherits SIGINT ignored, and so would every
# process a test starts, so the tests that stop a merge with Ctrl-C would see it ignored: restore
# Python's handler (a handled signal, unlike an ignored one, is reset to the default in children).
signal.signal(signal.SIGINT, signal.default_int_handler)


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
def real_data() -> Path:
    """The committed excerpts of the real SIB-200 and MGSM files (read-only: copy before changing)."""
    return REAL_DATA


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


# Fixtures that make a test slow: the zoo build (minutes on first use), a vLLM server start-up and
# the real LM of tests/real_lm (a 93 MB download from the package registry on first use).
SLOW_FIXTURES = frozenset({"zoo_home", "use_zoo_home", "vllm_server", "real_lm"})


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by `-m`
def pytest_collection_modifyitems(config, items):
    """Mark slow every test whose fixtures include one of SLOW_FIXTURES, however indirectly."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
