"""Embedder backends side by side: throughput on the same SciFact chunk texts (torch fp32,
ONNX fp32, ONNX int8, in turns within one run) and dense nDCG@10 on SciFact for each.

    python benchmarks/embedder.py [--docs 300] [--rounds 3] [--quality torch,onnx-int8]

Throughput: the first --docs SciFact abstracts chunked as in production, embedded whole by
each backend in turn, --rounds times; the median round counts. Quality: `enclave eval
retrieval --mode dense` (the production search path) on an index built by each backend (cached
in the benchmarks' cache). Writes results/embedder.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from common import (  # type: ignore[import-not-found]
    BEIR,
    CACHE,
    RESULTS,
    machine,
    print_table,
    read_jsonl,
    write_result,
)

from config.settings import Settings
from ingest.chunker import Chunker
from ingest.evaluate import evaluate_beir
from ingest.loaders import Element
from retriever.embedder import BACKENDS, Embedder, load_embedder
from retriever.models import bundled_embedder_path


def chunk_texts(embedder: Embedder, docs: int, settings: Settings) -> list[str]:
    chunker = Chunker(
        embedder.count_tokens,
        embedder.max_tokens,
        settings.chunk_tokens,
        settings.chunk_overlap_tokens,
    )
    texts: list[str] = []
    for n, row in enumerate(read_jsonl(BEIR / "corpus.jsonl")):
        if n >= docs:
            break
        element = Element(str(row["text"]), "NarrativeText", None, ())
        chunks = chunker.chunk([element], str(row["_id"]), "x", str(row["title"]), "default")
        texts += [c.embedding_text() for c in chunks]
    return texts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quality", default="torch,onnx-int8", help="backends to evaluate")
    args = parser.parse_args()
    settings = Settings(data_dir=CACHE / "retrieve", embed_cache_dir=str(CACHE / "models"))
    path = bundled_embedder_path()
    embedders = {
        b: load_embedder(path, b, settings.embed_batch_size, settings.model_cache_dir)
        for b in BACKENDS
    }
    texts = chunk_texts(embedders["torch"], args.docs, settings)
    for embedder in embedders.values():
        embedder.embed(texts[:8])
    seconds: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for _ in range(args.rounds):
        for backend, embedder in embedders.items():
            start = time.perf_counter()
            embedder.embed(texts)
            seconds[backend].append(time.perf_counter() - start)
            print(f"  {backend}: {seconds[backend][-1]:.1f} s", flush=True)
    torch_s = statistics.median(seconds["torch"])
    rows: list[dict[str, Any]] = []
    for backend in BACKENDS:
        median = statistics.median(seconds[backend])
        rows.append(
            {
                "backend": backend,
                "chunks_per_s": round(len(texts) / median, 1),
                "speedup_vs_torch": round(torch_s / median, 2),
                "rounds_s": [round(s, 2) for s in seconds[backend]],
            }
        )
    del embedders
    for row in rows:
        if row["backend"] in args.quality.split(","):
            start = time.perf_counter()
            quality = evaluate_beir(
                settings.model_copy(update={"embed_backend": row["backend"]}), BEIR, mode="dense"
            )
            row["ndcg@10"] = quality["ndcg@10"]
            row["recall@10"] = quality["recall@10"]
            print(f"  {row['backend']}: quality in {time.perf_counter() - start:.0f} s", flush=True)
    fp32 = next((r.get("ndcg@10") for r in rows if r["backend"] == "torch"), None)
    recorded = RESULTS / "retrieval-beir-dense-fp32.json"
    if fp32 is None and recorded.exists():
        # torch fp32 not re-evaluated: the last `ENCLAVE_EMBED_BACKEND=torch enclave eval` result.
        fp32 = json.loads(recorded.read_text())["ndcg@10"]
        rows[0]["ndcg@10"] = fp32
        rows[0]["ndcg_source"] = "results/retrieval-beir-dense-fp32.json"
    for row in rows:
        if fp32 is not None and "ndcg@10" in row:
            row["ndcg@10_vs_fp32"] = round(row["ndcg@10"] - fp32, 4)
    print_table(rows)
    result = {
        "benchmark": "embedder",
        "chunks": len(texts),
        "documents": args.docs,
        "batch_size": settings.embed_batch_size,
        "rows": rows,
        "machine": machine(),
    }
    write_result("embedder", result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
