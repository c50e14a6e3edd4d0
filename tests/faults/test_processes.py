"""No process of a server outlives the server or the harness (harness.processes, harness.server).

fake_server.py stands in for vLLM: a server, its engine child and that child's worker, none of
which stops when its parent dies. Each test kills one process and asserts, by pid, that every
process of the server's group is gone within a few seconds.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.processes import process_exists
from harness.server import ServerConfig, VLLMServer

FAKE_SERVER = Path(__file__).with_name("fake_server.py")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 5.0
GROUP_SIZE = 4  # the fake server, its engine, the engine's worker, the harness's guard

# The harness side: a process that starts the fake server as `harness eval` starts vLLM, prints the
# server's pid, and waits to be killed.
HARNESS_SIDE = """
import sys, time
from pathlib import Path
import harness.server as server
pids_file, fake_server = Path(sys.argv[1]), sys.argv[2]
server.server_command = lambda config, port: [sys.executable, fake_server, "server", str(port), str(pids_file)]
with server.VLLMServer(server.ServerConfig(pids_file.parent, "fake", pids_file.parent / "server.log",
                                           startup_timeout_s=60)) as running:
    print(running.process.pid, flush=True)
    time.sleep(600)
"""


def group_members(pgid: int) -> set[int]:
    """The live processes (zombies are dead) of process group `pgid`, from /proc."""
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):  # exited while listed
            continue
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.add(int(stat.parent.name))
    return members


def members_after_grace(pgid: int) -> set[int]:
    deadline = time.monotonic() + GONE_WITHIN_S
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return group_members(pgid)


def recorded_pids(pids_file: Path) -> set[int]:
    return {int(pid) for pid in pids_file.read_text().split()}


def test_killing_the_server_kills_its_engine_and_worker(tmp_path, monkeypatch):
    pids_file = tmp_path / "pids"
    monkeypatch.setattr("harness.server.server_command",
                        lambda config, port: [sys.executable, str(FAKE_SERVER), "server", str(port), str(pids_file)])
    server = VLLMServer(ServerConfig(tmp_path, "fake", tmp_path / "server.log", startup_timeout_s=60))
    server.start()
    try:
        pgid = server.process.pid
        tree = recorded_pids(pids_file)
        assert len(tree) == 3 and tree < group_members(pgid) and len(group_members(pgid)) == GROUP_SIZE
        os.kill(pgid, signal.SIGKILL)  # the API server dies; nobody calls stop()
        assert members_after_grace(pgid) == set()
        assert not any(process_exists(pid) for pid in tree)
        assert "the server is gone" in (tmp_path / "server.log").read_text()
    finally:
        server.stop()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_the_harness_kills_the_whole_server_tree(sig, tmp_path):
    pids_file = tmp_path / "pids"
    harness = subprocess.Popen([sys.executable, "-c", HARNESS_SIDE, str(pids_file), str(FAKE_SERVER)],
                               stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    pgid = int(harness.stdout.readline())
    try:
        tree = recorded_pids(pids_file)
        assert len(tree) == 3 and len(group_members(pgid)) == GROUP_SIZE
        harness.send_signal(sig)  # not reaped yet: a killed harness may stay a zombie a while
        assert members_after_grace(pgid) == set()
        assert not any(process_exists(pid) for pid in tree)
    finally:
        harness.kill()
        harness.wait()
        kill_group(pgid)  # whatever a failed test left


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
