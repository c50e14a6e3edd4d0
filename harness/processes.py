"""Processes: whether one is still alive, and the guard that makes a server's process tree die
with the harness.

A server (vLLM) runs as `python -I processes.py HARNESS_PID -- COMMAND...` in its own process
group. The guard forks a watchdog into that group and then execs COMMAND, so the server keeps the
guard's pid (the harness's Popen sees the server's own exit code) and leads the group. The
watchdog kills the whole group with SIGKILL as soon as either
- the harness is gone (exited, or killed with SIGKILL so that no `finally` ran), or
- the server is gone (crashed or killed): its engine and worker processes would live on otherwise.

Why a watchdog and not only PR_SET_PDEATHSIG: the death signal reaches the process that set it,
not its children, and vLLM's engine and worker processes are the server's children; it also fires
when the *thread* that started the process exits, not the process. The watchdog polls instead
(every POLL_S), counts a zombie as dead (a killed harness stays a zombie until its parent reaps
it), and reaches every process of the group, grandchildren included.

Run by its path with `-I` (no PYTHONPATH, no user site, not the working directory): it needs the
standard library only, so it starts the same from a source tree, a wheel, or any folder.
"""

import os
import signal
import sys
import time
from pathlib import Path

POLL_S = 0.2


def process_exists(pid: int) -> bool:
    """Whether `pid` is a live process: a zombie (exited, not reaped yet) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS), or it exited just now: os.kill above decided
        return False
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")  # the state follows "(command name)"


def guarded_command(command: list[str], harness_pid: int) -> list[str]:
    """`command` run under the guard: its process group dies when `harness_pid` or it dies."""
    return [sys.executable, "-I", str(Path(__file__).resolve()), str(harness_pid), "--", *command]


def main(argv: list[str]) -> None:
    """`HARNESS_PID -- COMMAND...`: fork the watchdog, then become COMMAND."""
    if len(argv) < 3 or not argv[0].isdigit() or argv[1] != "--":
        sys.exit(f"usage: {Path(__file__).name} HARNESS_PID -- COMMAND...")
    harness_pid, command = int(argv[0]), argv[2:]
    server_pid = os.getpid()
    if os.fork() == 0:
        try:
            watch(harness_pid, server_pid)
        finally:
            os._exit(0)  # the watchdog must never return into the exec below
    os.execv(command[0], command)


def watch(harness_pid: int, server_pid: int) -> None:
    """Wait until the harness or the server is gone, then SIGKILL the group (the watchdog too)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # a stopping server's group gets SIGTERM: keep watching
    while os.getppid() == server_pid and process_exists(harness_pid):  # a dead parent re-parents us
        time.sleep(POLL_S)
    gone = "server" if os.getppid() != server_pid else f"harness (pid {harness_pid})"
    print(f"[harness guard] the {gone} is gone: killing the server's process group", file=sys.stderr, flush=True)
    os.killpg(os.getpgrp(), signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1:])
