"""`enclave eval retrieval`: index a BEIR-format folder (or a passages + QA folder) into its own
cached data dir and measure retrieval quality and latency with the production search path."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from config.settings import Settings
from ingest.loaders import Element, clean_text
from ingest.pipeline import build_pipeline
from retriever.answer_metrics import is_yes_no
from retriever.components import Components
from retriever.metrics import mrr_at_k, ndcg_at_k, percentile, recall_at_k
from retriever.question import Mode

BATCH_DOCS = 512  # documents chunked and embedded per batch while indexing
RANK_DEPTH = 100  # documents ranked per query (Recall@100)

Progress = Callable[[int, int], None]


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or (n == 0 and not parts[2].lstrip("-").isdigit()):
                continue  # header
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def cache_dir(settings: Settings, name: str, identity: object) -> Path:
    """The eval data dir for a dataset: a new one whenever the data (`identity`: path, sizes,
    mtimes) or a setting that changes the index (embedder, chunking) changes."""
    key = json.dumps(
        [
            identity,
            settings.embed_model,
            settings.embed_backend,
            settings.chunk_tokens,
            settings.chunk_overlap_tokens,
            3,  # how texts become chunks: 3 since texts pass `clean_text`
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return settings.data_dir / "eval" / f"{name}-{digest}"


def open_index(
    settings: Settings,
    source: Path,
    documents: Callable[[], Iterator[tuple[str, str, str]]],
    progress: Progress | None = None,
) -> Components:
    """Components over a cached index of (id, title, text) documents; built on first use."""
    stat = source.stat()
    identity = [str(source.resolve()), stat.st_size, stat.st_mtime]
    data = cache_dir(settings, source.parent.name, identity)
    # Documents arrive as text: no parser workers needed. ONNX exports stay in the parent's cache.
    # An eval index is scratch data in its own folder, never in a shared `database_url`.
    cache = str(settings.model_cache_dir)
    update = {"data_dir": data, "parse_workers": 0, "embed_cache_dir": cache, "database_url": ""}
    components = Components(settings.model_copy(update=update))
    marker = data / "complete.json"
    if marker.exists():
        return components
    pipeline = build_pipeline(components)
    docs = list(documents())
    done = 0
    for start in range(0, len(docs), BATCH_DOCS):
        chunks = []
        for doc_id, title, text in docs[start : start + BATCH_DOCS]:
            # As a parsed file's text would be (`clean_text`), so eval runs what users get.
            element = Element(clean_text(text), "NarrativeText", None, ())
            chunks += pipeline.chunker.chunk(
                [element],
                doc_id,
                f"{source.parent.name}:{doc_id}",
                clean_text(title),
                settings.default_collection,
            )
        pipeline.write_chunks(chunks)
        done += len(docs[start : start + BATCH_DOCS])
        if progress:
            progress(done, len(docs))
    pipeline.close()
    marker.write_text(json.dumps({"documents": len(docs), "chunks": components.store.count()}))
    return components


def rank_documents(components: Components, query: str, mode: Mode, depth: int) -> list[str]:
    """Documents best first; a document's score is its best chunk's."""
    result = components.searcher.search(query, depth * 2, mode, candidates_k=depth * 2)
    ranked: list[str] = []
    seen: set[str] = set()
    for hit in result.hits:
        doc = hit.chunk.document_id
        if doc not in seen:
            seen.add(doc)
            ranked.append(doc)
    return ranked[:depth]


def evaluate_beir(
    settings: Settings,
    folder: Path,
    split: str = "test",
    mode: Mode = "hybrid",
    limit: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    if not (folder / "qrels" / f"{split}.tsv").is_file():
        raise FileNotFoundError(f"not a BEIR folder: qrels/{split}.tsv is missing")
    return score_beir(open_beir(settings, folder, progress), folder, split, mode, limit)


def open_beir(settings: Settings, folder: Path, progress: Progress | None = None) -> Components:
    """Components over the cached index of a BEIR folder's corpus; built on first use."""
    corpus = folder / "corpus.jsonl"
    for needed in (corpus, folder / "queries.jsonl"):
        if not needed.is_file():
            raise FileNotFoundError(f"not a BEIR folder: {needed} is missing")

    def documents() -> Iterator[tuple[str, str, str]]:
        for row in read_jsonl(corpus):
            yield str(row["_id"]), str(row.get("title") or ""), str(row.get("text") or "")

    return open_index(settings, corpus, documents, progress)


def score_beir(
    components: Components,
    folder: Path,
    split: str = "test",
    mode: Mode = "hybrid",
    limit: int = 0,
) -> dict[str, Any]:
    """nDCG@10, Recall@10/100, MRR@10 and latency of `components`' search on a BEIR folder
    whose corpus they have indexed."""
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    queries = {str(q["_id"]): str(q["text"]) for q in read_jsonl(folder / "queries.jsonl")}
    ids = [qid for qid in qrels if qid in queries]
    if limit:
        ids = ids[:limit]
    components.embedder.embed(["warm up"])
    scores: dict[str, list[float]] = {
        "ndcg@10": [],
        "recall@10": [],
        "recall@100": [],
        "mrr@10": [],
    }
    latencies: list[float] = []
    for qid in ids:
        start = time.perf_counter()
        ranked = rank_documents(components, queries[qid], mode, RANK_DEPTH)
        latencies.append((time.perf_counter() - start) * 1000)
        relevant = qrels[qid]
        scores["ndcg@10"].append(ndcg_at_k(ranked, relevant, 10))
        scores["recall@10"].append(recall_at_k(ranked, relevant, 10))
        scores["recall@100"].append(recall_at_k(ranked, relevant, 100))
        scores["mrr@10"].append(mrr_at_k(ranked, relevant, 10))
    n = max(1, len(ids))
    return {
        **{name: round(sum(v) / n, 4) for name, v in scores.items()},
        "latency_ms_p50": round(percentile(latencies, 0.5), 2),
        "latency_ms_p95": round(percentile(latencies, 0.95), 2),
        "mode": mode,
        "queries": len(ids),
        "split": split,
        "dataset": folder.name,
    }


def evaluate_qa(
    settings: Settings,
    folder: Path,
    mode: Mode = "hybrid",
    limit: int = 0,
    progress: Progress | None = None,
    top: int = 5,
) -> dict[str, Any]:
    passages_file, qa_file = folder / "passages.jsonl", folder / "qa.jsonl"
    for needed in (passages_file, qa_file):
        if not needed.is_file():
            raise FileNotFoundError(f"not a passages + QA folder: {needed} is missing")
    passages = {str(p["id"]): str(p["passage"]) for p in read_jsonl(passages_file)}

    def documents() -> Iterator[tuple[str, str, str]]:
        for pid, text in passages.items():
            yield pid, "", text

    components = open_index(settings, passages_file, documents, progress)
    rows = [r for r in read_jsonl(qa_file) if not is_yes_no(r["answer"])]
    if limit:
        rows = rows[:limit]
    found = 0
    latencies: list[float] = []
    for row in rows:
        start = time.perf_counter()
        ranked = rank_documents(components, str(row["question"]), mode, top)
        latencies.append((time.perf_counter() - start) * 1000)
        gold = str(row["answer"]).strip().lower()
        found += any(gold in passages[pid].lower() for pid in ranked[:top])
    return {
        f"answer_in_top{top}": round(found / max(1, len(rows)), 4),
        "latency_ms_p50": round(percentile(latencies, 0.5), 2),
        "latency_ms_p95": round(percentile(latencies, 0.95), 2),
        "mode": mode,
        "queries": len(rows),
        "dataset": folder.name,
    }
