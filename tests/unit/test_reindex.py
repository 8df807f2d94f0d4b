"""`enclave reindex`: both indexes rebuilt from the registry and the original files; the same
questions find the same passages before and after."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli.main import main
from ingest.pipeline import IngestPipeline
from ingest.reindex import reindex_all
from retriever.components import Components
from tests.conftest import DEMO

SOURCES = ["facilities-guide.txt", "network-operations-runbook.md", "hr-leave-policy.docx"]
QUESTIONS = [
    q["question"]
    for q in map(json.loads, (DEMO / "questions.jsonl").read_text().splitlines())
    if q["source"] in SOURCES
]


def results(components: Components) -> list[list[tuple[str, str]]]:
    """Each question's ranked (chunk id, document id) pairs, dense and keyword fused."""
    return [
        [(hit.chunk.id, hit.chunk.document_id) for hit in components.searcher.search(q, 8).hits]
        for q in QUESTIONS
    ]


@pytest.fixture
def indexed(pipeline: IngestPipeline, tmp_path: Path) -> IngestPipeline:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in SOURCES:
        shutil.copy(DEMO / name, docs / name)
    report = pipeline.ingest([docs])
    assert report.count("indexed") == len(SOURCES)
    return pipeline


def test_reindex_rebuilds_both_indexes_with_the_same_answers(
    indexed: IngestPipeline, components: Components
) -> None:
    assert QUESTIONS
    before = results(components)
    chunks = indexed.store.count()
    # Lose both indexes (e.g. a restore of the registry and files only).
    indexed.store.clear()
    indexed.keyword.clear()
    assert indexed.store.count() == indexed.keyword.count() == 0

    report = reindex_all(indexed)
    assert (report.documents, report.indexed, report.failed) == (len(SOURCES), len(SOURCES), 0)
    assert indexed.store.count() == indexed.keyword.count() == chunks == report.chunks
    assert results(components) == before
    assert {r.status for r in indexed.registry.list()} == {"indexed"}


def test_a_document_whose_file_is_gone_is_marked_deleted(
    indexed: IngestPipeline, components: Components
) -> None:
    gone = next(r for r in indexed.registry.list() if r.path.endswith(".txt"))
    Path(gone.path).unlink()
    report = reindex_all(indexed)
    assert report.missing == [gone.path]
    assert indexed.registry.get(gone.id).status == "deleted"  # type: ignore[union-attr]
    assert indexed.store.ids_for_document(gone.id) == []
    assert indexed.keyword.ids_for_document(gone.id) == []


def test_cli_reindex(
    indexed: IngestPipeline,
    components: Components,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    chunks = indexed.store.count()
    indexed.close()  # the CLI opens the data directory itself
    for name, value in {"EMBED_BACKEND": "torch", "PARSE_WORKERS": "0"}.items():
        monkeypatch.setenv(f"ENCLAVE_{name}", value)
    data = str(components.settings.data_dir)
    assert main(["reindex", "--data", data, "--json"]) == 0
    body = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (body["documents"], body["indexed"], body["chunks"]) == (len(SOURCES), 3, chunks)
