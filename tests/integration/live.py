"""Run the real `enclave` command: one-shot subprocesses and a live server on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import ROOT


def enclave(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(
    data: Path, timeout_s: float = 180, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`enclave serve` on a free loopback port; yields its base URL once healthy. Its output
    goes to a file (a pipe nobody reads could fill up and block the server)."""
    port = free_port()
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in the finally below
    server = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--data", str(data), "--port", str(port)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"

    def output() -> str:
        log.seek(0)
        return log.read()[-5000:]

    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/v1/health", timeout=5) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                pass
            assert time.time() < deadline, "server did not become healthy: " + output()
            assert server.poll() is None, output()
            time.sleep(1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
