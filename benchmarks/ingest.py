"""Ingestion throughput against the bare embedder, in the same run.

    python benchmarks/ingest.py [--corpus ../shared/eval/scifact/corpus.jsonl] [--limit N]

Writes each corpus row as a text file, ingests the folder with the real pipeline (parser
workers, chunker, batched embedding, Chroma + FTS5, registry), then encodes the very same
chunk texts with a bare `SentenceTransformer.encode` and reports docs/s, chunks/s and the
ratio. Prints a table; writes benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.pipeline import build_pipeline  # noqa: E402
from retriever.components import Components  # noqa: E402
from retriever.settings import load_settings  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "eval" / "scifact" / "corpus.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=0, help="first N documents only")
    parser.add_argument("--parse-workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ingest.json")
    args = parser.parse_args()

    rows = [json.loads(line) for line in args.corpus.read_text().splitlines() if line.strip()]
    if args.limit:
        rows = rows[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs"
        docs.mkdir()
        for row in rows:
            (docs / f"{row['_id']}.txt").write_text(f"{row.get('title', '')}\n\n{row['text']}\n")
        settings = load_settings(data_dir=Path(tmp) / "data", parse_workers=args.parse_workers)
        components = Components(settings)
        pipeline = build_pipeline(components)
        components.embedder.embed(["warm up"])
        start = time.perf_counter()
        report = pipeline.ingest([docs])
        pipeline_s = time.perf_counter() - start
        texts = [
            c.embedding_text()
            for c in components.store.get(
                list(components.store.collection.get(include=[])["ids"])
            ).values()
        ]
        pipeline.close()

        embedder = components.embedder
        model = embedder.model  # type: ignore[attr-defined]
        start = time.perf_counter()
        model.encode(texts, batch_size=settings.embed_batch_size, normalize_embeddings=True)
        bare_s = time.perf_counter() - start

    chunks = len(texts)
    result = {
        "documents": len(rows),
        "chunks": chunks,
        "failed": report.count("failed"),
        "pipeline_s": round(pipeline_s, 2),
        "pipeline_docs_per_s": round(len(rows) / pipeline_s, 2),
        "pipeline_chunks_per_s": round(chunks / pipeline_s, 2),
        "bare_encoder_s": round(bare_s, 2),
        "bare_chunks_per_s": round(chunks / bare_s, 2),
        "ratio_vs_bare_encoder": round(bare_s / pipeline_s, 3),
        "parse_workers": args.parse_workers,
        "cpus": os.cpu_count(),
    }
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:{width}}  {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
