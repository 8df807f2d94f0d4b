"""What the app holds: the components, the ingestion pipeline and model readiness."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, TypeVar

from flask import current_app

from ingest.inbox import InboxLeader, InboxSync, InboxWatcher
from ingest.pipeline import FileOutcome, IngestPipeline, IngestStopped, build_pipeline
from ingest.registry import DocumentRecord
from retriever.audit import AuditLog
from retriever.components import Components
from retriever.tuning.activation import ActivationStatus, EmbedderActivation
from retriever.tuning.generations import GenerationError
from server import metrics
from service.conversations import ConversationStore
from service.identity import IdentityStore
from service.limits import build_limiter
from service.permissions import CollectionAccess

log = logging.getLogger(__name__)
T = TypeVar("T")


class EnclaveState:
    def __init__(self, components: Components) -> None:
        self.components = components
        self.settings = components.settings
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._pipeline: IngestPipeline | None = None
        self._pipeline_lock = threading.Lock()
        # One ingestion thread: the embedded indexes take a single writer.
        self._ingest = ThreadPoolExecutor(max_workers=1, thread_name_prefix="enclave-ingest")
        self._watcher: InboxWatcher | None = None
        self._inbox_leader: InboxLeader | None = None
        self._conversations: ConversationStore | None = None
        self._identity: IdentityStore | None = None
        self.limiter = build_limiter(self.settings.rate_limit_per_minute, self.settings.redis_url)
        self.access: CollectionAccess = CollectionAccess(self.settings)
        self._queued = 0  # ingestion tasks submitted and not finished (admin: queue depth)
        self._queued_lock = threading.Lock()
        self._in_flight: set[Future[Any]] = set()  # for a prompt stop (`stop`)
        self.stopping = threading.Event()
        self.activation = EmbedderActivation(components, exclusive=self._exclusive)
        self._activation_thread: threading.Thread | None = None
        self._activation_busy = threading.Lock()

    @property
    def pipeline(self) -> IngestPipeline:
        with self._pipeline_lock:
            if self._pipeline is None:
                if self.settings.work_queue == "celery":
                    # Documents go to `enclave worker` processes: no parsers here.
                    from ingest.work_queue import CeleryDispatch

                    self._pipeline = build_pipeline(self.components, parse_workers=0)
                    self._pipeline.dispatch = CeleryDispatch(self.settings)
                else:
                    self._pipeline = build_pipeline(self.components)
                self._pipeline.observe = metrics.ingested
                if self.stopping.is_set():
                    self._pipeline.stopping.set()
            return self._pipeline

    @property
    def conversations(self) -> ConversationStore:
        with self._pipeline_lock:
            if self._conversations is None:
                target = self.settings.database_for(self.settings.conversations_path)
                self._conversations = ConversationStore(target)
            return self._conversations

    @property
    def identity(self) -> IdentityStore:
        """Users, groups and API keys (opened on first use: auth mode none needs none)."""
        with self._pipeline_lock:
            if self._identity is None:
                self._identity = IdentityStore(
                    self.settings.database_for(self.settings.identity_path)
                )
            return self._identity

    @property
    def audit(self) -> AuditLog:
        return self.components.audit

    @property
    def ingest_queue(self) -> int:
        """Ingestion tasks (uploads, re-indexing, inbox scans) waiting or running; with the
        Celery queue, plus the tasks waiting in the broker."""
        with self._queued_lock:
            local = self._queued
        if self.settings.work_queue == "celery":
            from ingest.work_queue import waiting_tasks

            local += waiting_tasks(self.settings)
        return local

    def _run_ingest(self, task: Callable[[], T]) -> Future[T]:
        with self._queued_lock:
            self._queued += 1

        def counted() -> T:
            try:
                return task()
            finally:
                with self._queued_lock:
                    self._queued -= 1

        future = self._ingest.submit(counted)
        with self._queued_lock:
            self._in_flight.add(future)

        def done(finished: Future[T]) -> None:
            with self._queued_lock:
                self._in_flight.discard(finished)

        future.add_done_callback(done)
        return future

    def load(self) -> None:
        """Load models and indexes (health turns ok then); then reconcile the inbox with the
        registry and the indexes, and follow it."""
        try:
            self.components.warm_up()
            closed = self.pipeline.jobs.close_interrupted()
            if closed:
                log.info("closed %d jobs whose process is gone as interrupted", len(closed))
            sync = InboxSync(self.pipeline, self.settings.settle_s)
            self.ready.set()
        except Exception as exc:
            log.exception("loading failed")
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        if self.settings.web_workers > 1:
            # Several web processes: one of them follows the inbox (see InboxLeader).
            self._inbox_leader = InboxLeader(self.settings.data_dir, lambda: self._follow(sync))
            self._inbox_leader.start()
        else:
            self._follow(sync)

    def _follow(self, sync: InboxSync) -> None:
        if self.stopping.is_set():
            return
        # Every write goes through the one ingestion thread: a single writer.
        self._run_ingest(lambda: self._reconcile(sync))
        self._watcher = InboxWatcher(
            sync,
            self.settings.watch,
            self.settings.poll_interval_s,
            run=lambda: self._run_ingest(sync.scan).result(),
        )
        self._watcher.start()

    @staticmethod
    def _reconcile(sync: InboxSync) -> None:
        report = sync.reconcile()
        log.info("inbox reconciled: %s", report.to_dict())

    def load_in_background(self) -> None:
        threading.Thread(target=self.load, name="enclave-load", daemon=True).start()

    def submit(
        self, records: DocumentRecord | Sequence[DocumentRecord], kind: str = "upload"
    ) -> Future[list[FileOutcome]]:
        """Index registered (pending) documents in the ingestion thread, as one job."""
        batch = [records] if isinstance(records, DocumentRecord) else list(records)
        jobs = self.pipeline.jobs
        job = jobs.start(kind, len(batch))

        def run() -> list[FileOutcome]:
            outcomes = []
            record = jobs.recorder(job)
            queued = 0
            status = "finished"
            try:
                for outcome in self.pipeline.index_records(batch, job):
                    record(outcome.path, outcome)
                    outcomes.append(outcome)
                    queued += outcome.status == "queued"
            except IngestStopped:
                status = "interrupted"  # the rest stays pending: finished at the next start
                raise
            finally:
                if queued:  # the workers log those and finish the job
                    jobs.hand_over(job, len(outcomes) - queued, queued)
                else:
                    jobs.finish(job, status)
            return outcomes

        return self._run_ingest(run)

    def reindex(self, records: Sequence[DocumentRecord], kind: str) -> list[DocumentRecord]:
        """Parse and embed these documents again from their files (a retry after a failure,
        or a refresh); each keeps its id and collection. Returns those marked pending; a
        document whose file is gone is left as it was."""
        again = (self.pipeline.register_again(record) for record in records)
        pending = [record for record in again if record is not None]
        if pending:
            self.submit(pending, kind)
        return pending

    def _exclusive(self, swap: Callable[[], T]) -> T:
        """Run an embedder swap in the ingestion thread: nothing else writes meanwhile, and
        the pipeline reads the new serving index from its next batch on."""
        return self._ingest.submit(swap).result()

    def start_activation(self, model: Path | None) -> None:
        """Activate `model` (None: roll back) in a background thread; questions keep being
        answered from the current collection until the swap."""
        if self.settings.work_queue != "local":
            raise GenerationError(
                "switching the embedder while Celery workers index is not supported yet: "
                'stop the workers and serve with work_queue = "local" to switch'
            )
        if not self._activation_busy.acquire(blocking=False):
            raise GenerationError("an embedder activation is already running")

        def run() -> None:
            try:
                if model is None:
                    self.activation.rollback()
                else:
                    self.activation.activate(model)
            except Exception:
                log.exception("embedder activation failed")
            finally:
                self._activation_busy.release()

        # Reported as running from now on, not only once the thread gets going.
        self.activation.status = ActivationStatus(phase="starting", started_at=time.time())
        self._activation_thread = threading.Thread(target=run, name="enclave-embedder", daemon=True)
        self._activation_thread.start()

    def stop(self, grace_s: float) -> bool:
        """Stop promptly (Ctrl-C, SIGTERM): indexing stops between two files or batches, what
        is queued is dropped (pending documents are finished at the next start, as after a
        crash), then everything closes. False if indexing was still busy after `grace_s`
        (one embedding batch can take that long): the caller may then exit without waiting."""
        self.stopping.set()
        if self._pipeline is not None:
            self._pipeline.stopping.set()
        if self._inbox_leader is not None:
            self._inbox_leader.stop()
        self._ingest.shutdown(wait=False, cancel_futures=True)
        with self._queued_lock:
            in_flight = list(self._in_flight)
        _, busy = wait(in_flight, timeout=grace_s)
        if busy:
            return False
        self.shutdown()
        return True

    def shutdown(self) -> None:
        if self._inbox_leader is not None:
            self._inbox_leader.stop()
        if self._activation_thread is not None:
            self._activation_thread.join()
        if self._watcher is not None:
            self._watcher.stop()
        self._ingest.shutdown(wait=True)
        if self._pipeline is not None:
            self._pipeline.close()
        if self._conversations is not None:
            self._conversations.close()
        if self._identity is not None:
            self._identity.close()
        close = getattr(self.components.__dict__.get("generator"), "close", None)
        if close is not None:  # the model's process
            close()


def state() -> EnclaveState:
    return current_app.extensions["enclave"]
