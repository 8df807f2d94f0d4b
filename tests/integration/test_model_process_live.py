"""The real thing: `enclave serve` with the bundled SmolLM2 in its own process; the model
process is killed with SIGSEGV in the middle of an answer. That answer gets an SSE `error`, the
same server restarts the model and answers the next question, and health says what happened."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEMO
from tests.integration.live import enclave, live_server

pytestmark = pytest.mark.integration

QUESTION = "How quickly does a Major alarm have to be acknowledged in Skywatch?"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def _ask(base: str, stream: bool) -> urllib.request.Request:
    return urllib.request.Request(
        f"{base}/api/v1/ask",
        data=json.dumps({"question": QUESTION, "stream": stream}).encode(),
        headers={"Content-Type": "application/json"},
    )


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_sigsegv_in_the_model_process_fails_one_answer_not_the_server(tmp_path: Path) -> None:
    data, docs = tmp_path / "data", tmp_path / "docs"
    docs.mkdir()
    (docs / "runbook.md").write_bytes((DEMO / "network-operations-runbook.md").read_bytes())
    assert enclave("ingest", str(docs), "--data", str(data)).returncode == 0
    with live_server(data) as base:
        health = _get(f"{base}/api/v1/health")
        child = health["model_process"]["pid"]
        server = _parent(child)
        assert server != os.getpid() and health["model_process"]["restarts"] == 0

        events: list[str] = []
        with urllib.request.urlopen(_ask(base, stream=True), timeout=300) as response:
            for raw in response:
                line = raw.decode().strip()
                if line.startswith("event: "):
                    events.append(line[len("event: ") :])
                    if events[-1] == "token" and events.count("token") == 1:
                        os.kill(child, signal.SIGSEGV)  # mid-answer, as the AMX kernel did
                elif line.startswith("data: ") and events[-1] == "error":
                    error = json.loads(line[len("data: ") :])["error"]
        assert events[0] == "sources" and events[-1] == "error", events
        assert error["code"] == "model_unavailable" and "SIGSEGV" in error["message"]

        # The next question is answered by a new model process of the same server.
        with urllib.request.urlopen(_ask(base, stream=False), timeout=300) as response:
            answer = json.load(response)
        assert answer["answer"] and not answer.get("error")
        assert answer["timings"]["tokens"] > 0
        process = _get(f"{base}/api/v1/health")["model_process"]
        assert process["pid"] != child and _parent(process["pid"]) == server
        assert process["restarts"] == 1 and "SIGSEGV" in process["last_crash"]["reason"]
        # A crash while answering does not change the CPU profile the self-test chose ("safe"
        # where the fast settings crash, as on Xeons with AMX; "fast" elsewhere).
        assert process["profile"] == health["model_process"]["profile"]
