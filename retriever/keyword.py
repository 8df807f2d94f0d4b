"""Keyword index, kept in step with the vector store: SQLite FTS5 ranked by BM25 (the default),
or PostgreSQL full-text search (a tsvector column under a GIN index).

Both take the same query: the question's distinct non-stopword words, OR-ed, stemmed by the
engine (FTS5's Porter stemmer, PostgreSQL's English Snowball stemmer); FTS5 ranks by BM25,
PostgreSQL by `ts_rank` weighted by each term's BM25 IDF (see `_POSTGRES_SEARCH`). The
collection filter is part of the query on both.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence

from retriever.database import SQLStore, StoreTarget
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
        "being",
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
        "he",
        "her",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "may",
        "me",
        "might",
        "must",
        "my",
        "myself",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "ourselves",
        "shall",
        "she",
        "should",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "themselves",
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
        "yourself",
        "yourselves",
    ]
)


def query_terms(text: str) -> list[str]:
    """The distinct non-stopword words of a query, lower-cased, at most 64."""
    terms: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS or word in terms:
            continue
        terms.append(word)
    return terms[:64]


_FTS5_TOKENIZER = "porter unicode61 remove_diacritics 2"


class _Fts5Stems:
    """The tokens FTS5's tokenizer makes of words, from an in-memory FTS5 table: exactly the
    stems the index holds, which no Python stemmer guarantees."""

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(f"CREATE VIRTUAL TABLE words USING fts5(w, tokenize='{_FTS5_TOKENIZER}')")
        self._db.execute("CREATE VIRTUAL TABLE tokens USING fts5vocab(words, 'instance')")
        self._lock = threading.Lock()

    def distinct(self, words: list[str]) -> list[str]:
        """`words` less each one whose tokens an earlier word already has."""
        with self._lock:
            self._db.executemany(
                "INSERT INTO words(rowid, w) VALUES (?, ?)", list(enumerate(words))
            )
            rows = self._db.execute("SELECT doc, term FROM tokens ORDER BY doc, offset").fetchall()
            self._db.execute("DELETE FROM words")
        tokens: dict[int, tuple[str, ...]] = {}
        for doc, term in rows:
            tokens[doc] = (*tokens.get(doc, ()), term)
        seen: set[tuple[str, ...]] = set()
        kept = []
        for i, word in enumerate(words):
            key = tokens.get(i, (word,))
            if key not in seen:
                seen.add(key)
                kept.append(word)
        return kept


_STEMS = _Fts5Stems()


def match_expression(text: str) -> str:
    """An FTS5 MATCH expression: the query's terms, one per stem, quoted, OR-ed. ("cell" and
    "cells" are one term of the index: OR-ing both reads its postings twice and counts it
    twice in BM25. PostgreSQL's tsvector takes each lexeme once too.)"""
    return " OR ".join(f'"{t}"' for t in _STEMS.distinct(query_terms(text)))


def _lexeme(word: str) -> str:
    """One word quoted for `to_tsquery` (which stems it and drops it if a stopword)."""
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


_FTS5_SCHEMA = f"""
CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5(
    body, chunk_id UNINDEXED, document_id UNINDEXED, collection UNINDEXED,
    tokenize='{_FTS5_TOKENIZER}');
CREATE TABLE IF NOT EXISTS chunk_keys (
    rowid INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunk_keys_document ON chunk_keys (document_id);
"""
# FTS5 cannot index its UNINDEXED columns: a `WHERE chunk_id = ?` reads every row. So the
# FTS row's rowid is kept in `chunk_keys` under its chunk and document ids, and updates go
# by rowid. (Adding 2,048 chunks to a 47k-chunk index took 20 s of table scans without it.)
_FTS5_ROWIDS_OF_CHUNK = "SELECT rowid FROM chunk_keys WHERE chunk_id = ?"
_FTS5_ROWIDS_OF_DOCUMENT = "SELECT rowid FROM chunk_keys WHERE document_id = ?"
# Indexes written before `chunk_keys` existed get their keys once, at open.
_FTS5_FILL_KEYS = """
INSERT OR IGNORE INTO chunk_keys (rowid, chunk_id, document_id)
    SELECT rowid, chunk_id, document_id FROM chunks;
DELETE FROM chunks WHERE rowid NOT IN (SELECT rowid FROM chunk_keys);
"""
# The same columns; the body's lexemes are computed by PostgreSQL into a GIN-indexed column.
_POSTGRES_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY,
    document_id TEXT NOT NULL,
    collection TEXT NOT NULL,
    body TEXT NOT NULL,
    lexemes tsvector GENERATED ALWAYS AS (to_tsvector('english', body)) STORED
);
CREATE INDEX IF NOT EXISTS chunks_lexemes ON chunks USING gin (lexemes);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks (document_id);
"""
# The searches; `{filter}` is where the collection filter goes.
_FTS5_SEARCH = (
    "SELECT chunk_id, -bm25(chunks) AS score FROM chunks WHERE chunks MATCH ?{filter} "
    "ORDER BY bm25(chunks) LIMIT ?"
)
# PostgreSQL has no BM25, and its rankers ignore how rare a term is (`ts_rank_cd` scores 0.41
# nDCG@10 on SciFact where FTS5's BM25 scores 0.69). So each query lexeme's `ts_rank` (its
# frequency in the chunk with diminishing returns, over 1 + log of the chunk's length) is
# weighted by its BM25 IDF (given: lexemes and weights are the two arrays), and summed over the
# lexemes a chunk holds. The OR query (third parameter) picks the candidates through the GIN
# index.
_POSTGRES_SEARCH = """
WITH t AS (
    SELECT lexeme, idf, quote_literal(lexeme)::tsquery AS one
    FROM unnest(?::text[], ?::float8[]) AS t(lexeme, idf)
)
SELECT chunks.chunk_id, sum(t.idf * ts_rank(chunks.lexemes, t.one, 1)) AS score
FROM chunks JOIN t ON chunks.lexemes @@ t.one
WHERE chunks.lexemes @@ ?::tsquery{filter}
GROUP BY chunks.chunk_id ORDER BY score DESC LIMIT ?
"""
# The query's words as PostgreSQL stems them (its stopwords dropped), and how many chunks hold
# each of a list of lexemes (GIN index).
_POSTGRES_LEXEMES = "SELECT lexeme FROM unnest(to_tsvector('english', ?))"
_POSTGRES_LEXEME_FREQUENCIES = (
    "SELECT u.lexeme, "
    "(SELECT count(*) FROM chunks WHERE lexemes @@ quote_literal(u.lexeme)::tsquery) "
    "FROM unnest(?::text[]) AS u(lexeme)"
)
_FREQUENCY = {
    "sqlite": "SELECT count(*) FROM chunks WHERE chunks MATCH ?",
    # A stopword (not indexed by PostgreSQL) counts as in every chunk, as FTS5 would find it.
    "postgresql": "SELECT CASE WHEN numnode(q) = 0 THEN (SELECT count(*) FROM chunks) "
    "ELSE (SELECT count(*) FROM chunks WHERE lexemes @@ q) END "
    "FROM to_tsquery('english', ?) AS q",
}
# Document frequencies are cached. Other processes may write too: SQLite's data_version says
# when one did; on PostgreSQL the cache expires instead.
_FREQUENCIES_TTL_S = 60.0


class KeywordIndex(SQLStore):
    def __init__(self, target: StoreTarget) -> None:
        super().__init__(target)
        if self.dialect == "sqlite":
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.create_schema(_FTS5_SCHEMA if self.dialect == "sqlite" else _POSTGRES_SCHEMA)
        # Where a chunk's or a document's rows are, and which table lists the ids.
        if self.dialect == "sqlite":
            self._fill_keys()
            self._of_chunk = f"rowid IN ({_FTS5_ROWIDS_OF_CHUNK})"
            self._of_document = f"rowid IN ({_FTS5_ROWIDS_OF_DOCUMENT})"
            self._ids_table = "chunk_keys"
        else:
            self._of_chunk, self._of_document = "chunk_id = ?", "document_id = ?"
            self._ids_table = "chunks"
        # Document frequencies for `term_weights`, dropped whenever the index changes.
        self._df: dict[str, int] = {}
        self._lexeme_df: dict[str, int] = {}  # PostgreSQL lexemes, for the search's IDF
        self._total: int | None = None
        self._counted_at = 0.0
        self._version: int | None = None  # SQLite's data_version when the counts were taken

    def _fill_keys(self) -> None:
        with self._tx() as db:
            keys = db.execute("SELECT count(*) FROM chunk_keys").fetchone()[0]
            if keys == 0 and db.execute("SELECT count(*) FROM chunks").fetchone()[0]:
                for statement in _FTS5_FILL_KEYS.strip().split(";\n"):
                    db.execute(statement)

    def _quote(self, word: str) -> str:
        return f'"{word}"' if self.dialect == "sqlite" else _lexeme(word)

    def term_weights(self, words: Iterable[str]) -> dict[str, float]:
        """Inverse document frequency of each word over the indexed chunks (stemmed as the
        index stems), ln(1 + N / (1 + df)): a word no chunk holds weighs the most."""
        with self._lock:
            total = self._total_chunks()
            weights = {}
            for word in words:
                if word not in self._df:
                    row = self._db.execute(
                        _FREQUENCY[self.dialect], (self._quote(word),)
                    ).fetchone()
                    self._df[word] = int(row[0])
                weights[word] = math.log(1 + total / (1 + self._df[word]))
        return weights

    def _changed(self) -> None:
        self._df.clear()
        self._lexeme_df.clear()
        self._total = None

    def _total_chunks(self) -> int:
        if self.dialect == "sqlite":
            # Another process (a Celery worker) committed since: the counts are stale.
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._version = version
                self._changed()
        elif time.monotonic() - self._counted_at > _FREQUENCIES_TTL_S:
            self._changed()
        if self._total is None:
            self._total = int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])
            self._counted_at = time.monotonic()
        return self._total

    def _postgres_search(self, query: str) -> tuple[str, list[object]] | None:
        """The PostgreSQL search's parameters (lexemes, their IDF, the OR query), or None when
        the query has no word PostgreSQL indexes."""
        rows = self._db.execute(_POSTGRES_LEXEMES, (" ".join(query_terms(query)),)).fetchall()
        lexemes = [str(r[0]) for r in rows]
        if not lexemes:
            return None
        total = self._total_chunks()
        missing = [lexeme for lexeme in lexemes if lexeme not in self._lexeme_df]
        if missing:
            counted = self._db.execute(_POSTGRES_LEXEME_FREQUENCIES, (missing,)).fetchall()
            self._lexeme_df.update({str(r[0]): int(r[1]) for r in counted})
        idf = [
            math.log(1 + (total - self._lexeme_df[x] + 0.5) / (self._lexeme_df[x] + 0.5))
            for x in lexemes
        ]
        return " | ".join(_lexeme(x) for x in lexemes), [lexemes, idf]

    def add(self, chunks: Iterable[Chunk]) -> None:
        rows: list[tuple[str, ...]] = [
            (c.embedding_text(), c.id, c.document_id, c.collection) for c in chunks
        ]
        ids = [(r[1],) for r in rows]
        insert = "INSERT INTO chunks(body, chunk_id, document_id, collection) VALUES (?, ?, ?, ?)"
        with self._tx() as db:
            self._changed()
            # Replace semantics: a re-added chunk id never appears twice.
            db.executemany(f"DELETE FROM chunks WHERE {self._of_chunk}", ids)
            if self.dialect == "sqlite":
                db.executemany("DELETE FROM chunk_keys WHERE chunk_id = ?", ids)
                db.executemany(
                    "INSERT INTO chunk_keys(chunk_id, document_id) VALUES (?, ?)",
                    [(r[1], r[2]) for r in rows],
                )
                insert = (
                    "INSERT INTO chunks(rowid, body, chunk_id, document_id, collection) "
                    f"VALUES (({_FTS5_ROWIDS_OF_CHUNK}), ?, ?, ?, ?)"
                )
                rows = [(r[1], *r) for r in rows]
            db.executemany(insert, rows)

    def clear(self) -> None:
        """Drop every chunk (`enclave reindex` rebuilds from the registry and the files)."""
        with self._tx() as db:
            self._changed()
            db.execute("DELETE FROM chunks")
            if self.dialect == "sqlite":
                db.execute("DELETE FROM chunk_keys")

    def delete_document(self, document_id: str) -> None:
        with self._tx() as db:
            self._changed()
            db.execute(f"DELETE FROM chunks WHERE {self._of_document}", (document_id,))
            if self.dialect == "sqlite":
                db.execute("DELETE FROM chunk_keys WHERE document_id = ?", (document_id,))

    def set_collection(self, document_id: str, collection: str) -> None:
        with self._lock:
            self._db.execute(
                f"UPDATE chunks SET collection = ? WHERE {self._of_document}",
                (collection, document_id),
            )

    def ids_for_document(self, document_id: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT chunk_id FROM {self._ids_table} WHERE document_id = ?", (document_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def all_document_ids(self) -> set[str]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT DISTINCT document_id FROM {self._ids_table}"
            ).fetchall()
        return {r[0] for r in rows}

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def search(
        self, query: str, k: int, collections: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """(chunk id, score) best first; higher is better. The filter is in the query."""
        if not query_terms(query) or (collections is not None and not collections):
            return []
        where = ""
        if collections is not None:
            where = f" AND collection IN ({','.join('?' * len(collections))})"
        with self._lock:
            params: list[object]
            if self.dialect == "sqlite":
                sql, params = _FTS5_SEARCH, [match_expression(query)]
            else:
                found = self._postgres_search(query)
                if found is None:
                    return []
                tsquery, params = found
                sql = _POSTGRES_SEARCH
                params.append(tsquery)
            params.extend(collections or ())
            params.append(k)
            rows = self._db.execute(sql.format(filter=where), params).fetchall()
        return [(r[0], float(r[1])) for r in rows]
