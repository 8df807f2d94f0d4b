"""Query latency of dense, BM25 and hybrid retrieval at ~5k and 100k chunks, against a
brute-force numpy dot product over the very same vectors, measured in the same run.

    python benchmarks/retrieve.py [--sizes 5k,100k] [--queries 300] [--build-only]

5k: the SciFact corpus chunked as in production (`enclave eval retrieval` builds the same).
100k: SciFact + rag-mini-wikipedia passages chunked finer (32-token chunks) until 100,000
chunks. Both are built once into benchmarks' cache (ENCLAVE_BENCH_CACHE, default data/bench).
Every query goes through the production `HybridSearcher.search` (query embedding included,
top_k and candidates_k from the settings); the baseline embeds the same query with the same
embedder and ranks every vector with one matrix product. Modes and the baseline take turns
on each query, so machine noise falls on all of them alike. Writes results/retrieve.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np
from common import (  # type: ignore[import-not-found]
    BEIR,
    CACHE,
    PASSAGES,
    machine,
    print_table,
    read_jsonl,
    summary_ms,
    write_result,
)

from config.settings import Settings
from ingest.chunker import Chunker
from ingest.evaluate import open_index
from ingest.loaders import Element
from ingest.pipeline import build_pipeline
from retriever.components import Components
from retriever.types import Chunk

FINE = {"chunk_tokens": 32, "chunk_overlap_tokens": 12}
BIG_CHUNKS = 100_000
WRITE_BATCH = 2048


def base_settings(**update: Any) -> Settings:
    return Settings(
        data_dir=CACHE / "retrieve",
        embed_cache_dir=str(CACHE / "models"),
        llm_backend="fake",
        parse_workers=0,
        watch="off",
        **update,
    )


def corpus_documents() -> Iterator[tuple[str, str, str]]:
    for row in read_jsonl(BEIR / "corpus.jsonl"):
        yield str(row["_id"]), str(row.get("title") or ""), str(row.get("text") or "")


def all_documents() -> Iterator[tuple[str, str, str]]:
    yield from corpus_documents()
    for row in read_jsonl(PASSAGES / "passages.jsonl"):
        yield f"p{row['id']}", "", str(row["passage"])


def small_index() -> Components:
    return open_index(base_settings(), BEIR / "corpus.jsonl", corpus_documents, progress)


def fine_chunks(chunker: Chunker, coarser: Chunker) -> list[Chunk]:
    """32-token chunks of every document (about 91,000), topped up to 100,000 with a second
    pass at another granularity (as an index holding two versions of a corpus would be)."""
    chunks: list[Chunk] = []
    for pass_, splitter in (("", chunker), ("#2", coarser)):
        for doc_id, title, text in all_documents():
            element = Element(text, "NarrativeText", None, ())
            doc = doc_id + pass_
            chunks += splitter.chunk([element], doc, f"bench:{doc}", title, "default")
            if len(chunks) >= BIG_CHUNKS:
                return chunks[:BIG_CHUNKS]
    return chunks


_worker_embedder: Any = None


def _embed_in_worker(settings: Settings, texts: list[str]) -> np.ndarray:
    global _worker_embedder
    if _worker_embedder is None:
        components = Components(settings)  # the embedder alone: no index opened here
        _worker_embedder = components.embedder_for(components.generation)
    return _worker_embedder.embed(texts)


def big_index(workers: int = 1, partial: bool = False) -> Components:
    """SciFact + passages in 32-token chunks, the first 100,000 of them. Resumes an
    interrupted build (chunk ids are stable); `workers` processes embed in parallel."""
    settings = base_settings(**FINE)
    data = CACHE / "retrieve" / f"fine-{BIG_CHUNKS}-{settings.embed_backend}"
    components = Components(settings.model_copy(update={"data_dir": data}))
    marker = data / "complete.json"
    if marker.exists() or partial:
        return components
    pipeline = build_pipeline(components)
    have = set(components.store.collection.get(include=[])["ids"])
    embedder = components.embedder
    coarser = Chunker(embedder.count_tokens, embedder.max_tokens, 48, 0)
    missing = [c for c in fine_chunks(pipeline.chunker, coarser) if c.id not in have]
    print(f"  {len(have)} chunks indexed, {len(missing)} to embed", flush=True)
    slices = [missing[i : i + WRITE_BATCH] for i in range(0, len(missing), WRITE_BATCH)]
    start, written = time.perf_counter(), 0

    def write(part: list[Chunk], vectors: np.ndarray) -> None:
        nonlocal written
        components.store.upsert(part, vectors)
        components.keyword.add(part)
        written += len(part)
        rate = written / (time.perf_counter() - start)
        print(f"  +{written} chunks, {rate:.0f} chunks/s", flush=True)

    if workers <= 1:  # in process: a second process would only fight this one for the cores
        for part in slices:
            write(part, embedder.embed([c.embedding_text() for c in part]))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [
                pool.submit(_embed_in_worker, settings, [c.embedding_text() for c in part])
                for part in slices
            ]
            for part, future in zip(slices, futures, strict=True):
                write(part, future.result())
    pipeline.close()
    marker.write_text(json.dumps({"chunks": components.store.count()}))
    return components


def progress(done: int, total: int) -> None:
    print(f"  {done}/{total} documents", flush=True)


def all_vectors(components: Components) -> np.ndarray:
    """Every vector of the index, read back from Chroma (the baseline ranks the same ones)."""
    collection = components.store.collection
    total = collection.count()
    parts = []
    for offset in range(0, total, 5000):
        got = collection.get(include=["embeddings"], limit=5000, offset=offset)
        parts.append(np.asarray(got["embeddings"], dtype=np.float32))
    return np.concatenate(parts)


def measure(components: Components, queries: list[str], label: str) -> list[dict[str, Any]]:
    settings = components.settings
    searcher = components.searcher
    embedder = components.embedder
    matrix = all_vectors(components)
    k, n = settings.top_k, settings.candidates_k
    components.warm_up()
    times: dict[str, list[float]] = {m: [] for m in ("dense", "bm25", "hybrid", "numpy")}
    embed_ms: list[float] = []
    overlap: list[float] = []
    for query in queries:
        for mode in ("dense", "bm25", "hybrid"):
            start = time.perf_counter()
            result = searcher.search(query, k, mode)  # type: ignore[arg-type]
            times[mode].append((time.perf_counter() - start) * 1000)
            if mode == "dense":
                embed_ms.append(result.timings_ms.get("embed_ms", 0.0))
        start = time.perf_counter()
        vector = embedder.embed([query])[0]
        scores = matrix @ vector
        top = np.argpartition(-scores, n)[:n]
        top = top[np.argsort(-scores[top])]
        times["numpy"].append((time.perf_counter() - start) * 1000)
        # How many of the exact top-n the HNSW index finds (approximate search's recall).
        found = components.store.query(vector, n)
        exact = {float(s) for s in scores[top]}
        overlap.append(
            sum(any(abs(sim - e) < 1e-4 for e in exact) for _, sim in found) / max(1, len(found))
        )
    rows = []
    for mode, values in times.items():
        rows.append(
            {
                "index": label,
                "chunks": int(matrix.shape[0]),
                "mode": mode if mode != "numpy" else "numpy brute force (baseline)",
                **summary_ms(values),
            }
        )
    rows[0]["hnsw_recall_at_candidates"] = round(float(np.mean(overlap)), 4)
    for row in rows:
        row["query_embed_p50_ms"] = round(float(np.median(embed_ms)), 2)
    return rows


def concurrency(
    components: Components, queries: list[str], label: str, levels: tuple[int, ...] = (1, 4, 16)
) -> list[dict[str, Any]]:
    """Hybrid queries from several threads at once: the production searcher, whose query
    embeddings of concurrent callers share forward passes, against one that embeds each query
    on its own. The two take turns at each level."""
    coalesced = components.searcher
    per_query = copy.copy(coalesced)
    per_query.embedder = components.embedder
    k = components.settings.top_k
    rows = []
    for level in levels:
        for name, searcher in (("per-query", per_query), ("coalesced", coalesced)):
            latencies: list[float] = []

            def ask(query: str, searcher: Any = searcher, latencies: list = latencies) -> None:
                start = time.perf_counter()
                searcher.search(query, k, "hybrid")
                latencies.append((time.perf_counter() - start) * 1000)

            start = time.perf_counter()
            with ThreadPoolExecutor(level) as pool:
                list(pool.map(ask, queries))
            wall = time.perf_counter() - start
            rows.append(
                {
                    "index": label,
                    "threads": level,
                    "query_embedding": name,
                    "queries_per_s": round(len(queries) / wall, 1),
                    **summary_ms(latencies),
                }
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5k,100k")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--concurrent-queries", type=int, default=160)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--build-workers", type=int, default=1, help="embedding processes")
    parser.add_argument("--partial", action="store_true", help="measure an unfinished 100k index")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    builders = {"5k": small_index, "100k": lambda: big_index(args.build_workers, args.partial)}
    indexes = {}
    for size in sizes:
        start = time.perf_counter()
        print(f"index {size} ...", flush=True)
        indexes[size] = builders[size]()
        print(
            f"index {size}: {indexes[size].store.count()} chunks "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    if args.build_only:
        return 0
    queries = [str(q["text"]) for q in read_jsonl(BEIR / "queries.jsonl")][: args.queries]
    rows: list[dict[str, Any]] = []
    for size, components in indexes.items():
        rows += measure(components, queries, size)
    print_table(rows)
    concurrent: list[dict[str, Any]] = []
    for size, components in indexes.items():
        concurrent += concurrency(components, queries[: args.concurrent_queries], size)
    print_table(concurrent)
    result = {
        "benchmark": "retrieve",
        "queries": len(queries),
        "top_k": indexes[sizes[0]].settings.top_k,
        "candidates_k": indexes[sizes[0]].settings.candidates_k,
        "embed_backend": indexes[sizes[0]].settings.embed_backend,
        "rows": rows,
        "concurrent": concurrent,
        "machine": machine(),
    }
    write_result("retrieve", result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
