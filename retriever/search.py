"""Hybrid search: dense (Chroma) and BM25 (FTS5) candidates fused by reciprocal rank."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from retriever.embedder import Embedder
from retriever.keyword import KeywordIndex
from retriever.question import MODES, Mode
from retriever.rerank import Reranker
from retriever.store import ChromaStore
from retriever.types import Chunk, Hit


@dataclass
class SearchResult:
    hits: list[Hit]
    mode: Mode
    best_dense_similarity: float | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    # What was searched (None: every collection). Whatever weighs these hits against the
    # corpus (abstention's term weights) counts these collections only.
    collections: tuple[str, ...] | None = None


def reciprocal_rank_fusion(
    rankings: Sequence[tuple[Sequence[str], float]], k: int = 60
) -> list[tuple[str, float]]:
    """Fuse ranked id lists, each with a weight: score(id) = sum of weight / (k + rank)."""
    scores: dict[str, float] = {}
    for ids, weight in rankings:
        for rank, cid in enumerate(ids, start=1):
            scores[cid] = scores.get(cid, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def collapse_duplicates(hits: list[Hit]) -> list[Hit]:
    """Keep the best of hits with the same text up to case and spacing (the same passage in
    two files, a re-saved copy); linear, so it stays cheap at any k."""
    kept: list[Hit] = []
    seen: set[str] = set()
    for hit in hits:
        key = " ".join(hit.chunk.text.lower().split())
        if key in seen:
            continue
        seen.add(key)
        kept.append(hit)
    return kept


class HybridSearcher:
    def __init__(
        self,
        embedder: Embedder,
        store: ChromaStore,
        keyword: KeywordIndex,
        candidates_k: int = 30,
        rrf_k: int = 60,
        dense_weight: float = 1.0,
        bm25_weight: float = 1.0,
        reranker: Reranker | None = None,
        rerank_candidates: int = 20,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.keyword = keyword
        self.candidates_k = candidates_k
        self.rrf_k = rrf_k
        self.dense_weight = dense_weight
        self.bm25_weight = bm25_weight
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        # Hybrid queries run BM25 here while the calling thread embeds the query and asks
        # Chroma: SQLite, ONNX Runtime and Chroma release the GIL, and on 2 cores the two
        # retrievers then take about as long as the slower one instead of their sum.
        self._keyword_pool = ThreadPoolExecutor(4, thread_name_prefix="bm25")

    def search(
        self,
        query: str,
        k: int,
        mode: Mode = "hybrid",
        collections: Sequence[str] | None = None,
        candidates_k: int | None = None,
    ) -> SearchResult:
        """Top-k hits; `collections` (None: all) is applied inside both indexes' queries."""
        if mode not in MODES:
            raise ValueError(f"unknown retrieval mode {mode!r}; use one of {', '.join(MODES)}")
        n = max(k, candidates_k or self.candidates_k)
        timings: dict[str, float] = {}
        dense: list[tuple[Chunk, float]] = []
        bm25: list[tuple[str, float]] = []

        def keyword_search() -> list[tuple[str, float]]:
            start = time.perf_counter()
            found = self.keyword.search(query, n, collections)
            timings["bm25_ms"] = (time.perf_counter() - start) * 1000
            return found

        pending = self._keyword_pool.submit(keyword_search) if mode == "hybrid" else None
        if mode in ("dense", "hybrid"):
            start = time.perf_counter()
            vector = self.embedder.embed([query])[0]
            timings["embed_ms"] = (time.perf_counter() - start) * 1000
            start = time.perf_counter()
            dense = self.store.query(vector, n, collections)
            timings["dense_ms"] = (time.perf_counter() - start) * 1000
        if pending is not None:
            bm25 = pending.result()
        elif mode == "bm25":
            bm25 = keyword_search()

        best_dense = dense[0][1] if dense else None
        chunks = {chunk.id: chunk for chunk, _ in dense}
        similarity = {chunk.id: sim for chunk, sim in dense}
        dense_rank = {chunk.id: rank for rank, (chunk, _) in enumerate(dense, start=1)}
        bm25_rank = {cid: rank for rank, (cid, _) in enumerate(bm25, start=1)}

        if mode == "dense":
            ranked = [(chunk.id, sim) for chunk, sim in dense]
        elif mode == "bm25":
            ranked = list(bm25)
        else:
            ranked = reciprocal_rank_fusion(
                [
                    ([c.id for c, _ in dense], self.dense_weight),
                    ([cid for cid, _ in bm25], self.bm25_weight),
                ],
                k=self.rrf_k,
            )

        # Only the head of the ranking can reach the answer: fetch no more than it needs
        # (twice k, as room for collapsed duplicates, or the reranker's candidates).
        head = max(k, self.rerank_candidates if self.reranker is not None else 0)
        ranked = ranked[: 2 * head]
        missing = [cid for cid, _ in ranked if cid not in chunks]
        chunks.update(self.store.get(missing))
        hits = [
            Hit(
                chunk=chunks[cid],
                score=score,
                dense_similarity=similarity.get(cid),
                dense_rank=dense_rank.get(cid),
                bm25_rank=bm25_rank.get(cid),
            )
            for cid, score in ranked
            if cid in chunks  # an FTS row whose vector is gone (mid-delete) is skipped
            # A keyword hit is fetched by id: its collection is checked again here, so an
            # index left behind by a move that failed half-way cannot widen the search.
            and (collections is None or chunks[cid].collection in collections)
        ]
        hits = collapse_duplicates(hits)
        if self.reranker is not None and hits:
            start = time.perf_counter()
            hits = self._rerank(query, hits)
            timings["rerank_ms"] = (time.perf_counter() - start) * 1000
        hits = hits[:k]
        return SearchResult(
            hits=hits,
            mode=mode,
            best_dense_similarity=best_dense,
            timings_ms=timings,
            collections=None if collections is None else tuple(collections),
        )

    def _rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        """Reorder the first `rerank_candidates` hits by the reranker's score."""
        assert self.reranker is not None
        head, tail = hits[: self.rerank_candidates], hits[self.rerank_candidates :]
        scores = self.reranker.score(query, [h.chunk.embedding_text() for h in head])
        for hit, score in zip(head, scores, strict=True):
            hit.extra["fused_score"] = hit.score
            hit.score = score
        head.sort(key=lambda h: -h.score)
        return head + tail
