"""The command line: every subcommand exists and documents itself."""

import importlib.util
import subprocess
import sys

from harness.cli import SUBCOMMANDS


def test_every_subcommand_module_exists():
    missing = [name for name, (module, _) in SUBCOMMANDS.items() if importlib.util.find_spec(module) is None]
    assert missing == []


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for name in SUBCOMMANDS:
        assert name in out


def test_each_subcommand_has_help():
    for name in SUBCOMMANDS:
        result = subprocess.run([sys.executable, "-m", "harness.cli", name, "--help"], capture_output=True, text=True)
        assert result.returncode == 0, (name, result.stderr)
        assert "--registry" in result.stdout
