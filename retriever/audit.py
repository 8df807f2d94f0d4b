"""Append-only audit log (SQLite in the data directory, or PostgreSQL): who did what, when, with
which data.

Recorded, told apart by `action`: `ask` (who asked, through which route, which documents the
answer was given), `escalation` (target, model, the documents whose text was sent), admin
actions (`user_*`, `group_*`, `key_*`, `document_upload|delete|reindex`), `login`,
`login_failed` and `denied` (a request refused for its scope). `enclave audit tail` shows it.
Rows older than `retention_days` are dropped when the log is opened.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from retriever.database import SQLStore, StoreTarget

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
"""


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.at)),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "detail": self.detail,
        }


class AuditLog(SQLStore):
    def __init__(self, target: StoreTarget, retention_days: int = 365) -> None:
        super().__init__(target, _SCHEMA)
        if retention_days > 0:
            self._db.execute(
                "DELETE FROM audit WHERE at < ?", (time.time() - retention_days * 86400,)
            )

    def record(self, actor: str, action: str, target: str = "", **detail: Any) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                (time.time(), actor, action, target, json.dumps(detail, sort_keys=True)),
            )

    def tail(
        self, limit: int = 20, action: str | None = None, actor: str | None = None
    ) -> list[AuditEntry]:
        """The newest `limit` entries (of one action, of actors starting with `actor`, if
        given), oldest first."""
        query = "SELECT id, at, actor, action, target, detail FROM audit"
        where: list[str] = []
        args: list[Any] = []
        if action:
            where.append("action = ?")
            args.append(action)
        if actor:
            where.append("substr(actor, 1, ?) = ?")
            args.extend([len(actor), actor])
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in reversed(rows)]
