"""Keyword index, kept in step with the vector store: SQLite FTS5 ranked by BM25 (the default),
or PostgreSQL full-text search (a tsvector column under a GIN index).

Both take the same query: the question's distinct non-stopword words, OR-ed, stemmed by the
engine (FTS5's Porter stemmer, PostgreSQL's English Snowball stemmer); FTS5 ranks by BM25,
PostgreSQL by `ts_rank` weighted by each term's BM25 IDF (see `_POSTGRES_SEARCH`). Every
statistic a score or a term weight uses is counted over the collections searched only (SQLite:
a table per collection; PostgreSQL: counts with the collection filter), so what a caller may
not read never moves their scores.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from retriever.database import Connection, SQLStore, StoreTarget
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
        # What is left of a contraction or a possessive split at its apostrophe ("isn't" ->
        # "isn", "t"; "xz's" -> "s").
        "s",
        "t",
        "aren",
        "couldn",
        "didn",
        "doesn",
        "don",
        "hadn",
        "hasn",
        "haven",
        "isn",
        "ll",
        "mustn",
        "re",
        "shouldn",
        "ve",
        "wasn",
        "weren",
        "wouldn",
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


# SQLite: one FTS5 table per collection, so that BM25's statistics (rows, document frequencies,
# average length) are that collection's alone: with one table for all, a reader's scores moved
# when a collection they cannot read held the query's words. A table is named from the
# collection's id in `keyword_collections` (`_fts5_table`), never from its name (user input).
# `chunk_keys` holds each FTS row's rowid (unique over all the tables) under its chunk,
# document and collection ids.
_FTS5_SCHEMA = """
CREATE TABLE IF NOT EXISTS keyword_collections (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS chunk_keys (
    rowid INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL,
    collection_id INTEGER);
CREATE INDEX IF NOT EXISTS chunk_keys_document ON chunk_keys (document_id);
"""
# After `_fts5_migrate`: an index written before has `chunk_keys` without the column.
_FTS5_KEYS_BY_COLLECTION = (
    "CREATE INDEX IF NOT EXISTS chunk_keys_collection ON chunk_keys (collection_id)"
)
_FTS5_TABLE = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS {table} USING fts5("
    f"body, chunk_id UNINDEXED, tokenize='{_FTS5_TOKENIZER}')"
)
# FTS5 cannot index its UNINDEXED columns: a `WHERE chunk_id = ?` reads every row. So updates
# find rows by rowid through `chunk_keys`. (Adding 2,048 chunks to a 47k-chunk index took 20 s
# of table scans without it.) `{keys}` is `chunk_id = ?` or `document_id = ?`.
_FTS5_ROWIDS_OF_CHUNK = "SELECT rowid FROM chunk_keys WHERE chunk_id = ?"
_FTS5_TABLES_HOLDING = "SELECT DISTINCT collection_id FROM chunk_keys WHERE {keys}"
_FTS5_DELETE = "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM chunk_keys WHERE {keys})"
_FTS5_MOVE = (
    "INSERT INTO {target}(rowid, body, chunk_id) SELECT rowid, body, chunk_id FROM {source} "
    "WHERE rowid IN (SELECT rowid FROM chunk_keys WHERE document_id = ?)"
)
_FTS5_SEARCH = (
    "SELECT chunk_id, -bm25({table}) AS score FROM {table} WHERE {table} MATCH ? "
    "ORDER BY bm25({table}) LIMIT ?"
)
_FTS5_FREQUENCY = "SELECT count(*) FROM {table} WHERE {table} MATCH ?"
_FTS5_ROWS = (
    "SELECT c.name, count(*) FROM keyword_collections AS c "
    "JOIN chunk_keys AS k ON k.collection_id = c.id GROUP BY c.name"
)
# The layout before, one FTS5 table `chunks` with a `collection` column, is split once at open.
# (Rows of an index older still, without `chunk_keys`, get their keys here too.)
_FTS5_OLD_KEYS = (
    "INSERT OR IGNORE INTO chunk_keys (rowid, chunk_id, document_id) "
    "SELECT rowid, chunk_id, document_id FROM chunks"
)
_FTS5_OLD_ROWS = (
    "INSERT INTO {table}(rowid, body, chunk_id) SELECT c.rowid, c.body, c.chunk_id "
    "FROM chunks AS c JOIN chunk_keys AS k ON k.rowid = c.rowid AND k.chunk_id = c.chunk_id "
    "WHERE c.collection = ?"
)
_FTS5_OLD_COLLECTION = (
    "UPDATE chunk_keys SET collection_id = ? WHERE rowid IN (SELECT rowid FROM {table})"
)


def _fts5_table(collection_id: int) -> str:
    """The FTS5 table of a collection: named from its integer id only."""
    return f"chunks_in_{int(collection_id)}"


# PostgreSQL: one table; the statistics are counted with the collection filter instead. The
# body's lexemes are computed by PostgreSQL into a GIN-indexed column.
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
# PostgreSQL has no BM25, and its rankers ignore how rare a term is (`ts_rank_cd` scores 0.41
# nDCG@10 on SciFact where FTS5's BM25 scores 0.69). So each query lexeme's `ts_rank` (its
# frequency in the chunk with diminishing returns, over 1 + log of the chunk's length) is
# weighted by its BM25 IDF over the searched collections (given: lexemes and weights are the
# two arrays), and summed over the lexemes a chunk holds. The OR query (third parameter) picks
# the candidates through the GIN index; `{filter}` is where the collection filter goes.
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
# The query's words as PostgreSQL stems them (its stopwords dropped); how many chunks of each
# of a list of collections hold each of a list of lexemes (GIN index), or a word; the rows of
# each collection.
_POSTGRES_LEXEMES = "SELECT lexeme FROM unnest(to_tsvector('english', ?))"
_POSTGRES_LEXEME_FREQUENCIES = """
SELECT u.lexeme, f.collection, f.n FROM unnest(?::text[]) AS u(lexeme),
LATERAL (
    SELECT collection, count(*) AS n FROM chunks
    WHERE lexemes @@ quote_literal(u.lexeme)::tsquery AND collection = ANY(?::text[])
    GROUP BY collection
) AS f
"""
_POSTGRES_STOPWORD = "SELECT numnode(to_tsquery('english', ?)) = 0"
_POSTGRES_WORD_FREQUENCIES = (
    "SELECT collection, count(*) FROM chunks "
    "WHERE lexemes @@ to_tsquery('english', ?) AND collection = ANY(?::text[]) "
    "GROUP BY collection"
)
_POSTGRES_ROWS = "SELECT collection, count(*) FROM chunks GROUP BY collection"
# Document frequencies are cached, per collection: a caller's statistics are sums over the
# collections it reads, so no caller's counts can reach another's. Other processes may write
# too: SQLite's data_version says when one did; on PostgreSQL the cache expires instead.
_FREQUENCIES_TTL_S = 60.0
# Counts per (collection, word or lexeme).
_Counts = dict[tuple[str, str], int]
# Counts kept per cache (about 150 bytes each): every question brings its own words, so a
# server that only answers would otherwise keep one entry per word ever asked, per collection.
_MAX_COUNTS = 100_000


class KeywordIndex(SQLStore):
    def __init__(self, target: StoreTarget) -> None:
        super().__init__(target)
        if self.dialect == "sqlite":
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.create_schema(_FTS5_SCHEMA)
            self._fts5_migrate()
            self._db.execute(_FTS5_KEYS_BY_COLLECTION)
            self._ids_table = "chunk_keys"
        else:
            self._db.create_schema(_POSTGRES_SCHEMA)
            self._ids_table = "chunks"
        # Statistics for `term_weights` and PostgreSQL's IDF, dropped whenever the index changes.
        self._rows: dict[str, int] | None = None  # chunks per collection
        self._df: _Counts = {}  # words, for `term_weights`
        self._lexeme_df: _Counts = {}  # PostgreSQL lexemes, for the search's IDF
        self._counted_at = 0.0
        self._version: int | None = None  # SQLite's data_version when the counts were taken

    # -- SQLite's tables -------------------------------------------------------------------

    def _fts5_migrate(self) -> None:
        """Split an index of the one-table layout into a table per collection, once."""
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunks'").fetchone():
                return
            columns = {r[1] for r in db.execute("PRAGMA table_info(chunk_keys)")}
            if "collection_id" not in columns:
                db.execute("ALTER TABLE chunk_keys ADD COLUMN collection_id INTEGER")
            db.execute(_FTS5_OLD_KEYS)
            names = [r[0] for r in db.execute("SELECT DISTINCT collection FROM chunks")]
            for name in names:
                collection_id = self._fts5_collection(db, name)
                table = _fts5_table(collection_id)
                db.execute(_FTS5_OLD_ROWS.format(table=table), (name,))
                db.execute(_FTS5_OLD_COLLECTION.format(table=table), (collection_id,))
            db.execute("DELETE FROM chunk_keys WHERE collection_id IS NULL")  # keys of no row
            db.execute("DROP TABLE chunks")

    @staticmethod
    def _fts5_collection(db: Connection, name: str) -> int:
        """The id of a collection, its table created on first use (inside the caller's
        transaction)."""
        db.execute("INSERT OR IGNORE INTO keyword_collections (name) VALUES (?)", (name,))
        row = db.execute("SELECT id FROM keyword_collections WHERE name = ?", (name,)).fetchone()
        db.execute(_FTS5_TABLE.format(table=_fts5_table(row[0])))
        return int(row[0])

    def _fts5_tables(self, collections: Sequence[str] | None) -> dict[str, str]:
        """The table of each of `collections` that has one (all when None), by name."""
        sql, params = (
            "SELECT name, id FROM keyword_collections",
            list(dict.fromkeys(collections or ())),
        )
        if collections is not None:
            sql += f" WHERE name IN ({','.join('?' * len(params))})"
        return {r[0]: _fts5_table(r[1]) for r in self._db.execute(sql, params)}

    def _fts5_remove(self, db: Connection, keys: str, values: Sequence[str]) -> None:
        """Delete the rows whose `keys` (`chunk_id = ?`, `document_id = ?`) match, by rowid."""
        params = [(v,) for v in values]
        tables: set[int] = set()
        for param in params:
            tables.update(r[0] for r in db.execute(_FTS5_TABLES_HOLDING.format(keys=keys), param))
        for collection_id in tables:
            db.executemany(_FTS5_DELETE.format(table=_fts5_table(collection_id), keys=keys), params)
        db.executemany(f"DELETE FROM chunk_keys WHERE {keys}", params)

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """One read of several SQLite tables sees one state: a table another process drops
        (`clear`) cannot vanish between finding it and reading it."""
        if self.dialect != "sqlite":
            yield
            return
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("COMMIT")

    # -- Statistics ------------------------------------------------------------------------

    def _changed(self) -> None:
        self._rows = None
        self._df.clear()
        self._lexeme_df.clear()

    def _collection_rows(self) -> dict[str, int]:
        """Chunks per collection (cached; stale caches dropped first)."""
        if self.dialect == "sqlite":
            # Another process (a Celery worker) committed since: the counts are stale.
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._version:
                self._version = version
                self._changed()
        elif time.monotonic() - self._counted_at > _FREQUENCIES_TTL_S:
            self._changed()
        if self._rows is None:
            sql = _FTS5_ROWS if self.dialect == "sqlite" else _POSTGRES_ROWS
            self._rows = {str(r[0]): int(r[1]) for r in self._db.execute(sql)}
            self._counted_at = time.monotonic()
        return self._rows

    def _readable(self, collections: Sequence[str] | None) -> list[str]:
        """The collections the statistics are counted over: those of `collections` that hold
        chunks (all of them when None)."""
        rows = self._collection_rows()
        return (
            list(rows)
            if collections is None
            else [c for c in dict.fromkeys(collections) if c in rows]
        )

    def _frequencies(
        self,
        cache: _Counts,
        items: list[str],
        collections: list[str],
        count: Callable[[list[str], list[str]], _Counts],
    ) -> dict[str, int]:
        """How many chunks of `collections` hold each item: the sum of its per-collection
        counts, those not cached yet got by `count(items, collections)` (absent: none)."""
        missing = [x for x in items if any((c, x) not in cache for c in collections)]
        if missing and len(cache) + len(missing) * len(collections) > _MAX_COUNTS:
            cache.clear()
            missing = list(dict.fromkeys(items))
        if missing:
            counted = count(missing, collections)
            cache.update({(c, x): counted.get((c, x), 0) for x in missing for c in collections})
        return {x: sum(cache[c, x] for c in collections) for x in items}

    def _count_words(self, words: list[str], collections: list[str]) -> _Counts:
        counts: _Counts = {}
        if self.dialect == "sqlite":
            tables = self._fts5_tables(collections)
            for word in words:
                for name, table in tables.items():
                    sql = _FTS5_FREQUENCY.format(table=table)
                    counts[name, word] = int(self._db.execute(sql, (f'"{word}"',)).fetchone()[0])
            return counts
        rows = self._collection_rows()
        for word in words:
            quoted = _lexeme(word)
            # A stopword (not indexed by PostgreSQL) counts as in every chunk, as FTS5 would
            # find it.
            if self._db.execute(_POSTGRES_STOPWORD, (quoted,)).fetchone()[0]:
                counts.update({(c, word): rows[c] for c in collections})
                continue
            found = self._db.execute(_POSTGRES_WORD_FREQUENCIES, (quoted, collections))
            counts.update({(str(r[0]), word): int(r[1]) for r in found})
        return counts

    def _count_lexemes(self, lexemes: list[str], collections: list[str]) -> _Counts:
        found = self._db.execute(_POSTGRES_LEXEME_FREQUENCIES, (lexemes, collections))
        return {(str(r[1]), str(r[0])): int(r[2]) for r in found}

    def term_weights(
        self, words: Iterable[str], collections: Sequence[str] | None = None
    ) -> dict[str, float]:
        """Inverse document frequency of each word over the chunks of `collections` (None:
        all), stemmed as the index stems, ln(1 + N / (1 + df)): a word no chunk holds weighs
        the most."""
        words = list(words)
        total, df = self._word_frequencies(words, collections)
        return {word: math.log(1 + total / (1 + df[word])) for word in words}

    def unmentioned(
        self, words: Iterable[str], collections: Sequence[str] | None = None
    ) -> list[str]:
        """The words no chunk of `collections` (None: all) holds, stemmed as the index stems."""
        words = list(words)
        if not words:
            return []
        _, df = self._word_frequencies(words, collections)
        return [word for word in words if not df[word]]

    def _word_frequencies(
        self, words: list[str], collections: Sequence[str] | None
    ) -> tuple[int, dict[str, int]]:
        """The chunks of `collections` (None: all) and how many of them hold each word."""
        with self._lock, self._snapshot():
            readable = self._readable(collections)
            total = sum(self._collection_rows()[c] for c in readable)
            return total, self._frequencies(self._df, words, readable, self._count_words)

    def _postgres_search(
        self, query: str, collections: Sequence[str] | None
    ) -> tuple[str, list[object]] | None:
        """The PostgreSQL search's parameters (lexemes, their IDF over `collections`, the OR
        query), or None when the query has no word PostgreSQL indexes."""
        rows = self._db.execute(_POSTGRES_LEXEMES, (" ".join(query_terms(query)),)).fetchall()
        lexemes = [str(r[0]) for r in rows]
        if not lexemes:
            return None
        readable = self._readable(collections)
        total = sum(self._collection_rows()[c] for c in readable)
        df = self._frequencies(self._lexeme_df, lexemes, readable, self._count_lexemes)
        idf = [math.log(1 + (total - df[x] + 0.5) / (df[x] + 0.5)) for x in lexemes]
        return " | ".join(_lexeme(x) for x in lexemes), [lexemes, idf]

    # -- Writes ----------------------------------------------------------------------------

    def add(self, chunks: Iterable[Chunk]) -> None:
        rows = [(c.embedding_text(), c.id, c.document_id, c.collection) for c in chunks]
        ids = [r[1] for r in rows]
        with self._tx() as db:
            self._changed()
            # Replace semantics: a re-added chunk id never appears twice.
            if self.dialect == "postgresql":
                db.executemany("DELETE FROM chunks WHERE chunk_id = ?", [(i,) for i in ids])
                db.executemany(
                    "INSERT INTO chunks(body, chunk_id, document_id, collection) "
                    "VALUES (?, ?, ?, ?)",
                    rows,
                )
                return
            self._fts5_remove(db, "chunk_id = ?", ids)
            tables = {name: self._fts5_collection(db, name) for name in {r[3] for r in rows}}
            db.executemany(
                "INSERT INTO chunk_keys(chunk_id, document_id, collection_id) VALUES (?, ?, ?)",
                [(r[1], r[2], tables[r[3]]) for r in rows],
            )
            for name, collection_id in tables.items():
                db.executemany(
                    f"INSERT INTO {_fts5_table(collection_id)}(rowid, body, chunk_id) "
                    f"VALUES (({_FTS5_ROWIDS_OF_CHUNK}), ?, ?)",
                    [(r[1], r[0], r[1]) for r in rows if r[3] == name],
                )

    def clear(self) -> None:
        """Drop every chunk (`enclave reindex` rebuilds from the registry and the files)."""
        with self._tx() as db:
            self._changed()
            if self.dialect == "postgresql":
                db.execute("DELETE FROM chunks")
                return
            for (collection_id,) in db.execute("SELECT id FROM keyword_collections").fetchall():
                db.execute(f"DROP TABLE IF EXISTS {_fts5_table(collection_id)}")
            db.execute("DELETE FROM keyword_collections")
            db.execute("DELETE FROM chunk_keys")

    def delete_document(self, document_id: str) -> None:
        with self._tx() as db:
            self._changed()
            if self.dialect == "postgresql":
                db.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
            else:
                self._fts5_remove(db, "document_id = ?", [document_id])

    def set_collection(self, document_id: str, collection: str) -> None:
        """Move a document's chunks to another collection (on SQLite: to its table)."""
        with self._tx() as db:
            self._changed()
            if self.dialect == "postgresql":
                db.execute(
                    "UPDATE chunks SET collection = ? WHERE document_id = ?",
                    (collection, document_id),
                )
                return
            target = self._fts5_collection(db, collection)
            holding = _FTS5_TABLES_HOLDING.format(keys="document_id = ?")
            sources = {r[0] for r in db.execute(holding, (document_id,))} - {target}
            for source in sources:
                table = _fts5_table(source)
                move = _FTS5_MOVE.format(target=_fts5_table(target), source=table)
                db.execute(move, (document_id,))
                delete = _FTS5_DELETE.format(table=table, keys="document_id = ?")
                db.execute(delete, (document_id,))
            db.execute(
                "UPDATE chunk_keys SET collection_id = ? WHERE document_id = ?",
                (target, document_id),
            )

    # -- Reads -----------------------------------------------------------------------------

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
            sql = f"SELECT count(*) FROM {self._ids_table}"
            return int(self._db.execute(sql).fetchone()[0])

    def search(
        self, query: str, k: int, collections: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """(chunk id, score) best first; higher is better. Each score is counted over the
        searched collections only (on SQLite: over the chunk's own collection)."""
        if not query_terms(query) or (collections is not None and not collections):
            return []
        with self._lock:
            if self.dialect == "sqlite":
                return self._fts5_search(query, k, collections)
            found = self._postgres_search(query, collections)
            if found is None:
                return []
            tsquery, params = found
            where = ""
            if collections is not None:
                where = " AND chunks.collection = ANY(?::text[])"
                params.extend([tsquery, list(collections), k])
            else:
                params.extend([tsquery, k])
            rows = self._db.execute(_POSTGRES_SEARCH.format(filter=where), params).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    def _fts5_search(
        self, query: str, k: int, collections: Sequence[str] | None
    ) -> list[tuple[str, float]]:
        """BM25 in each collection's table, merged best first (a stable sort: one
        collection's ties keep FTS5's order)."""
        match = match_expression(query)
        found: list[tuple[str, float]] = []
        with self._snapshot():
            for table in self._fts5_tables(collections).values():
                rows = self._db.execute(_FTS5_SEARCH.format(table=table), (match, k))
                found.extend((r[0], float(r[1])) for r in rows)
        found.sort(key=lambda hit: -hit[1])
        return found[:k]
