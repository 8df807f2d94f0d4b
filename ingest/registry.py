"""The registry: the record of every document (SQLite or PostgreSQL), the source of truth for
what is indexed."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from retriever.database import SQLStore, StoreTarget

Status = Literal["pending", "indexed", "failed", "deleted"]
STATUSES: tuple[Status, ...] = ("pending", "indexed", "failed", "deleted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    collection TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    mtime REAL NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    error TEXT,
    chunks INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_sha ON documents(sha256);
CREATE INDEX IF NOT EXISTS documents_status ON documents(status);
"""


@dataclass
class DocumentRecord:
    id: str
    path: str
    collection: str
    title: str
    sha256: str
    size: int
    mtime: float
    status: Status
    error: str | None
    chunks: int
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "path": self.path,
            "collection": self.collection,
            "title": self.title,
            "status": self.status,
            "chunks": self.chunks,
            "error": self.error,
            "size": self.size,
            "sha256": self.sha256,
            "updated_at": self.updated_at,
        }


def document_id_for(path: str) -> str:
    """Ids derive from the first path a document was seen at, and survive renames."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Registry(SQLStore):
    def __init__(self, target: StoreTarget) -> None:
        super().__init__(target, _SCHEMA)

    def _one(self, sql: str, *params: object) -> DocumentRecord | None:
        with self._lock:
            row = self._db.execute(sql, params).fetchone()
        return DocumentRecord(**dict(row)) if row else None

    def get(self, document_id: str) -> DocumentRecord | None:
        return self._one("SELECT * FROM documents WHERE id = ?", document_id)

    def get_by_path(self, path: str) -> DocumentRecord | None:
        return self._one("SELECT * FROM documents WHERE path = ?", path)

    def find_by_sha(self, sha256: str) -> list[DocumentRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM documents WHERE sha256 = ? ORDER BY created_at", (sha256,)
            ).fetchall()
        return [DocumentRecord(**dict(r)) for r in rows]

    def list(self, status: Status | None = None) -> list[DocumentRecord]:
        sql = "SELECT * FROM documents"
        params: tuple[object, ...] = ()
        if status:
            sql += " WHERE status = ?"
            params = (status,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY path", params).fetchall()
        return [DocumentRecord(**dict(r)) for r in rows]

    def collections(self) -> set[str]:
        """Every collection a registered document names (one query, not every row)."""
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT collection FROM documents").fetchall()
        return {str(r[0]) for r in rows}

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT status, count(*) FROM documents GROUP BY status"
            ).fetchall()
        found = {r[0]: int(r[1]) for r in rows}
        return {s: found.get(s, 0) for s in STATUSES}

    def register(
        self, path: str, collection: str, sha256: str, size: int, mtime: float
    ) -> DocumentRecord:
        """Create the document (or reset an existing row at that path, keeping its id) as
        pending; one statement, so processes registering the same path at once cannot collide."""
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO documents(id, path, collection, sha256, size, mtime, status, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?) "
                "ON CONFLICT (path) DO UPDATE SET collection = excluded.collection, "
                "sha256 = excluded.sha256, size = excluded.size, mtime = excluded.mtime, "
                "status = 'pending', error = NULL, updated_at = excluded.updated_at",
                (document_id_for(path), path, collection, sha256, size, mtime, now, now),
            )
        record = self.get_by_path(path)
        assert record is not None
        return record

    def _update(self, document_id: str, **fields: object) -> None:
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE documents SET {assignments} WHERE id = ?",
                (*fields.values(), document_id),
            )

    def mark_indexed(self, document_id: str, chunks: int, title: str, sha256: str) -> bool:
        """Record the document indexed, only if it is still the version that was indexed
        (same sha256) and was not deleted meanwhile (a delete or a change can come from
        another thread or process while its chunks are embedded). False if not recorded."""
        with self._tx() as db:
            cursor = db.execute(
                "UPDATE documents SET status = 'indexed', error = NULL, chunks = ?, title = ?, "
                "updated_at = ? WHERE id = ? AND sha256 = ? AND status != 'deleted'",
                (chunks, title, time.time(), document_id, sha256),
            )
            return bool(cursor.rowcount)

    def mark_failed(self, document_id: str, error: str) -> None:
        self._update(document_id, status="failed", error=error, chunks=0)

    def mark_deleted(self, document_id: str) -> None:
        self._update(document_id, status="deleted", chunks=0, error=None)

    def move(self, document_id: str, path: str, collection: str, mtime: float) -> None:
        self._update(document_id, path=path, collection=collection, mtime=mtime)
