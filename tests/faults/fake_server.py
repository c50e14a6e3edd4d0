"""A stand-in for vLLM's API server in the process tests: no model, up in a fraction of a second.

    fake_server.py server PORT PIDS_FILE  starts an "engine" child, which starts a "worker" child
                                          (vLLM's EngineCore and Worker), then serves 127.0.0.1:PORT:
                                          GET /health and /v1/models answer; POST /v1/completions
                                          drops the connection, as a server dying mid-task does
    fake_server.py engine PIDS_FILE       starts a worker, then sleeps
    fake_server.py worker PIDS_FILE       sleeps

Each appends its pid to PIDS_FILE. None stops when its parent dies: only a process-group kill
(or the harness's guard) ends them, as with vLLM's engine processes.
"""

import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

PROCESSES = 3  # server, engine, worker


def record_pid(pids_file: Path) -> None:
    with open(pids_file, "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")


def start(role: str, pids_file: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, role, str(pids_file)])


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = {"/health": {}, "/v1/models": {"data": [{"id": "fake"}]}}.get(self.path)
        if body is None:
            self.send_error(404)
            return
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        self.close_connection = True  # no response at all: the client sees the server disconnect

    def log_message(self, *args):
        pass


def main(role: str, *args: str) -> None:
    if role == "server":
        port, pids_file = int(args[0]), Path(args[1])
        record_pid(pids_file)
        start("engine", pids_file)
        while len(pids_file.read_text().split()) < PROCESSES:  # healthy once the whole tree runs
            time.sleep(0.05)
        HTTPServer(("127.0.0.1", port), Handler).serve_forever()
    pids_file = Path(args[0])
    record_pid(pids_file)
    if role == "engine":
        start("worker", pids_file)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(*sys.argv[1:])
