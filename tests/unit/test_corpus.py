"""The demo corpus and its question set are well formed."""

from __future__ import annotations

import json

from ingest.loaders import SUPPORTED_SUFFIXES
from tests.conftest import DEMO


def test_questions_file() -> None:
    rows = [json.loads(line) for line in (DEMO / "questions.jsonl").read_text().splitlines()]
    assert all(set(r) == {"question", "answer", "source"} for r in rows)
    answerable = [r for r in rows if r["answer"] is not None]
    unanswerable = [r for r in rows if r["answer"] is None]
    assert len(answerable) >= 30 and len(unanswerable) >= 6
    for row in answerable:
        assert (DEMO / row["source"]).is_file(), row


def test_demo_corpus_has_at_least_five_formats() -> None:
    suffixes = {p.suffix for p in DEMO.iterdir() if p.suffix in SUPPORTED_SUFFIXES}
    assert {".md", ".html", ".docx", ".pdf"} <= suffixes
    assert suffixes & {".xlsx", ".csv"}


def test_demo_has_a_scanned_document_only_ocr_reads() -> None:
    from pypdf import PdfReader

    scan = DEMO / "rooftop-site-access-scan.pdf"
    assert all(not page.extract_text().strip() for page in PdfReader(str(scan)).pages)
    rows = [json.loads(line) for line in (DEMO / "questions.jsonl").read_text().splitlines()]
    assert len([r for r in rows if r["source"] == scan.name]) >= 2
