"""A throwaway PostgreSQL cluster on loopback, for tests and benchmarks: `initdb` in a temp dir,
`postgres` on a free port of 127.0.0.1 (trust authentication, no fsync), removed afterwards.

PostgreSQL refuses to run as root, so under root (CI) the cluster belongs to `nobody`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _server_bin() -> Path:
    """ENCLAVE_PG_BIN, else the newest Debian server install (/usr/lib/postgresql/<major>/bin)."""
    if os.environ.get("ENCLAVE_PG_BIN"):
        return Path(os.environ["ENCLAVE_PG_BIN"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _server_bin()
USER = "enclave"


def missing() -> str | None:
    """Why no cluster can be started here, or None."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).is_file():
            return f"PostgreSQL server binaries not found ({PG_BIN / tool}): install `postgresql`"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def temporary_cluster() -> Iterator[str]:
    """Yields the server's URL without a database name: `postgresql://enclave@127.0.0.1:PORT`."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    root = Path(tempfile.mkdtemp(prefix="enclave-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        prefix = ["runuser", "-u", "nobody", "--"]
    data, port = root / "data", _free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, cwd=root, timeout=120)

    run(str(PG_BIN / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "--no-sync",
        "--locale=C", "--encoding=UTF8")  # fmt: skip
    options = f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=200"
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options, "-w",
        "start")  # fmt: skip
    try:
        yield f"postgresql://{USER}@127.0.0.1:{port}"
    finally:
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def temporary_database(server: str) -> Iterator[str]:
    """A new, empty database on the cluster; dropped afterwards (its connections closed)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
