"""Keep the index in step with the drop folder: scan (new, changed, moved, deleted files) and
follow it with file-system events or polling."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ingest.lock import try_flock
from ingest.pipeline import (
    FileOutcome,
    IngestPipeline,
    IngestReport,
    IngestStopped,
    absolute,
    discover,
)

log = logging.getLogger(__name__)

WatchMode = Literal["events", "poll", "off"]
SAFETY_RESCAN_S = 60.0  # events can be lost (network shares, overflow): rescan now and then


class InboxSync:
    def __init__(self, pipeline: IngestPipeline, settle_s: float = 1.0) -> None:
        self.pipeline = pipeline
        self.inbox = pipeline.inbox
        self.settle_s = settle_s
        self.unsettled = 0  # files the last scan left for later: still being written
        self._lock = threading.Lock()  # one scan at a time

    def _unchanged(self, path: Path, stat: os.stat_result) -> bool:
        """Same size and mtime as recorded: skip without hashing."""
        record = self.pipeline.registry.get_by_path(str(path))
        # With a work queue, a pending document is queued already: do not queue it again.
        done = ("indexed", "failed", "pending") if self.pipeline.dispatch else ("indexed", "failed")
        return (
            record is not None
            and record.status in done
            and record.size == stat.st_size
            and record.mtime == stat.st_mtime
        )

    def scan(self, progress: Callable[[str, FileOutcome], None] | None = None) -> IngestReport:
        """One pass: index what is new or changed (once its size has settled), update what
        moved, and delete what is gone. Returns what was done; `unsettled` files wait."""
        with self._lock:
            self.inbox.mkdir(parents=True, exist_ok=True)
            now = time.time()
            ready: list[Path] = []
            unsettled = 0
            for file in discover([self.inbox]):
                path = absolute(file)
                try:
                    # Through a link, as `plan` records it: a link that failed (one crossing
                    # collections) is then unchanged, not retried at every scan.
                    stat = path.stat()
                except FileNotFoundError:
                    continue  # gone, or a dangling link: nothing to read
                if self._unchanged(path, stat):
                    continue
                if now - stat.st_mtime < self.settle_s:
                    unsettled += 1  # still being written: next scan
                    continue
                ready.append(path)
            gone = [
                record
                for record in self.pipeline.registry.list()
                if record.status != "deleted"
                and self.pipeline.in_inbox(Path(record.path))
                and not os.path.lexists(record.path)
            ]
            self.unsettled = unsettled
            if not ready and not gone:
                return IngestReport()
            jobs = self.pipeline.jobs
            job = jobs.start("inbox", len(ready) + len(gone))
            log_file = jobs.recorder(job)

            def record(path: str, outcome: FileOutcome) -> None:
                log_file(path, outcome)
                if progress:
                    progress(path, outcome)

            try:
                # New and changed files first, so a move is recognised before its old path is
                # treated as deleted.
                report = self.pipeline.ingest_file_list(ready, record, job=job)
                for doc in gone:
                    if os.path.lexists(doc.path) or self._moved(doc.id, doc.path):
                        continue
                    self.pipeline.delete(doc.id)
                    outcome = FileOutcome(doc.path, "deleted", doc.id)
                    report.outcomes.append(outcome)
                    record(doc.path, outcome)
            except BaseException as exc:
                # The next scan (or start) does what this one could not.
                jobs.finish(job, "interrupted" if isinstance(exc, IngestStopped) else "failed")
                raise
            queued = report.count("queued")
            if queued:  # the workers log those files, and the last one finishes the job
                jobs.hand_over(job, len(report.outcomes) - queued, queued)
            else:
                jobs.finish(job)
            return report

    def _moved(self, document_id: str, old_path: str) -> bool:
        """The document was found at a new path during this scan."""
        current = self.pipeline.registry.get(document_id)
        return current is not None and current.path != old_path

    def reconcile(self) -> IngestReport:
        """At start-up: finish what a crash left pending, drop orphan chunks, then scan."""
        with self._lock:
            self.pipeline.resume_pending()
            orphans = self.pipeline.remove_orphans()
        if orphans:
            log.info("removed the chunks of %d orphan documents", orphans)
        return self.scan()


class InboxWatcher:
    """Runs `sync.scan()` after file events (debounced) or every poll interval."""

    def __init__(
        self,
        sync: InboxSync,
        mode: WatchMode,
        poll_interval_s: float = 2.0,
        run: Callable[[], IngestReport] | None = None,
    ) -> None:
        self.sync = sync
        self.run_scan = run or sync.scan
        self.mode = mode
        self.poll_interval_s = poll_interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None

    def start(self) -> None:
        if self.mode == "off":
            return
        if self.mode == "events":
            self._observer = self._start_observer()
        self._thread = threading.Thread(target=self._run, name="enclave-inbox", daemon=True)
        self._thread.start()

    def _start_observer(self) -> Any:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        wake = self._wake

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in ("opened", "closed_no_write"):
                    wake.set()

        observer = Observer()
        self.sync.inbox.mkdir(parents=True, exist_ok=True)
        observer.schedule(Handler(), str(self.sync.inbox), recursive=True)
        observer.start()
        return observer

    def _run(self) -> None:
        interval = self.poll_interval_s if self.mode == "poll" else SAFETY_RESCAN_S
        while not self._stop.is_set():
            woke = self._wake.wait(interval)
            if self._stop.is_set():
                return
            if woke:
                # Let a burst of events (a copy in progress) settle into one scan.
                time.sleep(max(0.2, self.sync.settle_s))
                self._wake.clear()
            try:
                report = self.run_scan()
                if report.outcomes:
                    log.info("inbox: %s", report.to_dict())
            except Exception:
                if self._stop.is_set():
                    return  # stopped mid-scan: the next start scans again
                log.exception("inbox scan failed; retrying at the next interval")
            if self.sync.unsettled:
                self._wake.set()  # a file skipped as still being written: look again soon

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=30)


class InboxLeader:
    """Among several web processes on one machine, the one holding `data/.inbox.lock` follows
    the inbox; the others try again now and then, so one takes over if it dies. (Across
    machines, set `watch = "off"` on every node but the one that has the inbox.)"""

    RETRY_S = 5.0

    def __init__(self, data_dir: Path, follow: Callable[[], None]) -> None:
        self.path = data_dir / ".inbox.lock"
        self.follow = follow
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="enclave-inbox-lead", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _try_lock(self) -> bool:
        self._fd = try_flock(self.path)  # held until this process exits
        return self._fd is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._try_lock():
                log.info("this process follows the inbox (pid %d)", os.getpid())
                self.follow()
                return
            self._stop.wait(self.RETRY_S)

    @property
    def leading(self) -> bool:
        return self._fd is not None

    def stop(self) -> None:
        self._stop.set()
