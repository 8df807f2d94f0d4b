"""The Celery work queue's guarantees, without a broker: what the web side hands over, and a
task that may run twice (redelivery after a worker died) indexing each document once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from config.settings import Settings
from ingest.inbox import InboxSync
from ingest.pipeline import IngestPipeline
from ingest.registry import DocumentRecord
from ingest.work_queue import WorkQueueError, check_settings, give_up, index_queued
from tests.conftest import write


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, records: Sequence[DocumentRecord], job: str | None) -> None:
        self.calls.append(([r.id for r in records], job))


def keyword_ids(pipeline: IngestPipeline, document_id: str) -> list[str]:
    return sorted(pipeline.keyword.ids_for_document(document_id))


def test_a_redelivered_task_indexes_nothing_twice(pipeline: IngestPipeline, tmp_path: Path) -> None:
    file = write(tmp_path / "a.txt", "The rollback window of change CR-7 is four hours.\n")
    record = pipeline.plan(file)
    assert isinstance(record, DocumentRecord)
    job = pipeline.jobs.start("inbox", 1)
    items = [[record.id, record.sha256]]

    (first,) = index_queued(pipeline, job, items)
    assert first.status == "indexed" and first.chunks >= 1
    chunks = sorted(pipeline.store.ids_for_document(record.id))
    assert keyword_ids(pipeline, record.id) == chunks

    (again,) = index_queued(pipeline, job, items)  # the same task, delivered again
    assert (again.status, again.chunks) == ("indexed", first.chunks)
    assert sorted(pipeline.store.ids_for_document(record.id)) == chunks
    assert keyword_ids(pipeline, record.id) == chunks
    found = pipeline.jobs.get(job)
    assert found is not None
    assert [f["document_id"] for f in found["files"]] == [record.id]  # logged once
    assert found["status"] == "finished"


def test_a_task_killed_after_writing_is_redone_without_duplicates(
    pipeline: IngestPipeline, tmp_path: Path
) -> None:
    file = write(tmp_path / "b.txt", "Field teams carry two spare optical modules.\n")
    record = pipeline.plan(file)
    assert isinstance(record, DocumentRecord)
    # The first run wrote both indexes, then died before marking the document indexed.
    list(pipeline.index_records([record]))
    pipeline.registry.register(record.path, record.collection, record.sha256, 1, 1.0)
    assert pipeline.registry.get(record.id).status == "pending"  # type: ignore[union-attr]
    (outcome,) = index_queued(pipeline, None, [[record.id, record.sha256]])
    assert outcome.status == "indexed"
    assert len(pipeline.store.ids_for_document(record.id)) == outcome.chunks
    assert len(keyword_ids(pipeline, record.id)) == outcome.chunks


def test_a_task_for_an_older_version_of_the_file_is_skipped(
    pipeline: IngestPipeline, tmp_path: Path
) -> None:
    file = write(tmp_path / "c.txt", "Version one.\n")
    old = pipeline.plan(file)
    assert isinstance(old, DocumentRecord)
    write(file, "Version two, changed after the first task was queued.\n")
    new = pipeline.plan(file)
    assert isinstance(new, DocumentRecord) and new.sha256 != old.sha256
    (stale,) = index_queued(pipeline, None, [[old.id, old.sha256]])
    assert stale.status == "skipped" and "superseded" in (stale.error or "")
    assert pipeline.store.ids_for_document(old.id) == []
    (fresh,) = index_queued(pipeline, None, [[new.id, new.sha256]])
    assert fresh.status == "indexed"


def test_spent_retries_fail_the_pending_documents_with_the_reason(
    pipeline: IngestPipeline, tmp_path: Path
) -> None:
    record = pipeline.plan(write(tmp_path / "d.txt", "Anything.\n"))
    assert isinstance(record, DocumentRecord)
    give_up(pipeline, None, [[record.id, record.sha256]], "indexing failed: chroma down")
    failed = pipeline.registry.get(record.id)
    assert failed is not None
    assert (failed.status, failed.error) == ("failed", "indexing failed: chroma down")


def test_with_a_queue_the_inbox_hands_files_over_once(
    pipeline: IngestPipeline, settings: Settings
) -> None:
    queue = Recorder()
    pipeline.dispatch = queue
    write(settings.inbox_dir / "e.txt", "Queued, not indexed here.\n")
    sync = InboxSync(pipeline, settle_s=0)
    report = sync.scan()
    assert [o.status for o in report.outcomes] == ["queued"]
    assert pipeline.store.count() == 0  # nothing indexed in this process
    ((ids, job),) = queue.calls
    assert job is not None and len(ids) == 1
    found = pipeline.jobs.get(job)
    assert found is not None and found["status"] == "running" and found["total"] == 1
    sync.scan()  # still pending (queued): not queued again
    assert len(queue.calls) == 1


def test_celery_needs_a_broker_and_a_chroma_server(tmp_path: Path) -> None:
    check_settings(Settings(data_dir=tmp_path))  # local: nothing needed
    with pytest.raises(WorkQueueError, match="redis_url"):
        check_settings(Settings(data_dir=tmp_path, work_queue="celery"))
    with pytest.raises(WorkQueueError, match="chroma_host"):
        check_settings(Settings(data_dir=tmp_path, work_queue="celery", redis_url="redis://x"))


def test_cli_refuses_what_the_local_queue_cannot_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    data = str(tmp_path / "data")
    assert main(["worker", "--data", data]) == 1
    assert 'work_queue = "celery"' in capsys.readouterr().err
    assert main(["serve", "--workers", "2", "--data", data]) == 1
    assert "--workers above 1" in capsys.readouterr().err


def test_orphan_cleanup_spares_a_worker_write_in_progress(
    pipeline: IngestPipeline, tmp_path: Path
) -> None:
    record = pipeline.plan(write(tmp_path / "f.txt", "Written by a worker, not yet marked.\n"))
    assert isinstance(record, DocumentRecord)
    list(pipeline.index_records([record]))  # chunks written ...
    pipeline.registry.register(record.path, record.collection, record.sha256, 1, 1.0)  # pending
    pipeline.dispatch = Recorder()
    assert pipeline.remove_orphans() == 0  # ... while the web side restarts
    assert pipeline.store.ids_for_document(record.id)
