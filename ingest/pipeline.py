"""Index files: register, load, chunk, embed, write both indexes, then mark indexed.

A document becomes `indexed` only after its chunks are in Chroma and in the keyword index.
Every step is idempotent (stable chunk ids, delete-then-insert), so a crash anywhere leaves the
document `pending` and the next run finishes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ingest.chunker import Chunker
from ingest.loaders import LoadError, is_ignored, is_supported, load_document
from ingest.registry import DocumentRecord, Registry, file_sha256
from retriever.components import Components
from retriever.embedder import Embedder
from retriever.keyword import KeywordIndex
from retriever.store import ChromaStore
from retriever.types import Chunk

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, "FileOutcome"], None]


@dataclass
class FileOutcome:
    path: str
    status: str  # indexed | unchanged | renamed | failed | skipped
    document_id: str | None = None
    chunks: int = 0
    error: str | None = None


@dataclass
class IngestReport:
    outcomes: list[FileOutcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def chunks(self) -> int:
        return sum(o.chunks for o in self.outcomes)

    def to_dict(self) -> dict[str, object]:
        statuses = ("indexed", "unchanged", "renamed", "failed", "skipped")
        return {
            **{s: self.count(s) for s in statuses},
            "chunks": self.chunks,
            "seconds": round(self.seconds, 2),
            "failures": [
                {"path": o.path, "error": o.error} for o in self.outcomes if o.status == "failed"
            ],
        }


def discover(paths: Iterable[Path]) -> Iterator[Path]:
    """Files under the given paths (recursively), skipping hidden and temporary files."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path)
                if child.is_file() and not any(is_ignored(p) for p in relative.parts):
                    yield child
        elif path.is_file():
            yield path
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")


class IngestPipeline:
    def __init__(
        self,
        registry: Registry,
        embedder: Embedder,
        store: ChromaStore,
        keyword: KeywordIndex,
        chunker: Chunker,
        inbox: Path,
        default_collection: str = "default",
    ) -> None:
        self.registry = registry
        self.embedder = embedder
        self.store = store
        self.keyword = keyword
        self.chunker = chunker
        self.inbox = inbox.resolve()
        self.default_collection = default_collection

    def collection_for(self, path: Path) -> str:
        """Subfolders of the inbox are collections; anything else is the default one."""
        try:
            relative = path.resolve().relative_to(self.inbox)
        except ValueError:
            return self.default_collection
        return relative.parts[0] if len(relative.parts) > 1 else self.default_collection

    def ingest(
        self,
        paths: Iterable[Path],
        progress: ProgressCallback | None = None,
        force: bool = False,
    ) -> IngestReport:
        return self.ingest_file_list(list(discover(paths)), progress, force)

    def ingest_file_list(
        self,
        files: Iterable[Path],
        progress: ProgressCallback | None = None,
        force: bool = False,
    ) -> IngestReport:
        start = time.perf_counter()
        report = IngestReport()
        for file in files:
            outcome = self.ingest_file(file, force=force)
            report.outcomes.append(outcome)
            if progress:
                progress(str(file), outcome)
        report.seconds = time.perf_counter() - start
        return report

    def ingest_file(self, file: Path, force: bool = False) -> FileOutcome:
        path = str(file.resolve())
        if not is_supported(file):
            return FileOutcome(path, "skipped", error=f"unsupported file type '{file.suffix}'")
        stat = file.stat()
        sha = file_sha256(file)
        collection = self.collection_for(file)
        existing = self.registry.get_by_path(path)
        if (
            existing
            and not force
            and existing.sha256 == sha
            and existing.status == "indexed"
            and existing.collection == collection
        ):
            return FileOutcome(path, "unchanged", existing.id, existing.chunks)
        record = self.registry.register(path, collection, sha, stat.st_size, stat.st_mtime)
        return self.index(record)

    def index(self, record: DocumentRecord) -> FileOutcome:
        """Load, chunk, embed and write one registered document; failures are recorded."""
        try:
            loaded = load_document(Path(record.path))
            chunks = self.chunker.chunk(
                loaded.elements, record.id, record.path, loaded.title, record.collection
            )
            self.write_chunks(chunks, replace=[record.id])
            self.registry.mark_indexed(record.id, len(chunks), loaded.title)
            return FileOutcome(record.path, "indexed", record.id, len(chunks))
        except LoadError as exc:
            return self._fail(record, str(exc))
        except Exception as exc:  # a parser bug must not stop the batch
            log.exception("indexing %s failed", record.path)
            return self._fail(record, f"{type(exc).__name__}: {exc}")

    def write_chunks(self, chunks: Sequence[Chunk], replace: Iterable[str] = ()) -> None:
        """Embed chunks (of any number of documents, in one batched pass) and write them to
        both indexes, after removing the old chunks of the documents in `replace`."""
        vectors = self.embedder.embed([c.embedding_text() for c in chunks])
        # Old chunks go first: a changed document must not keep stale passages.
        for document_id in replace:
            self.remove_chunks(document_id)
        self.store.upsert(chunks, vectors)
        self.keyword.add(chunks)

    def _fail(self, record: DocumentRecord, error: str) -> FileOutcome:
        self.remove_chunks(record.id)
        self.registry.mark_failed(record.id, error)
        return FileOutcome(record.path, "failed", record.id, error=error)

    def remove_chunks(self, document_id: str) -> None:
        self.store.delete_document(document_id)
        self.keyword.delete_document(document_id)

    def delete(self, document_id: str) -> DocumentRecord | None:
        record = self.registry.get(document_id)
        if record is None:
            return None
        self.remove_chunks(document_id)
        self.registry.mark_deleted(document_id)
        return self.registry.get(document_id)

    def resume_pending(self) -> list[FileOutcome]:
        """Finish documents a crash left pending."""
        outcomes = []
        for record in self.registry.list("pending"):
            if Path(record.path).is_file():
                outcomes.append(self.ingest_file(Path(record.path), force=True))
            else:
                self.delete(record.id)
        return outcomes


def build_pipeline(components: Components) -> IngestPipeline:
    """The ingestion pipeline over the retrieval side's indexes and embedder."""
    settings = components.settings
    chunker = Chunker(
        components.embedder.count_tokens,
        components.embedder.max_tokens,
        settings.chunk_tokens,
        settings.chunk_overlap_tokens,
    )
    return IngestPipeline(
        Registry(settings.registry_path),
        components.embedder,
        components.store,
        components.keyword,
        chunker,
        settings.inbox_dir,
        settings.default_collection,
    )
