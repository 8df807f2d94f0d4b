"""Keyword index: SQLite FTS5 with BM25 ranking, kept in step with the vector store."""

from __future__ import annotations

import math
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from retriever.types import Chunk

_WORD = re.compile(r"\w+", re.UNICODE)
# Words too common to help BM25; dropping them keeps OR queries short and fast.
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "may",
        "me",
        "might",
        "must",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "shall",
        "should",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)


def match_expression(text: str) -> str:
    """An FTS5 MATCH expression: the distinct non-stopword terms, quoted, OR-ed."""
    terms: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS or word in terms:
            continue
        terms.append(word)
    return " OR ".join(f'"{t}"' for t in terms[:64])


class KeywordIndex:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Document frequencies for `term_weights`, dropped whenever the index changes.
        self._df: dict[str, int] = {}
        self._total: int | None = None
        self._version: int | None = None  # PRAGMA data_version when the counts were taken
        # Celery workers write from other processes: wait for the lock rather than fail.
        self._db = sqlite3.connect(
            str(path), timeout=30, check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5("
            "body, chunk_id UNINDEXED, document_id UNINDEXED, collection UNINDEXED, "
            "tokenize='porter unicode61 remove_diacritics 2')"
        )

    def term_weights(self, words: Iterable[str]) -> dict[str, float]:
        """Inverse document frequency of each word over the indexed chunks (stemmed as the
        index stems), ln(1 + N / (1 + df)): a word no chunk holds weighs the most."""
        with self._lock:
            # Another process (a Celery worker) committed since: the counts are stale.
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._version = version
                self._changed()
            if self._total is None:
                self._total = int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])
            weights = {}
            for word in words:
                if word not in self._df:
                    row = self._db.execute(
                        "SELECT count(*) FROM chunks WHERE chunks MATCH ?", (f'"{word}"',)
                    ).fetchone()
                    self._df[word] = int(row[0])
                weights[word] = math.log(1 + self._total / (1 + self._df[word]))
        return weights

    def _changed(self) -> None:
        self._df.clear()
        self._total = None

    def add(self, chunks: Iterable[Chunk]) -> None:
        rows = [(c.embedding_text(), c.id, c.document_id, c.collection) for c in chunks]
        with self._lock:
            self._changed()
            self._db.execute("BEGIN")
            try:
                # Replace semantics: a re-added chunk id never appears twice.
                self._db.executemany(
                    "DELETE FROM chunks WHERE chunk_id = ?", [(r[1],) for r in rows]
                )
                self._db.executemany(
                    "INSERT INTO chunks(body, chunk_id, document_id, collection) "
                    "VALUES (?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def clear(self) -> None:
        """Drop every chunk (`enclave reindex` rebuilds from the registry and the files)."""
        with self._lock:
            self._changed()
            self._db.execute("DELETE FROM chunks")

    def delete_document(self, document_id: str) -> None:
        with self._lock:
            self._changed()
            self._db.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))

    def set_collection(self, document_id: str, collection: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE chunks SET collection = ? WHERE document_id = ?", (collection, document_id)
            )

    def ids_for_document(self, document_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT chunk_id FROM chunks WHERE document_id = ?", (document_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def all_document_ids(self) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT document_id FROM chunks").fetchall()
        return {r[0] for r in rows}

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def search(
        self, query: str, k: int, collections: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """(chunk id, BM25 score) best first; higher is better. The filter is in the query."""
        expression = match_expression(query)
        if not expression or (collections is not None and not collections):
            return []
        sql = "SELECT chunk_id, -bm25(chunks) AS score FROM chunks WHERE chunks MATCH ?"
        params: list[object] = [expression]
        if collections is not None:
            sql += f" AND collection IN ({','.join('?' * len(collections))})"
            params.extend(collections)
        sql += " ORDER BY bm25(chunks) LIMIT ?"
        params.append(k)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
