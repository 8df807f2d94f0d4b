"""Helpers shared by the benchmarks: paths, data, percentiles, tables and result files."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# First: benchmarks/ingest.py must not shadow the ingest package.
sys.path.insert(0, str(ROOT))

import retriever.privacy  # noqa: E402,F401  (offline switches before any HF import)
from retriever.metrics import percentile  # noqa: E402

EVAL = Path(os.environ.get("ENCLAVE_EVAL", ROOT.parent / "shared" / "eval"))
BEIR = EVAL / "scifact"
PASSAGES = EVAL / "rag-mini-wikipedia"
RESULTS = ROOT / "benchmarks" / "results"
# Indexes the benchmarks build (kept between runs; outside git).
CACHE = Path(os.environ.get("ENCLAVE_BENCH_CACHE", ROOT / "data" / "bench"))


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.50), 2),
        "p95_ms": round(percentile(values, 0.95), 2),
        "p99_ms": round(percentile(values, 0.99), 2),
        "mean_ms": round(sum(values) / max(1, len(values)), 2),
    }


def machine() -> dict[str, Any]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "load_avg_1m_at_start": round(load, 2) if load is not None else None,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def print_table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
    if not rows:
        return
    columns = list(columns or rows[0].keys())
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"  # an absolute `name` (--out /tmp/x) is kept as given
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path
