"""`database_url`: the real CLI and a live server keep the registry, jobs, keyword index,
conversations and audit log in PostgreSQL (a throwaway cluster), nothing in SQLite files."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import DEMO
from tests.integration.live import enclave, live_server

pytestmark = pytest.mark.integration

QUESTION = next(
    q
    for q in map(json.loads, (DEMO / "questions.jsonl").read_text().splitlines())
    if q["source"].endswith(".md")
)


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def test_cli_and_server_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"ENCLAVE_DATABASE_URL": postgres_url, "ENCLAVE_LLM_BACKEND": "fake"}
    ingest = enclave("ingest", str(DEMO), "--data", str(data), "--json", env=env)
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    status = enclave("status", "--data", str(data), "--json", env=env)
    indexed = json.loads(status.stdout.splitlines()[-1])["documents"]["indexed"]
    assert indexed >= 8, status.stdout
    asked = enclave(
        "ask", QUESTION["question"], "--mode", "bm25", "--answer-mode", "extractive",
        "--data", str(data), "--json", env=env,
    )  # fmt: skip
    assert asked.returncode == 0, asked.stderr[-3000:]
    sources = json.loads(asked.stdout.splitlines()[-1])["sources"]
    assert QUESTION["source"] in [Path(s["path"]).name for s in sources]

    with live_server(data, env=env) as base:
        conversation = _post(f"{base}/api/v1/conversations", {})["id"]
        answer = _post(
            f"{base}/api/v1/ask",
            {
                "question": QUESTION["question"],
                "answer_mode": "extractive",
                "conversation_id": conversation,
            },
        )
        assert answer["sources"] and answer["conversation_id"] == conversation
        assert len(_get(f"{base}/api/v1/conversations/{conversation}")["messages"]) == 2
        assert any(job["kind"] == "cli" for job in _get(f"{base}/api/v1/ingest/jobs")["jobs"])

    assert sorted(p.name for p in data.glob("*.sqlite3*")) == []  # nothing left in SQLite
    with psycopg.connect(postgres_url) as db:
        counts = {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("documents", "chunks", "conversations", "messages")
        }
    assert counts["documents"] == indexed and counts["chunks"] > indexed
    assert (counts["conversations"], counts["messages"]) == (1, 2)
