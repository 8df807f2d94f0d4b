"""Ingestion jobs: one row per run (a CLI ingest, an inbox scan with work, an upload) and one
per file, so progress and failures can be followed while the work goes on."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from retriever.database import Row, SQLStore, StoreTarget


@dataclass
class FileOutcome:
    """What became of one file in a job (the pipeline makes it, a job row records it)."""

    path: str
    # indexed | unchanged | renamed | failed | skipped | queued (to a worker) | deleted
    status: str
    document_id: str | None = None
    chunks: int = 0
    error: str | None = None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    chunks INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    finished_at REAL,
    owner TEXT,
    heartbeat_at REAL
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
# A running job whose owner cannot be checked (another host, or handed to the Celery workers)
# is taken as interrupted after this long without progress.
JOB_LEASE_S = 6 * 3600.0
QUEUE_OWNER = "queue"  # a job handed to the workers: no one process owns it
_ADDED_COLUMNS = (("owner", "TEXT"), ("heartbeat_at", "REAL"))  # jobs tables made before them


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc), so a process id reused by
    another process is not taken for the job's owner; "" where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_owner(pid: int | None = None) -> str:
    """host:pid:start of a process (this one by default): who runs a job."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_process_start(pid)}"


def _owner_alive(owner: str, host: str) -> bool | None:
    """Whether the process named by `owner` still runs; None when it cannot be told here."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
        return None
    pid, start = int(parts[1]), parts[2]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    return not start or _process_start(pid) == start


STALE_PROGRESS_S = 86400.0  # page progress of a parse that never finished (a crash) is pruned


class JobLog(SQLStore):
    """Kept beside the registry (same SQLite file, or the same PostgreSQL database)."""

    def __init__(self, target: StoreTarget) -> None:
        super().__init__(target, _SCHEMA)
        self.owner = process_owner()
        self._add_columns()

    def _add_columns(self) -> None:
        with self._tx() as db:
            if self.dialect == "sqlite":
                have = {row[1] for row in db.execute("PRAGMA table_info(jobs)").fetchall()}
                for name, kind in _ADDED_COLUMNS:
                    if name not in have:
                        db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
            else:
                for name, kind in _ADDED_COLUMNS:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN IF NOT EXISTS {name} {kind}")

    def start(self, kind: str, total: int) -> str:
        job_id = uuid.uuid4().hex[:12]
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs(id, kind, status, total, started_at, owner, heartbeat_at) "
                "VALUES (?, ?, 'running', ?, ?, ?, ?)",
                (job_id, kind, total, now, self.owner, now),
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
                "UPDATE jobs SET done = done + 1, chunks = chunks + ?, heartbeat_at = ?, "
                "total = CASE WHEN total > done + 1 THEN total ELSE done + 1 END WHERE id = ?",
                (chunks, time.time(), job_id),
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

    def finish(self, job_id: str, status: str = "finished", only_running: bool = False) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, finished_at = ? WHERE id = ?"
                + (" AND status = 'running'" if only_running else ""),
                (status, time.time(), job_id),
            )

    def hand_over(self, job_id: str, recorded: int, queued: int) -> None:
        """The files of a job are `recorded` here and `queued` to workers: the job is done
        when every one is logged, which the last worker notices (`finish_if_complete`)."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET total = ?, owner = ? WHERE id = ?",
                (recorded + queued, QUEUE_OWNER, job_id),
            )
        self.finish_if_complete(job_id)

    def close_interrupted(self) -> list[str]:
        """Close as `interrupted` the running jobs whose process is gone (a kill, a crash,
        a power cut): on this host, by process id and start time; a job of another host or
        one handed to the workers, after JOB_LEASE_S without progress. Called when a server
        starts and a CLI run begins; returns the ids closed."""
        host, now = socket.gethostname(), time.time()
        with self._lock:
            rows = self._db.execute(
                "SELECT id, owner, started_at, heartbeat_at FROM jobs WHERE status = 'running'"
            ).fetchall()
        gone = []
        for row in rows:
            alive = _owner_alive(row["owner"] or "", host)
            if alive is None:  # cannot be checked from here: the lease decides
                alive = now - (row["heartbeat_at"] or row["started_at"]) < JOB_LEASE_S
            if not alive:
                gone.append(str(row["id"]))
        for job_id in gone:
            self.finish(job_id, "interrupted", only_running=True)
        return gone

    def interrupt_own(self) -> None:
        """This process stops: its running jobs end as `interrupted` (what they did is kept;
        the rest is picked up by the next scan or run)."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = 'interrupted', finished_at = ? "
                "WHERE status = 'running' AND owner = ?",
                (time.time(), self.owner),
            )

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
