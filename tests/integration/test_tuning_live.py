"""`enclave tune` for real: pairs from the index with the SLM's questions, a short training,
then activation and rollback handed to a live server that keeps answering."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import DEMO
from tests.integration.live import enclave, live_server

pytestmark = pytest.mark.integration


def _ask(base: str, question: str) -> dict[str, object]:
    body = json.dumps({"question": question, "answer_mode": "extractive"}).encode()
    request = urllib.request.Request(
        f"{base}/api/v1/ask", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return dict(json.load(response))


def test_tune_auto_then_activate_and_roll_back_through_a_live_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    docs = [DEMO / "network-operations-runbook.md", DEMO / "facilities-guide.txt"]
    assert enclave("ingest", *map(str, docs), "--data", str(data)).returncode == 0

    tuned = enclave(
        "tune", "embedder", "--pairs", "auto", "--questions", "3", "--max-pairs", "24",
        "--batch-size", "8", "--max-seq-length", "64", "--data", str(data), "--json",
    )  # fmt: skip
    assert tuned.returncode == 0, tuned.stderr
    report = json.loads(tuned.stdout.strip().splitlines()[-1])
    assert report["finished"] and report["pairs"]["questions_written"] == 3
    assert {"title", "heading"} <= set(report["pairs"]["by_kind"])
    out = Path(report["out"])
    assert out == (data / "models" / "tuned-1").resolve()
    assert (out / "report.md").exists()

    question = "What is the extension of the NOC shift lead desk?"
    with live_server(data) as base:
        before = _ask(base, question)
        switched = enclave("tune", "activate", str(out), "--data", str(data), "--json")
        assert switched.returncode == 0, switched.stderr
        assert "it switches while serving" in switched.stdout  # handed to the server
        body = json.loads(switched.stdout.strip().splitlines()[-1])
        assert body["current"]["number"] == 1
        assert body["activation"]["report"]["embedded"] > 0
        after = _ask(base, question)
        assert after["sources"] and before["sources"]

        back = enclave("tune", "rollback", "--data", str(data), "--json")
        assert back.returncode == 0, back.stderr
        assert json.loads(back.stdout.strip().splitlines()[-1])["current"]["number"] == 0
        assert _ask(base, question)["sources"] == before["sources"]
