"""`harness leaderboard`: serve the Streamlit leaderboard over a results store on 127.0.0.1.

    harness leaderboard                        # the default store under the harness home
    harness leaderboard --store sqlite:////data/results.db --port 8600
    harness leaderboard --store postgresql://user@host/results

The app opens the store read-only. A store written by an older harness is upgraded first (the
one write this command makes). The process becomes the Streamlit server (Ctrl-C stops it).
"""

import argparse
import os
import socket
import sys
from pathlib import Path

from harness import HarnessError
from harness.paths import PROJECT_ROOT, add_store_option, default_store_url

APP = PROJECT_ROOT / "leaderboard" / "app.py"
HOST = "127.0.0.1"  # never all interfaces: results may be unpublished


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_store_option(parser)
    parser.add_argument("--port", type=int, default=8501, help="port on 127.0.0.1 (default: 8501)")


def run(args: argparse.Namespace) -> int:
    from harness.store import STORE_ENV, ResultStore, check_store_exists

    url = absolute_sqlite_url(args.store or default_store_url())
    check_store_exists(url)
    ResultStore(url).engine.dispose()  # opening it for writing upgrades an older store's tables
    check_port_free(args.port)
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", HOST,
        "--server.port", str(args.port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",  # no developer menu (Deploy, rerun) for readers
    ]  # fmt: skip
    print(f"Leaderboard: http://{HOST}:{args.port}  (store: {url}; Ctrl-C stops it)", flush=True)
    os.execve(sys.executable, command, {**os.environ, STORE_ENV: url})
    return 0  # not reached: the process is now Streamlit


def absolute_sqlite_url(url: str) -> str:
    """`sqlite:///results.db` means the current folder: pin it, so the app reads the same file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix:
        return prefix + str(Path(url[len(prefix) :]).resolve())
    return url


def check_port_free(port: int) -> None:
    if not 1 <= port <= 65535:
        raise HarnessError(f"--port {port} is not a TCP port (1-65535)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            raise HarnessError(f"port {port} on {HOST} is in use: pass another --port") from None
