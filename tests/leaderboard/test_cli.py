"""`harness leaderboard` refuses what cannot work, with one line, before starting Streamlit."""

import socket

import pytest

from harness import cli
from harness.leaderboard import absolute_sqlite_url


@pytest.fixture(autouse=True)
def _only_this_subcommand(monkeypatch):
    """Parse with this area's subcommand alone, so another area's work in progress cannot break it."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"leaderboard": cli.SUBCOMMANDS["leaderboard"]})


def main(argv: list[str]) -> int:
    return cli.main(argv)


def test_absent_store_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "none.db"
    assert main(["leaderboard", "--store", f"sqlite:///{missing}", "--port", "8599"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("harness leaderboard: error: no results store at") and str(missing) in err
    assert "\n" not in err and not missing.exists()


def test_default_store_is_under_the_harness_home(capsys):
    assert main(["leaderboard"]) == 2  # conftest gives each test an empty HARNESS_HOME
    assert "harness-home/results.db" in capsys.readouterr().err


def test_busy_port_is_a_one_line_error(store_url, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["leaderboard", "--store", store_url, "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_bad_url_is_named(capsys):
    assert main(["leaderboard", "--store", "not a url"]) == 2
    assert "not a database URL: 'not a url'" in capsys.readouterr().err


def test_relative_sqlite_path_is_pinned_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite_url("sqlite:///results.db") == f"sqlite:///{tmp_path / 'results.db'}"
    assert absolute_sqlite_url("sqlite:////abs/r.db") == "sqlite:////abs/r.db"
    assert absolute_sqlite_url("postgresql://u@h/db") == "postgresql://u@h/db"
