"""Issue 20, finding 19: Ctrl-C (SIGINT) and SIGTERM stop a real `enclave serve` promptly and
cleanly while it indexes the drop folder, also after a restart that resumed that work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ingest.jobs import JobLog
from ingest.lock import DataDirLock
from ingest.registry import Registry
from tests.conftest import write
from tests.integration.live import start_serve

pytestmark = pytest.mark.integration

STOP_WITHIN_S = 20.0  # the server's own grace is 10 s; the rest is interpreter exit
FILES = 1000  # far more than one embedding batch: a prompt stop leaves most of them pending


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _serve_until_indexing(data: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], Any]:
    """`enclave serve` over `data`, once it is healthy and an inbox job has made progress."""
    process, log, url = start_serve(data, env, new_session=True)
    base = f"{url}/api/v1"
    deadline = time.time() + 300
    first: int | None = None
    while True:
        assert process.poll() is None, _output(log)
        assert time.time() < deadline, f"no indexing seen: {_output(log)}"
        try:
            health = _get(f"{base}/health")
        except OSError:
            health = {}
        if health.get("status") == "ok":
            counts = health["documents"]
            first = counts["indexed"] if first is None else first
            # Documents are being indexed now (new ones, or pending ones a restart resumed).
            if counts["indexed"] > first and counts["pending"]:
                return process, log
        time.sleep(0.3)


def _output(log: Any) -> str:
    log.seek(0)
    return str(log.read()[-5000:])


def _stop(process: subprocess.Popen[str], log: Any, signum: int) -> str:
    began = time.monotonic()
    # To the whole group, as Ctrl-C in a terminal or `systemctl stop` sends it: the parser
    # processes get it too.
    os.killpg(process.pid, signum)
    try:
        process.wait(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(
            f"still running {STOP_WITHIN_S} s after {signum}: {_output(log)}"
        ) from None
    took = time.monotonic() - began
    output = _output(log)
    log.close()
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    print(f"stopped by signal {signum} in {took:.1f} s: {output.strip().splitlines()[-1]}")
    return output


def _assert_closed_cleanly(data: Path) -> None:
    lock = DataDirLock(data, "the test")
    lock.acquire()  # released by the server
    lock.release()
    jobs = JobLog(data / "registry.sqlite3")
    try:
        assert not [j for j in jobs.list() if j["status"] == "running"]
    finally:
        jobs.close()


def test_sigint_and_sigterm_stop_serve_promptly_while_it_indexes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i in range(FILES):
        words = " ".join(f"item {i}-{j} is filed under shelf {j % 17}." for j in range(120))
        write(data / "inbox" / f"note-{i:03}.md", f"# Note {i}\n\n{words}\n")
    env = {
        "ENCLAVE_LLM_BACKEND": "fake",
        "ENCLAVE_SETTLE_S": "0",
        "ENCLAVE_INGEST_BATCH_CHUNKS": "64",
    }

    process, log = _serve_until_indexing(data, env)
    output = _stop(process, log, signal.SIGINT)
    registry = Registry(data / "registry.sqlite3")
    try:
        indexed = registry.counts()["indexed"]
    finally:
        registry.close()
    # It stopped, rather than finish every file first (what Ctrl-C used to wait for).
    assert indexed < FILES, "the server indexed everything before it stopped"
    assert "Enclave stopped" in output or "exiting now" in output
    _assert_closed_cleanly(data)

    # A restart resumes the work; SIGTERM stops it as promptly, and Ctrl-C once more.
    process, log = _serve_until_indexing(data, env)
    _stop(process, log, signal.SIGTERM)
    _assert_closed_cleanly(data)
    process, log = _serve_until_indexing(data, env)
    _stop(process, log, signal.SIGINT)
    _assert_closed_cleanly(data)
