"""The scale-out stack on loopback, each part a real process: redis-server, `chroma run`,
`enclave worker`, `enclave serve --workers N` (used by test_scaleout.py and
benchmarks/scaleout.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import ROOT
from tests.integration.live import free_port, wait_until_ready


@contextmanager
def process(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A background process logging to a file; stopped (then killed) at the end."""
    log = log_path.open("wb")
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def wait_for(check: object, what: str, timeout_s: float, output: object = None) -> None:
    deadline = time.time() + timeout_s
    while not check():  # type: ignore[operator]
        if time.time() > deadline:
            detail = output() if callable(output) else ""
            raise AssertionError(f"timed out waiting for {what}\n{detail}")
        time.sleep(0.5)


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port (no persistence); yields its URL."""
    import redis

    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: apt-get install redis-server (make test does)"
    port = free_port()
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly"]
    args += ["no", "--dir", str(folder)]
    with process(args, folder / "redis.log") as proc:
        client = redis.Redis(port=port)

        def up() -> bool:
            assert proc.poll() is None, (folder / "redis.log").read_text()
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, "redis-server", 30)
        yield f"redis://127.0.0.1:{port}/0"


@contextmanager
def chroma_server(folder: Path) -> Iterator[int]:
    """`chroma run` (the Chroma 1.x server) on a free loopback port; yields the port."""
    port = free_port()
    chroma = str(Path(sys.executable).parent / "chroma")
    args = [chroma, "run", "--path", str(folder / "chroma"), "--host", "127.0.0.1"]
    args += ["--port", str(port)]
    log = folder / "chroma.log"
    with process(args, log, env={"ANONYMIZED_TELEMETRY": "False"}) as proc:
        wait_until_ready(f"http://127.0.0.1:{port}/api/v2/heartbeat", bool, proc, log.read_text, 60)
        yield port


def enclave_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def worker_log_ready(log: Path) -> bool:
    return log.exists() and " ready." in log.read_text(errors="replace")


def healthy(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/api/v1/health", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False
