"""Conversations, their messages and answer feedback: a small store (SQLite in the data dir, or
PostgreSQL).

An assistant message keeps the whole answer object (sources, supports, abstention), so a past
conversation renders exactly as it was answered. Feedback copies the question and the answer
it rates: it was sent to the administrators and stays listed when its conversation is deleted.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from typing import Any

from retriever.database import SQLStore, StoreTarget

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    query TEXT,
    answer TEXT,
    stopped INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_conversation ON messages(conversation_id, created_at);
CREATE TABLE IF NOT EXISTS feedback (
    message_id TEXT PRIMARY KEY,
    conversation_id TEXT,
    rating TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    question TEXT NOT NULL DEFAULT '',
    answer TEXT NOT NULL DEFAULT '',
    abstained INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_created ON feedback(created_at);
"""
TITLE_CHARS = 80
RATINGS = ("up", "down")


def title_for(question: str) -> str:
    """A conversation's first title: its first question, on one line, cut at a word."""
    text = " ".join(question.split())
    if len(text) <= TITLE_CHARS:
        return text
    return text[:TITLE_CHARS].rsplit(" ", 1)[0] + "…"


class ConversationStore(SQLStore):
    def __init__(self, target: StoreTarget) -> None:
        super().__init__(target, _SCHEMA, foreign_keys=True)
        if self.dialect == "sqlite":
            self._add_owner_column()

    def _add_owner_column(self) -> None:
        """SQLite files from before users existed have no owner column: add it (owner '', the
        anonymous caller of auth mode none). PostgreSQL stores were born with it."""
        with self._lock:
            try:
                self._db.execute("SELECT owner FROM conversations LIMIT 0")
            except sqlite3.OperationalError:
                self._db.execute(
                    "ALTER TABLE conversations ADD COLUMN owner TEXT NOT NULL DEFAULT ''"
                )

    # -- conversations ------------------------------------------------------------------------

    def create(self, title: str = "", owner: str = "") -> dict[str, Any]:
        now = time.time()
        conversation = {
            "id": uuid.uuid4().hex[:16],
            "title": title.strip()[:TITLE_CHARS] or "New chat",
            "created_at": now,
            "updated_at": now,
            "owner": owner,
        }
        with self._tx() as db:
            db.execute(
                "INSERT INTO conversations(id, title, created_at, updated_at, owner) "
                "VALUES (?, ?, ?, ?, ?)",
                tuple(conversation.values()),
            )
        return conversation

    def recent(self, limit: int = 100, owner: str | None = None) -> list[dict[str, Any]]:
        """The most recent conversations (of one owner, if given)."""
        where, params = ("WHERE c.owner = ? ", (owner,)) if owner is not None else ("", ())
        with self._lock:
            rows = self._db.execute(
                "SELECT c.*, (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) "
                f"AS messages FROM conversations c {where}ORDER BY updated_at DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [dict(r) for r in rows]

    def get(self, conversation_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
        return dict(row) if row else None

    def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT m.*, f.rating, f.comment FROM messages m "
                "LEFT JOIN feedback f ON f.message_id = m.id "
                "WHERE m.conversation_id = ? ORDER BY m.created_at, m.id",
                (conversation_id,),
            ).fetchall()
        out = []
        for row in rows:
            message = dict(row)
            message["answer"] = json.loads(row["answer"]) if row["answer"] else None
            message["stopped"] = bool(row["stopped"])
            message["feedback"] = (
                {"rating": row["rating"], "comment": row["comment"]} if row["rating"] else None
            )
            del message["rating"], message["comment"]
            out.append(message)
        return out

    def rename(self, conversation_id: str, title: str) -> dict[str, Any] | None:
        with self._tx() as db:
            db.execute(
                "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ?",
                (title.strip()[:TITLE_CHARS], time.time(), conversation_id),
            )
        return self.get(conversation_id)

    def delete(self, conversation_id: str) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE conversation_id = ?", (conversation_id,))
            deleted = db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            return deleted.rowcount > 0

    def prune(self, owner: str, keep: int) -> list[str]:
        """Delete `owner`'s conversations beyond the `keep` most recently used; their ids."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM conversations WHERE owner = ? "
                "ORDER BY updated_at DESC, created_at DESC LIMIT -1 OFFSET ?"
                if self.dialect == "sqlite"
                else "SELECT id FROM conversations WHERE owner = ? "
                "ORDER BY updated_at DESC, created_at DESC OFFSET ?",
                (owner, keep),
            ).fetchall()
        ids = [str(r[0]) for r in rows]
        for conversation_id in ids:
            self.delete(conversation_id)
        return ids

    # -- messages -----------------------------------------------------------------------------

    def add_message(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        query: str | None = None,
        answer: dict[str, Any] | None = None,
        stopped: bool = False,
    ) -> str:
        """Append a message; the conversation moves to the top, and a conversation still
        called "New chat" takes its first question as title."""
        message_id = uuid.uuid4().hex[:16]
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO messages(id, conversation_id, role, content, query, answer, stopped, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message_id,
                    conversation_id,
                    role,
                    content,
                    query,
                    json.dumps(answer, ensure_ascii=False) if answer is not None else None,
                    int(stopped),
                    now,
                ),
            )
            db.execute(
                "UPDATE conversations SET updated_at = ?, title = CASE WHEN title = 'New chat' "
                "AND ? = 'user' THEN ? ELSE title END WHERE id = ?",
                (now, role, title_for(content), conversation_id),
            )
        return message_id

    def prune_messages(self, conversation_id: str, keep: int) -> int:
        """Delete the conversation's messages beyond its `keep` newest (the order `messages`
        shows); how many went. Their feedback stays, as when a conversation is deleted."""
        with self._tx() as db:
            deleted = db.execute(
                "DELETE FROM messages WHERE conversation_id = ? AND id NOT IN (SELECT id FROM "
                "messages WHERE conversation_id = ? ORDER BY created_at DESC, id DESC LIMIT ?)",
                (conversation_id, conversation_id, keep),
            )
            return int(deleted.rowcount)

    def message(self, message_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        return dict(row) if row else None

    # -- feedback -----------------------------------------------------------------------------

    def set_feedback(self, message_id: str, rating: str, comment: str = "") -> dict[str, Any]:
        """Rate an assistant message (a second rating replaces the first)."""
        message = self.message(message_id)
        if message is None or message["role"] != "assistant":
            raise KeyError(message_id)
        with self._lock:
            # The question is the user message just before the answer.
            question_row = self._db.execute(
                "SELECT content FROM messages WHERE conversation_id = ? AND role = 'user' "
                "AND created_at <= ? ORDER BY created_at DESC LIMIT 1",
                (message["conversation_id"], message["created_at"]),
            ).fetchone()
        answer = json.loads(message["answer"]) if message["answer"] else {}
        entry = {
            "message_id": message_id,
            "conversation_id": message["conversation_id"],
            "rating": rating,
            "comment": comment.strip(),
            "question": question_row[0] if question_row else "",
            "answer": message["content"],
            "abstained": bool(answer.get("abstained")),
            "created_at": time.time(),
        }
        with self._tx() as db:
            db.execute(
                "INSERT INTO feedback(message_id, conversation_id, rating, comment, question, "
                "answer, abstained, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (message_id) DO UPDATE SET rating = excluded.rating, "
                "comment = excluded.comment, question = excluded.question, "
                "answer = excluded.answer, abstained = excluded.abstained, "
                "created_at = excluded.created_at",
                tuple({**entry, "abstained": int(entry["abstained"])}.values()),
            )
        return entry

    def feedback(self, limit: int = 100, rating: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM feedback"
        params: tuple[object, ...] = ()
        if rating:
            sql += " WHERE rating = ?"
            params = (rating,)
        with self._lock:
            rows = self._db.execute(
                sql + " ORDER BY created_at DESC LIMIT ?", (*params, limit)
            ).fetchall()
        return [{**dict(r), "abstained": bool(r["abstained"])} for r in rows]

    def feedback_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT rating, count(*) FROM feedback GROUP BY rating")
            found = {r[0]: int(r[1]) for r in rows.fetchall()}
        return {r: found.get(r, 0) for r in RATINGS}
