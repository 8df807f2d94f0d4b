"""Retrieval quality on SciFact (test split) with each keyword backend: SQLite FTS5 ranked by
BM25 (the default) and PostgreSQL full-text search (`database_url`: `ts_rank` weighted by BM25's
IDF), keyword-only and hybrid; for reference, PostgreSQL's own rankers `ts_rank_cd` and `ts_rank`
(normalization 1) unweighted, on the same index.

Both backends hold the same chunks (copied from the cached FTS5 index) and share the same Chroma
index and query embeddings: only the keyword engine differs. Without `--database-url`, a
throwaway PostgreSQL cluster is started from Debian's server binaries (tests/postgres.py).

    python benchmarks/keyword_backends.py [--database-url postgresql://...] [--limit N]
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import Any

from common import BEIR, CACHE, machine, print_table, read_jsonl, summary_ms, write_result

from config.settings import Settings
from ingest.evaluate import open_beir, score_beir
from retriever.components import Components
from retriever.keyword import KeywordIndex, _fts5_table, query_terms
from retriever.types import Chunk

MODES = ("bm25", "hybrid")
LATENCY_QUERIES = 150  # keyword-only latency: 30 candidates, backends taking turns per query
BATCH = 2000
BUILT_IN_RANKS = {"ts_rank_cd": "ts_rank_cd(lexemes, q)", "ts_rank": "ts_rank(lexemes, q, 1)"}


class BuiltInRank(KeywordIndex):
    """The PostgreSQL keyword index ranked by one of PostgreSQL's own functions (reference)."""

    def __init__(self, target: str, rank: str) -> None:
        super().__init__(target)
        self.rank = rank

    def search(
        self, query: str, k: int, collections: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        sql = (
            f"SELECT chunk_id, {self.rank} AS score FROM chunks, to_tsquery('english', ?) AS q "
            "WHERE lexemes @@ q ORDER BY score DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, (" | ".join(f"'{t}'" for t in terms), k)).fetchall()
        return [(r[0], float(r[1])) for r in rows]


def fts5_rows(components: Components) -> Iterator[Chunk]:
    """The chunks of the FTS5 index (a table per collection), as chunks whose embedding text
    is the indexed body."""
    components.keyword.count()  # opened first: an index of the one-table layout is split
    db = sqlite3.connect(components.settings.keyword_path)
    try:
        collections = db.execute("SELECT id, name FROM keyword_collections").fetchall()
        for collection_id, collection in collections:
            rows = db.execute(
                f"SELECT t.chunk_id, k.document_id, t.body FROM {_fts5_table(collection_id)} "
                "AS t JOIN chunk_keys AS k ON k.rowid = t.rowid"
            )
            for chunk_id, document_id, body in rows:
                yield Chunk(chunk_id, document_id, 0, body, "", "", collection)
    finally:
        db.close()


def fill(index: KeywordIndex, chunks: Iterator[Chunk]) -> int:
    batch: list[Chunk] = []
    total = 0
    for chunk in chunks:
        batch.append(chunk)
        if len(batch) == BATCH:
            index.add(batch)
            total, batch = total + len(batch), []
    index.add(batch)
    return total + len(batch)


def keyword_latency(sides: list[tuple[str, Components]], limit: int) -> dict[str, Any]:
    """p50/p95 of the keyword search alone (the answer path's `candidates_k` 30), the backends
    taking turns query by query so that both see the same load."""
    queries = [str(q["text"]) for q in read_jsonl(BEIR / "queries.jsonl")][:limit]
    times: dict[str, list[float]] = {name: [] for name, _ in sides}
    for query in queries:
        for name, components in sides:
            start = time.perf_counter()
            components.keyword.search(query, 30)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: summary_ms(values) for name, values in times.items()}


def server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as db:
        row = db.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="", help="an empty scratch database")
    parser.add_argument("--limit", type=int, default=0, help="first N queries only")
    args = parser.parse_args()
    sqlite_side = open_beir(Settings(data_dir=CACHE), BEIR)
    with ExitStack() as stack:
        url = args.database_url
        if not url:
            from tests.postgres import temporary_cluster, temporary_database

            url = stack.enter_context(temporary_database(stack.enter_context(temporary_cluster())))
        update = {"database_url": url}
        postgres_side = Components(
            sqlite_side.settings.model_copy(update=update), embedder=sqlite_side.embedder
        )
        if postgres_side.keyword.count() == 0:
            fill(postgres_side.keyword, fts5_rows(sqlite_side))
        version = server_version(url)
        sides = [("sqlite-fts5", sqlite_side), ("postgresql", postgres_side)]
        for name, rank in BUILT_IN_RANKS.items():
            side = Components(postgres_side.settings, embedder=sqlite_side.embedder)
            side.__dict__["keyword"] = BuiltInRank(url, rank)  # before the searcher is built
            sides.append((f"postgresql {name}", side))
        latency = keyword_latency(sides, LATENCY_QUERIES)
        print(latency)
        rows: list[dict[str, Any]] = []
        for backend, components in sides:
            for mode in MODES:
                result = score_beir(components, BEIR, "test", mode, args.limit)  # type: ignore[arg-type]
                rows.append({"backend": backend, **result})
                print_table(rows[-1:])
        chunks = {
            "sqlite-fts5": sqlite_side.keyword.count(),
            "postgresql": postgres_side.keyword.count(),
        }
    print_table(
        rows, ["backend", "mode", "ndcg@10", "recall@10", "recall@100", "mrr@10", "latency_ms_p50"]
    )
    write_result(
        "keyword-backends",
        {
            "machine": machine(),
            "dataset": "scifact test",
            "chunks": chunks,
            "postgresql": version,
            "sqlite": sqlite3.sqlite_version,
            "ranking": {
                "sqlite-fts5": "bm25(chunks), Porter stemmer",
                "postgresql": "sum over terms of BM25 IDF x ts_rank(lexemes, term, 1)",
                **{f"postgresql {name}": rank for name, rank in BUILT_IN_RANKS.items()},
            },
            "results": rows,
            "keyword_latency_30_candidates": latency,
        },
    )


if __name__ == "__main__":
    main()
