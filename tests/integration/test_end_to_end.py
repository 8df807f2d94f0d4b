"""The real thing: bundled embedder, Chroma on disk, the SmolLM2 GGUF through llama.cpp,
the CLI and a live HTTP server."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import Settings
from ingest.pipeline import build_pipeline
from retriever.components import Components
from retriever.generation import GenerationError
from retriever.question import Question
from tests.conftest import DEMO, write
from tests.integration.live import enclave, live_server

pytestmark = pytest.mark.integration

QUESTIONS = [json.loads(line) for line in (DEMO / "questions.jsonl").read_text().splitlines()]
SCANNED = "rooftop-site-access-scan.pdf"  # a PDF too, but only OCR reads it: tested apart
# One answerable question per format, so every loader is exercised end to end.
BY_FORMAT = {Path(q["source"]).suffix: q for q in QUESTIONS if q["source"] not in (None, SCANNED)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Components]:
    data = tmp_path_factory.mktemp("demo-data")
    components = Components(Settings(data_dir=data))
    pipeline = build_pipeline(components)
    report = pipeline.ingest([DEMO])
    assert report.count("failed") == 0, report.to_dict()
    assert report.count("indexed") >= 8
    yield components
    pipeline.close()


def test_demo_questions_retrieve_their_source_and_get_an_answer(demo: Components) -> None:
    assert len(BY_FORMAT) >= 5
    for suffix, q in BY_FORMAT.items():
        answer = demo.answers.ask(Question(q["question"]))
        top3 = [Path(s.path).name for s in answer.sources[:3]]
        assert q["source"] in top3, (suffix, q["question"], top3)
        assert answer.answer.strip(), q["question"]
        assert answer.timings["generate_ms"] > 0 or answer.abstained


def test_scanned_demo_document_answers_its_questions(demo: Components) -> None:
    asked = [q for q in QUESTIONS if q["source"] == SCANNED]
    assert len(asked) >= 2
    for q in asked:
        answer = demo.answers.ask(Question(q["question"]))
        top = answer.sources[0]
        assert (Path(top.path).name, top.page) == (SCANNED, 1), q["question"]
        assert answer.answer.strip() and not answer.abstained, q["question"]


def test_ctransformers_backend_refuses_gguf_with_a_clear_error(demo: Components) -> None:
    from retriever.components import build_generator

    settings = demo.settings.model_copy(update={"llm_backend": "ctransformers"})
    with pytest.raises(GenerationError, match="legacy GGML"):
        build_generator(settings)


def test_cli_ingest_status_ask(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    src = tmp_path / "docs"
    src.mkdir()
    for name in ("hr-leave-policy.docx", "product-price-sheet.xlsx"):
        (src / name).write_bytes((DEMO / name).read_bytes())
    result = enclave("ingest", str(src), "--data", data, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["indexed"] == 2 and summary["chunks"] > 0

    status = enclave("status", "--data", data, "--json")
    assert json.loads(status.stdout.strip().splitlines()[-1])["documents"]["indexed"] == 2

    q = next(q for q in QUESTIONS if q["source"] == "hr-leave-policy.docx")
    asked = enclave("ask", q["question"], "--data", data, "--json")
    assert asked.returncode == 0, asked.stderr
    body = json.loads(asked.stdout.strip().splitlines()[-1])
    assert body["answer"] and "hr-leave-policy.docx" in body["sources"][0]["path"]

    bad = enclave("ask", "x", "--data", data, env={"ENCLAVE_TOP_K": "lots"})
    assert bad.returncode == 2 and "top_k" in bad.stderr


def test_live_server_answers_over_http(tmp_path: Path) -> None:
    data = tmp_path / "data"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "network-operations-runbook.md").write_bytes(
        (DEMO / "network-operations-runbook.md").read_bytes()
    )
    assert enclave("ingest", str(docs), "--data", str(data)).returncode == 0
    with live_server(data) as server:
        base = f"{server}/api/v1"
        deadline = time.time() + 180
        # `enclave ingest` while the server holds the data dir hands the files to the server.
        extra = write(tmp_path / "more" / "kiosk.md", "# Kiosk\n\nThe lobby kiosk code is 7731.\n")
        handed = enclave("ingest", str(extra.parent), "--data", str(data), "--json")
        assert handed.returncode == 0, handed.stderr
        assert json.loads(handed.stdout.strip().splitlines()[-1])["handed_off"] == 1
        while True:
            with urllib.request.urlopen(f"{base}/documents", timeout=10) as r:
                docs_now = {
                    Path(d["path"]).name.split("-", 1)[-1]: d for d in json.load(r)["documents"]
                }
            if docs_now.get("kiosk.md", {}).get("status") == "indexed":
                break
            assert time.time() < deadline, docs_now
            time.sleep(0.5)

        q = next(q for q in QUESTIONS if q["source"] == "network-operations-runbook.md")
        request = urllib.request.Request(
            f"{base}/ask",
            data=json.dumps({"question": q["question"]}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=300) as r:
            body = json.load(r)
        assert body["answer"]
        assert any("network-operations-runbook.md" in s["path"] for s in body["sources"])
        assert body["timings"]["retrieve_ms"] > 0
