from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from ingest.lock import DataDirBusyError, DataDirLock, lock_or_server
from ingest.pipeline import FileOutcome, IngestPipeline
from tests.conftest import write


@pytest.fixture
def settings(settings: Settings, database_url: str) -> Settings:
    """Every test here runs with SQLite files, then with PostgreSQL (registry, jobs, keywords)."""
    return settings.model_copy(update={"database_url": database_url})


def _chunk_ids(pipeline: IngestPipeline, doc_id: str) -> set[str]:
    dense = set(pipeline.store.ids_for_document(doc_id))
    keyword = set(pipeline.keyword.ids_for_document(doc_id))
    assert dense == keyword  # both indexes always hold the same chunks
    return dense


def test_ingest_is_idempotent_and_tracks_changes(pipeline: IngestPipeline, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    a = write(docs / "a.md", "# Alpha\n\nThe alpha server restarts at 03:00 every night.\n")
    write(docs / "b.txt", "Badge access is possible from 06:00 to 22:00 on weekdays.\n")
    write(docs / ".hidden.md", "never indexed")
    report = pipeline.ingest([docs])
    assert report.count("indexed") == 2 and report.count("failed") == 0
    doc_a = pipeline.registry.get_by_path(str(a.resolve()))
    assert doc_a is not None and doc_a.status == "indexed"
    before = _chunk_ids(pipeline, doc_a.id)
    total = pipeline.store.count()

    again = pipeline.ingest([docs])
    assert again.count("unchanged") == 2 and pipeline.store.count() == total

    a.write_text("# Alpha\n\nThe alpha server now restarts at 04:30 on Sundays only.\n")
    assert pipeline.ingest([a]).count("indexed") == 1
    after = _chunk_ids(pipeline, doc_a.id)
    assert after and not (after & before)  # stale chunks are gone
    assert pipeline.store.count() == total

    pipeline.delete(doc_a.id)
    assert _chunk_ids(pipeline, doc_a.id) == set()
    record = pipeline.registry.get(doc_a.id)
    assert record is not None and record.status == "deleted"


def test_bad_file_fails_with_a_reason_and_the_batch_goes_on(
    pipeline: IngestPipeline, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    write(docs / "good.md", "# Good\n\nThis one is fine.\n")
    bad = docs / "broken.pdf"
    bad.write_bytes(b"not a pdf at all")
    write(docs / "notes.xyz", "unsupported")
    report = pipeline.ingest([docs])
    assert report.count("indexed") == 1
    assert report.count("failed") == 1 and report.count("skipped") == 1
    failed = pipeline.registry.get_by_path(str(bad.resolve()))
    assert failed is not None and failed.status == "failed" and "not a PDF" in (failed.error or "")


def test_pending_documents_are_finished_on_resume(pipeline: IngestPipeline, tmp_path: Path) -> None:
    # A crash after registration leaves the document pending, with no chunks.
    doc = write(tmp_path / "c.md", "# Crash\n\nResumed documents are indexed once.\n")
    pipeline.registry.register(str(doc.resolve()), "default", "stale-hash", 1, 0.0)
    gone = tmp_path / "gone.md"
    pipeline.registry.register(str(gone), "default", "x", 1, 0.0)
    pipeline.resume_pending()
    record = pipeline.registry.get_by_path(str(doc.resolve()))
    assert record is not None and record.status == "indexed"
    assert len(_chunk_ids(pipeline, record.id)) == record.chunks > 0
    missing = pipeline.registry.get_by_path(str(gone))
    assert missing is not None and missing.status == "deleted"


def test_inbox_subfolders_are_collections(pipeline: IngestPipeline) -> None:
    inbox = pipeline.inbox
    doc = write(inbox / "hr" / "leave.md", "# Leave\n\nTwenty-five days.\n")
    assert pipeline.collection_for(doc) == "hr"
    assert pipeline.collection_for(write(inbox / "top.md", "x")) == "default"


def test_second_writer_is_refused(tmp_path: Path) -> None:
    with (
        DataDirLock(tmp_path, "enclave serve"),
        pytest.raises(DataDirBusyError, match="enclave serve"),
    ):
        DataDirLock(tmp_path, "enclave ingest").acquire()
    with DataDirLock(tmp_path, "enclave ingest"):  # released: free again
        pass


def test_a_busy_lock_names_the_server_that_holds_it(tmp_path: Path) -> None:
    """The URL of the `enclave serve` holding the lock comes as an attribute (what
    `lock_or_server` hands work to), not parsed out of the message; any other holder has none
    and `lock_or_server` raises."""
    url = "http://127.0.0.1:8123"
    settings = Settings(data_dir=tmp_path)
    with DataDirLock(tmp_path, f"enclave serve at {url}", server_url=url):
        with pytest.raises(DataDirBusyError) as busy:
            DataDirLock(tmp_path, "enclave ingest").acquire()
        assert busy.value.server_url == url
        assert busy.value.holder.startswith(f"enclave serve at {url} (pid ")
        assert lock_or_server(settings, "enclave tune") == url
    with DataDirLock(tmp_path, "enclave reindex at http://example.invalid"):
        with pytest.raises(DataDirBusyError) as busy:
            lock_or_server(settings, "enclave ingest")
        assert busy.value.server_url is None and "enclave reindex" in str(busy.value)
    lock = lock_or_server(settings, "enclave ingest")
    assert isinstance(lock, DataDirLock)
    lock.release()


def _index_with(
    pipeline: IngestPipeline, doc: Path, meanwhile: Callable[[str], object]
) -> FileOutcome:
    """Index `doc`, running `meanwhile(document id)` right after its chunks are embedded (as
    another thread or process would, between the embedding and the registry update)."""
    planned = pipeline.plan(doc, False)
    assert not isinstance(planned, FileOutcome)
    embedder = pipeline.embedder
    embed = embedder.embed

    def embed_then(texts: list[str]) -> Any:
        vectors = embed(texts)
        meanwhile(planned.id)
        return vectors

    embedder.embed = embed_then  # type: ignore[method-assign]
    try:
        return pipeline.index(planned)
    finally:
        embedder.embed = embed  # type: ignore[method-assign]


def test_a_document_deleted_while_it_is_embedded_stays_deleted(
    pipeline: IngestPipeline, tmp_path: Path
) -> None:
    """A delete (an API request thread, or another process) lands while the ingestion thread
    embeds the document's chunks: the document must not come back as indexed."""
    doc = write(tmp_path / "gone.md", "# Gone\n\nThis policy was withdrawn during indexing.\n")
    outcome = _index_with(pipeline, doc, pipeline.delete)
    assert outcome.status == "skipped" and "deleted or changed" in (outcome.error or "")
    record = pipeline.registry.get(outcome.document_id or "")
    assert record is not None and record.status == "deleted"
    assert _chunk_ids(pipeline, record.id) == set()


def test_a_document_changed_while_it_is_embedded_waits_for_its_new_version(
    pipeline: IngestPipeline, tmp_path: Path
) -> None:
    doc = write(tmp_path / "v.md", "# Version\n\nThe first version of this note.\n")

    def change(_: str) -> None:
        write(doc, "# Version\n\nThe second version of this note.\n")
        pipeline.plan(doc, False)  # registered again: pending, new hash

    outcome = _index_with(pipeline, doc, change)
    assert outcome.status == "skipped"
    record = pipeline.registry.get(outcome.document_id or "")
    assert record is not None and record.status == "pending"  # the new version is still to do
    assert pipeline.ingest_file(doc).status == "indexed"
