"""Store URLs to test against: a SQLite file, and a throwaway PostgreSQL cluster when its binaries exist.

PostgreSQL comes from Debian's `postgresql` package (apt-get install postgresql). The fixture
runs initdb into a temporary folder and starts the server on a free port of 127.0.0.1 with
trust authentication; as root it runs them as the `postgres` user, since PostgreSQL refuses to
run as root. Each test gets its own database.
"""

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

APT_PACKAGE = "postgresql"


def _pg_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_user(command: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *command] if user else command


@pytest.fixture(scope="session")
def postgres_server():
    """(host, port) of a throwaway PostgreSQL cluster; skipped when PostgreSQL is not installed."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(f"PostgreSQL binaries not found (initdb); install Debian's `{APT_PACKAGE}` package")
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    data = root / "data"
    if user:
        shutil.chown(root, user)
    port = _free_port()
    subprocess.run(_as_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"], user),
                   check=True, capture_output=True)
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off"
    subprocess.run(_as_user([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"], user),
                   check=True, capture_output=True)
    try:
        yield "127.0.0.1", port
    finally:
        subprocess.run(_as_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], user), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


_database_numbers = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    import sqlalchemy as sa

    host, port = request.getfixturevalue("postgres_server")
    name = f"t{os.getpid()}_{next(_database_numbers)}"
    admin = sa.create_engine(f"postgresql+psycopg://postgres@{host}:{port}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return f"postgresql+psycopg://postgres@{host}:{port}/{name}"
