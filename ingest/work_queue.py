"""The Celery work queue (`work_queue = "celery"`): the web server registers documents and
queues them; `enclave worker` processes parse, embed and write them.

Delivery is at least once: a task is acknowledged only after it ran (`acks_late`), so a worker
that dies (even SIGKILL) leaves its task to be delivered to another one after
`celery_visibility_timeout_s`. Tasks are therefore idempotent, keyed on document id + content
hash: a worker indexes a document only while the registry still holds it `pending` with that
hash; writes are delete-then-insert with stable chunk ids, so even two workers running the same
task at once leave each chunk once.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from config.settings import Settings
from ingest.pipeline import FileOutcome, IngestPipeline
from ingest.registry import DocumentRecord

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

TASK_NAME = "enclave.index_documents"
QUEUE_NAME = "enclave-ingest"
# Documents per task: enough for the embedder to batch their chunks and the parser pool to
# work ahead, few enough that a lost worker's task is redone quickly.
DOCUMENTS_PER_TASK = 4
MAX_BACKOFF_S = 300.0


class WorkQueueError(RuntimeError):
    """The work queue is configured without what it needs."""


def check_settings(settings: Settings) -> None:
    """A Celery queue needs a broker, and workers in other processes need a vector store that
    takes writers from several processes: a Chroma server, not the embedded one."""
    if settings.work_queue != "celery":
        return
    if not settings.redis_url:
        raise WorkQueueError('work_queue = "celery" needs redis_url (the broker)')
    if not settings.chroma_host:
        raise WorkQueueError(
            'work_queue = "celery" needs a Chroma server (chroma_host): embedded Chroma takes '
            "one writing process only"
        )


def celery_app(settings: Settings) -> Celery:
    from celery import Celery

    check_settings(settings)
    visibility = settings.celery_visibility_timeout_s
    app = Celery("enclave", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        # A worker process killed mid-task: requeue its task rather than fail it.
        task_reject_on_worker_lost=True,
        # One task at a time per worker: a dead worker strands one task, not a prefetched pile.
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE_NAME,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_transport_options={
            "visibility_timeout": visibility,
            # How often workers look for tasks whose holder died; the default scans every
            # 100 s, too rarely for a short visibility timeout.
            "unacked_restore_interval": max(1, min(10, int(visibility / 4))),
            "unacked_restore_throttle": 1,
        },
    )
    return app


def chunks_of(records: Sequence[DocumentRecord], size: int) -> list[list[DocumentRecord]]:
    return [list(records[i : i + size]) for i in range(0, len(records), size)]


class CeleryDispatch:
    """`IngestPipeline.dispatch` for the web server: one task per few documents, each named by
    (document id, content hash)."""

    def __init__(self, settings: Settings) -> None:
        self.app = celery_app(settings)

    def __call__(self, records: Sequence[DocumentRecord], job: str | None) -> None:
        for part in chunks_of(records, DOCUMENTS_PER_TASK):
            items = [[r.id, r.sha256] for r in part]
            self.app.send_task(TASK_NAME, args=[job, items], queue=QUEUE_NAME)
        log.info("queued %d documents to the workers (job %s)", len(records), job)


def waiting_tasks(settings: Settings) -> int:
    """Tasks in the broker not yet taken by a worker (admin: ingestion queue depth)."""
    import redis

    try:
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=2)
        return int(client.llen(QUEUE_NAME))
    except redis.RedisError:
        return 0


def index_queued(
    pipeline: IngestPipeline, job: str | None, items: Sequence[Sequence[str]]
) -> list[FileOutcome]:
    """The task's work: index the documents still pending with the queued content hash; for
    the others say what they are (indexed or failed already: a redelivered task; changed or
    deleted since: a newer task has them). Each outcome is logged to the job once."""
    outcomes: list[FileOutcome] = []
    todo: list[DocumentRecord] = []
    for document_id, sha256 in items:
        record = pipeline.registry.get(document_id)
        if record is None or record.status == "deleted" or record.sha256 != sha256:
            path = record.path if record else document_id
            error = "superseded: the file changed or was deleted after it was queued"
            outcomes.append(FileOutcome(path, "skipped", document_id, error=error))
        elif record.status != "pending":
            outcomes.append(
                FileOutcome(record.path, record.status, document_id, record.chunks, record.error)
            )
        else:
            todo.append(record)
    outcomes.extend(pipeline.index_records(todo))
    if job is not None:
        for outcome in outcomes:
            assert outcome.document_id is not None
            if not pipeline.jobs.has_file(job, outcome.document_id):
                pipeline.jobs.recorder(job)(outcome.path, outcome)
        pipeline.jobs.finish_if_complete(job)
    return outcomes


def give_up(
    pipeline: IngestPipeline, job: str | None, items: Sequence[Sequence[str]], error: str
) -> None:
    """The retries are spent: the documents still pending fail with the reason."""
    for document_id, sha256 in items:
        record = pipeline.registry.get(document_id)
        if record is not None and record.status == "pending" and record.sha256 == sha256:
            pipeline.registry.mark_failed(document_id, error)
            if job is not None and not pipeline.jobs.has_file(job, document_id):
                outcome = FileOutcome(record.path, "failed", document_id, error=error)
                pipeline.jobs.recorder(job)(record.path, outcome)
    if job is not None:
        pipeline.jobs.finish_if_complete(job)


def backoff_s(retries: int) -> float:
    """Exponential backoff with jitter: 5, 10, 20 ... s, at most MAX_BACKOFF_S."""
    return float(min(MAX_BACKOFF_S, 5.0 * 2**retries) * random.uniform(0.8, 1.2))


def worker_app(settings: Settings, pipeline: IngestPipeline) -> Celery:
    """The Celery app of `enclave worker`, its task bound to this process's pipeline."""
    app = celery_app(settings)
    # The backoff must end before the broker hands the waiting task to another worker.
    cap = max(1.0, min(MAX_BACKOFF_S, settings.celery_visibility_timeout_s / 2))

    @app.task(name=TASK_NAME, bind=True, max_retries=settings.celery_max_retries)
    def index_documents(self: Any, job: str | None, items: list[list[str]]) -> dict[str, int]:
        try:
            outcomes = index_queued(pipeline, job, items)
        except Exception as exc:
            if self.request.retries >= settings.celery_max_retries:
                log.exception("indexing failed %d times; giving up", self.request.retries + 1)
                give_up(pipeline, job, items, f"indexing failed: {type(exc).__name__}: {exc}")
                return {"failed": len(items)}
            log.warning("indexing failed (%s); retrying", exc)
            raise self.retry(exc=exc, countdown=min(cap, backoff_s(self.request.retries))) from exc
        counts: dict[str, int] = {}
        for outcome in outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        return counts

    return app


def worker_name() -> str:
    return f"enclave-{os.getpid()}@{socket.gethostname()}"
