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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import ROOT


def enclave(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
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


def wait_until_ready(
    url: str,
    ready: Callable[[Any], bool],
    process: subprocess.Popen[Any],
    output: Callable[[], str],
    timeout_s: float,
) -> None:
    """Poll `url` until its JSON satisfies `ready`; fail with the process's output if it
    exits or the time runs out."""
    deadline = time.time() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if ready(json.load(r)):
                    return
        except OSError:
            pass
        assert process.poll() is None, output()
        assert time.time() < deadline, f"{url} did not become ready: {output()}"
        time.sleep(0.5)


def start_serve(
    data: Path, env: dict[str, str] | None = None, new_session: bool = False
) -> tuple[subprocess.Popen[str], Any, str]:
    """`enclave serve` over `data` on a free loopback port: the process, the temporary file
    its output goes to (a pipe nobody reads could fill up and block the server; the caller
    closes it) and its base URL. `new_session`: a process group of its own, as a terminal or
    a service manager gives."""
    port = free_port()
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by the caller
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--data", str(data), "--port", str(port)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=new_session,
    )
    return server, log, f"http://127.0.0.1:{port}"


@contextmanager
def live_server(
    data: Path, timeout_s: float = 180, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`enclave serve` on a free loopback port; yields its base URL once healthy."""
    server, log, base = start_serve(data, env)

    def output() -> str:
        log.seek(0)
        return log.read()[-5000:]

    try:
        wait_until_ready(
            f"{base}/api/v1/health", lambda body: body["status"] == "ok", server, output, timeout_s
        )
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@contextmanager
def model_server(log_path: Path, alias: str = "smollm2-server") -> Iterator[str]:
    """`python -m llama_cpp.server` with the bundled GGUF on a free loopback port; yields its
    /v1 base URL. llama.cpp logs a lot while loading: to a file, as a pipe nobody reads would
    fill and block."""
    from retriever.models import bundled_llm_path

    port = free_port()
    log = log_path.open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(bundled_llm_path()),
            "--model_alias",
            alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ready(
            f"{base}/models", lambda body: bool(body["data"]), server, log_path.read_text, 120
        )
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
