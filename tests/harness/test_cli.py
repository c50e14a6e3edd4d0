"""The command line: every subcommand exists and documents itself."""

import importlib.util
import subprocess
import sys

import pytest

from harness.cli import SUBCOMMANDS, main


def test_every_subcommand_module_exists():
    missing = [name for name, (module, _) in SUBCOMMANDS.items() if importlib.util.find_spec(module) is None]
    assert missing == []


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for name in SUBCOMMANDS:
        assert name in out


def test_each_subcommand_has_help(capsys):
    # In this process: a Python start-up per subcommand cost 10 s; the test above starts one.
    for name in SUBCOMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        out, err = capsys.readouterr()
        assert exit_.value.code == 0, (name, err)
        assert "--registry" in out, name


HELP_IMPORTS = """
import sys
from harness import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
print("heavy imports:", [m for m in ("pandas", "sqlalchemy", "lm_eval", "torch", "vllm") if m in sys.modules])
"""


def test_help_stays_clear_of_heavy_imports():
    """The subcommand modules import pandas, SQLAlchemy, lm-eval, torch and vLLM inside `run`."""
    for argv in (["--help"], ["eval", "--help"], ["sweep", "--help"], ["leaderboard", "--help"],
                 ["analyze", "similarity", "--help"]):
        result = subprocess.run([sys.executable, "-c", HELP_IMPORTS, *argv], capture_output=True, text=True, check=True)
        assert "usage: harness" in result.stdout, argv
        assert result.stdout.splitlines()[-1] == "heavy imports: []", argv
