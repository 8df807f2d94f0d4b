"""`enclave reindex`: rebuild the vector and keyword indexes from the registry and the original
files. The registry (and the files it names) is the source of truth; both indexes can be lost
and made again, e.g. after a restore, an upgrade of Chroma, or a corrupted index."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ingest.pipeline import FileOutcome, IngestPipeline

log = logging.getLogger(__name__)


@dataclass
class ReindexReport:
    documents: int = 0
    indexed: int = 0
    failed: int = 0
    missing: list[str] = field(default_factory=list)  # registry rows whose file is gone
    chunks: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "documents": self.documents,
            "indexed": self.indexed,
            "failed": self.failed,
            "missing": self.missing,
            "chunks": self.chunks,
            "seconds": round(self.seconds, 2),
        }


def reindex_all(
    pipeline: IngestPipeline, progress: Callable[[str, FileOutcome], None] | None = None
) -> ReindexReport:
    """Empty both indexes, then parse, chunk and embed again every document the registry holds
    as indexed or pending (each keeps its id and collection). A document whose file is gone is
    marked deleted. Run it with the writers stopped (it takes the data directory's lock)."""
    start = time.perf_counter()
    report = ReindexReport()
    registry = pipeline.registry
    pipeline.store.clear()
    pipeline.keyword.clear()
    pending = []
    for record in registry.list():
        if record.status not in ("indexed", "pending"):
            continue
        report.documents += 1
        again = pipeline.register_again(record)
        if again is None:
            report.missing.append(record.path)
            registry.mark_deleted(record.id)
            continue
        pending.append(again)
    for outcome in pipeline.index_records(pending):
        report.indexed += outcome.status == "indexed"
        report.failed += outcome.status == "failed"
        report.chunks += outcome.chunks
        if progress:
            progress(outcome.path, outcome)
    report.seconds = time.perf_counter() - start
    log.info("reindexed: %s", report.to_dict())
    return report
