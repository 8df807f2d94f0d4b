"""The official `openai` client against a live `enclave serve` with the real SLM."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import DEMO
from tests.integration.live import enclave, live_server

pytestmark = pytest.mark.integration

RUNBOOK = "network-operations-runbook.md"


def test_openai_client_chat_completions(tmp_path: Path) -> None:
    data, docs = tmp_path / "data", tmp_path / "docs"
    docs.mkdir()
    (docs / RUNBOOK).write_bytes((DEMO / RUNBOOK).read_bytes())
    ingest = enclave("ingest", str(docs), "--data", str(data))
    assert ingest.returncode == 0, ingest.stderr
    questions = [json.loads(line) for line in (DEMO / "questions.jsonl").read_text().splitlines()]
    question = next(q["question"] for q in questions if q["source"] == RUNBOOK)

    with live_server(data) as base:
        client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)
        assert [m.id for m in client.models.list()] == ["enclave-rag"]
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": question}]

        whole = client.chat.completions.create(model="enclave-rag", messages=messages)
        assert (whole.choices[0].message.content or "").strip()
        assert whole.choices[0].finish_reason in ("stop", "length")
        extra = whole.model_extra or {}
        assert any(RUNBOOK in s["path"] for s in extra["sources"])
        assert isinstance(extra["abstained"], bool)

        start = time.perf_counter()
        stream = client.chat.completions.create(
            model="enclave-rag",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        elapsed = time.perf_counter() - start
        first = chunks[0].model_extra or {}
        assert any(RUNBOOK in s["path"] for s in first["sources"])
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert content.strip()
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        print(f"\nstreamed {len(content)} characters in {elapsed:.2f} s: {content!r}")
