"""Ingestion jobs: one row per run (a CLI ingest, an inbox scan with work, an upload) and one
per file, so progress and failures can be followed while the work goes on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from retriever.database import Row, SQLStore, StoreTarget

if TYPE_CHECKING:
    from ingest.pipeline import FileOutcome

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    chunks INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS job_files (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    path TEXT NOT NULL,
    status TEXT NOT NULL,
    document_id TEXT,
    chunks INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS job_files_job ON job_files(job_id);
CREATE TABLE IF NOT EXISTS parse_progress (
    document_id TEXT PRIMARY KEY,
    job_id TEXT,
    path TEXT NOT NULL,
    pages_done INTEGER NOT NULL,
    pages_total INTEGER NOT NULL,
    at REAL NOT NULL
);
"""
KEEP_JOBS = 200  # older jobs are pruned
STALE_PROGRESS_S = 86400.0  # page progress of a parse that never finished (a crash) is pruned


class JobLog(SQLStore):
    """Kept beside the registry (same SQLite file, or the same PostgreSQL database)."""

    def __init__(self, target: StoreTarget) -> None:
        super().__init__(target, _SCHEMA)

    def start(self, kind: str, total: int) -> str:
        job_id = uuid.uuid4().hex[:12]
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs(id, kind, status, total, started_at) "
                "VALUES (?, ?, 'running', ?, ?)",
                (job_id, kind, total, time.time()),
            )
            # Files first: they reference their job.
            db.execute(
                "DELETE FROM job_files WHERE job_id NOT IN "
                "(SELECT id FROM jobs ORDER BY started_at DESC LIMIT ?)",
                (KEEP_JOBS,),
            )
            db.execute(
                "DELETE FROM jobs WHERE id NOT IN "
                "(SELECT id FROM jobs ORDER BY started_at DESC LIMIT ?)",
                (KEEP_JOBS,),
            )
            db.execute("DELETE FROM parse_progress WHERE at < ?", (time.time() - STALE_PROGRESS_S,))
        return job_id

    def file_done(
        self,
        job_id: str,
        path: str,
        status: str,
        document_id: str | None,
        chunks: int,
        error: str | None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO job_files(job_id, path, status, document_id, chunks, error, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, path, status, document_id, chunks, error, time.time()),
            )
            if document_id is not None:
                db.execute("DELETE FROM parse_progress WHERE document_id = ?", (document_id,))
            db.execute(
                "UPDATE jobs SET done = done + 1, chunks = chunks + ?, "
                "total = CASE WHEN total > done + 1 THEN total ELSE done + 1 END WHERE id = ?",
                (chunks, job_id),
            )

    def pages(
        self, document_id: str, path: str, done: int, total: int, job_id: str | None = None
    ) -> None:
        """A file being read page by page (a PDF, a scan being OCRed): `done` of `total`."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO parse_progress(document_id, job_id, path, pages_done, pages_total, "
                "at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (document_id) DO UPDATE SET "
                "job_id = excluded.job_id, path = excluded.path, "
                "pages_done = excluded.pages_done, pages_total = excluded.pages_total, "
                "at = excluded.at",
                (document_id, job_id, path, done, total, time.time()),
            )

    def forget_pages(self, document_id: str) -> None:
        """The document is no longer being read (its outcome is logged by `file_done`)."""
        with self._tx() as db:
            db.execute("DELETE FROM parse_progress WHERE document_id = ?", (document_id,))

    def page_progress(self) -> dict[str, dict[str, int]]:
        """Pages done and pages of each document being read now, by document id."""
        with self._lock:
            rows = self._db.execute(
                "SELECT document_id, pages_done, pages_total FROM parse_progress"
            ).fetchall()
        return {
            r["document_id"]: {"done": r["pages_done"], "total": r["pages_total"]} for r in rows
        }

    def recorder(self, job_id: str) -> Callable[[str, FileOutcome], None]:
        """A progress callback that logs each file's outcome into the job. A `queued` outcome
        (handed to a Celery worker) is not logged: the worker logs the real one."""

        def record(path: str, outcome: FileOutcome) -> None:
            if outcome.status == "queued":
                return
            self.file_done(
                job_id, path, outcome.status, outcome.document_id, outcome.chunks, outcome.error
            )

        return record

    def finish(self, job_id: str, status: str = "finished") -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, finished_at = ? WHERE id = ?",
                (status, time.time(), job_id),
            )

    def hand_over(self, job_id: str, recorded: int, queued: int) -> None:
        """The files of a job are `recorded` here and `queued` to workers: the job is done
        when every one is logged, which the last worker notices (`finish_if_complete`)."""
        with self._lock:
            self._db.execute("UPDATE jobs SET total = ? WHERE id = ?", (recorded + queued, job_id))
        self.finish_if_complete(job_id)

    def finish_if_complete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = 'finished', finished_at = ? "
                "WHERE id = ? AND status = 'running' AND done >= total",
                (time.time(), job_id),
            )

    def has_file(self, job_id: str, document_id: str) -> bool:
        """This document's outcome is in the job already (a redelivered task must not log it
        twice)."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM job_files WHERE job_id = ? AND document_id = ? LIMIT 1",
                (job_id, document_id),
            ).fetchone()
        return row is not None

    def _summary(self, row: Row) -> dict[str, Any]:
        job = dict(row)
        counts = self._db.execute(
            "SELECT status, count(*) FROM job_files WHERE job_id = ? GROUP BY status", (row["id"],)
        ).fetchall()
        job["counts"] = {status: n for status, n in counts}
        end = job["finished_at"] or time.time()
        elapsed = max(end - job["started_at"], 1e-9)
        job["files_per_s"] = round(job["done"] / elapsed, 2)
        job["chunks_per_s"] = round(job["chunks"] / elapsed, 2)
        remaining = job["total"] - job["done"]
        job["eta_s"] = (
            round(remaining / (job["done"] / elapsed), 1)
            if job["status"] == "running" and job["done"]
            else None
        )
        return job

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs ORDER BY started_at DESC LIMIT ?", (limit,)
            ).fetchall()
            return [self._summary(r) for r in rows]

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            job = self._summary(row)
            files = self._db.execute(
                "SELECT path, status, document_id, chunks, error FROM job_files "
                "WHERE job_id = ? ORDER BY at",
                (job_id,),
            ).fetchall()
            parsing = self._db.execute(
                "SELECT path, document_id, pages_done, pages_total FROM parse_progress "
                "WHERE job_id = ? ORDER BY at",
                (job_id,),
            ).fetchall()
        job["files"] = [dict(f) for f in files]
        # Files being read now, with their pages (a long scan shows it is moving).
        job["reading"] = [dict(p) for p in parsing]
        return job
