"""Index files: register, parse (in workers), chunk, embed (batched across documents), write
both indexes, then mark indexed.

A document becomes `indexed` only after its chunks are in Chroma and in the keyword index.
Every step is idempotent (stable chunk ids, delete-then-insert), so a crash anywhere leaves the
document `pending` and the next run finishes it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from config.collection_names import COLLECTION_RULE, is_collection_name
from config.settings import Settings
from ingest.chunker import Chunker
from ingest.guards import Limits, check_file, check_location, open_checked
from ingest.jobs import FileOutcome, JobLog
from ingest.loaders import LoadedDocument, LoadError, is_ignored, is_supported, load_document
from ingest.ocr import OcrOptions
from ingest.registry import DocumentRecord, Registry, file_sha256
from ingest.workers import ParserPool
from retriever.components import Components
from retriever.embedder import Embedder
from retriever.keyword import KeywordIndex
from retriever.serving import IndexSlot
from retriever.store import ChromaStore
from retriever.types import Chunk

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, "FileOutcome"], None]
# (path, progress=(pages done, pages) callback) -> document
Loader = Callable[..., LoadedDocument]
# Hands registered documents to other processes (Celery workers) with the job they belong to.
Dispatch = Callable[[Sequence[DocumentRecord], str | None], None]
STATUSES = ("indexed", "unchanged", "renamed", "failed", "skipped", "queued", "deleted")
PARSE_AHEAD = 16  # parsed documents held per worker beyond the next embedding batch
MAX_PARSE_AHEAD = 1024  # documents, whatever their size
FIRST_BATCH_CHUNKS = 64  # then doubling up to embed_batch_chunks


class IngestStopped(Exception):
    """The process is stopping: the work in flight ends between two files or batches. What
    was not written stays pending (or unregistered) and is finished at the next start."""


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
        return {
            **{s: self.count(s) for s in STATUSES},
            "chunks": self.chunks,
            "seconds": round(self.seconds, 2),
            "failures": [
                {"path": o.path, "error": o.error} for o in self.outcomes if o.status == "failed"
            ],
            # Indexed, but some pages could not be read (each named, with why).
            "incomplete": [
                {"path": o.path, "error": o.error}
                for o in self.outcomes
                if o.status == "indexed" and o.error
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


def absolute(path: Path) -> Path:
    """Absolute and normalized, but a symlink stays itself (its target is checked apart)."""
    return Path(os.path.normpath(path.absolute()))


def collection_of(path: Path, inbox: Path, default_collection: str) -> str:
    """Subfolders of the inbox are collections; anything else is the default one."""
    path, inbox = absolute(path), absolute(inbox)
    if not path.is_relative_to(inbox):
        return default_collection
    relative = path.relative_to(inbox)
    return relative.parts[0] if len(relative.parts) > 1 else default_collection


@dataclass
class _Parsed:
    record: DocumentRecord
    title: str = ""
    chunks: list[Chunk] | None = None  # None: the file failed, for `error`
    error: str | None = None
    problems: list[str] = field(default_factory=list)  # pages not read; the rest indexed


@dataclass(frozen=True)
class IngestOptions:
    """How the pipeline files, guards and batches documents (from the settings: `of`)."""

    inbox: Path
    default_collection: str = "default"
    chunk_tokens: int = 200
    chunk_overlap_tokens: int = 32
    embed_batch_chunks: int = 256
    limits: Limits = field(default_factory=Limits)
    ocr: OcrOptions = field(default_factory=OcrOptions)
    quarantine_dir: Path | None = None  # None: a failed file stays where it is
    symlinks: str = "same_collection"  # links in the inbox: "same_collection" or "refuse"

    @classmethod
    def of(cls, settings: Settings) -> IngestOptions:
        s = settings
        return cls(
            inbox=s.inbox_dir,
            default_collection=s.default_collection,
            chunk_tokens=s.chunk_tokens,
            chunk_overlap_tokens=s.chunk_overlap_tokens,
            embed_batch_chunks=s.ingest_batch_chunks,
            limits=Limits(s.max_file_mb, s.max_pages, s.max_zip_ratio, s.max_unzipped_mb),
            ocr=OcrOptions(s.ocr_languages, s.ocr_page_timeout_s, s.ocr_dpi),
            quarantine_dir=s.quarantine_dir if s.quarantine == "move" else None,
            symlinks=s.inbox_symlinks,
        )


class IngestPipeline:
    """Writes into the serving index that search reads (`serving`: an embedder swap replaces
    it there, for both), keeping `registry` in step. With a `parser_pool`, files are parsed
    in its worker processes; without, in process."""

    def __init__(
        self,
        serving: IndexSlot,
        registry: Registry,
        options: IngestOptions,
        parser_pool: ParserPool | None = None,
    ) -> None:
        self.serving = serving
        self.registry = registry
        self.options = options
        self.inbox = absolute(options.inbox)
        self.default_collection = options.default_collection
        self.limits = options.limits
        self.quarantine_dir = options.quarantine_dir
        self.embed_batch_chunks = options.embed_batch_chunks
        self.symlinks = options.symlinks
        self.parser_pool = parser_pool
        self.parse_workers = max(1, parser_pool.workers if parser_pool else 1)
        self.loader: Loader = (
            parser_pool.load if parser_pool else functools.partial(load_document, ocr=options.ocr)
        )
        self._chunker: tuple[Embedder, Chunker] | None = None
        # With a work queue, documents to index are handed over instead of indexed here.
        self.dispatch: Dispatch | None = None
        # Set: stop between files and batches (IngestStopped); the parser pool's own flag.
        self.stopping = parser_pool.stopping if parser_pool else threading.Event()
        self._closed = False
        self.jobs = JobLog(registry.target)
        # Told of every document indexed or failed here (the server's metrics set it).
        self.observe: Callable[[list[FileOutcome]], None] = lambda outcomes: None

    # The parts of the serving index, as it is now (an embedder swap runs where no ingestion
    # does: server/state.py runs it in the ingestion thread).
    @property
    def embedder(self) -> Embedder:
        return self.serving.index.embedder

    @property
    def store(self) -> ChromaStore:
        return self.serving.index.store

    @property
    def keyword(self) -> KeywordIndex:
        return self.serving.index.keyword

    @property
    def chunker(self) -> Chunker:
        """Chunks sized in the serving embedder's tokens (made again after a swap)."""
        embedder = self.embedder
        made = self._chunker
        if made is None or made[0] is not embedder:
            o = self.options
            chunker = Chunker(
                embedder.count_tokens, embedder.max_tokens, o.chunk_tokens, o.chunk_overlap_tokens
            )
            made = self._chunker = (embedder, chunker)
        return made[1]

    def check_stop(self) -> None:
        if self.stopping.is_set():
            raise IngestStopped("the process is stopping")

    # -- deciding what a file needs ---------------------------------------------------------

    def in_inbox(self, path: Path) -> bool:
        return absolute(path).is_relative_to(self.inbox)

    def check_link(self, path: Path) -> Path:
        """LoadError when a link on the way of this inbox path (the file, or a folder that was
        swapped for a link after indexing) leads out of its collection's folder: the rule of
        `guards.check_location`, for everything that opens or moves a document's file. Returns
        the real path it allowed."""
        return check_location(path, self.inbox if self.in_inbox(path) else None, self.symlinks)

    def open_file(self, path: Path) -> BinaryIO:
        """A document's file opened for reading, if it is a regular file that `check_link`
        allows, checked on the descriptor actually opened (`guards.open_checked`), so no link
        swapped in after the check serves another file; else LoadError."""
        return open_checked(path, self.check_link)

    def collection_for(self, path: Path) -> str:
        """Subfolders of the inbox are collections; anything else is the default one."""
        return collection_of(path, self.inbox, self.default_collection)

    def plan(self, file: Path, force: bool = False) -> FileOutcome | DocumentRecord:
        """An outcome when nothing needs parsing (unchanged, renamed, skipped), else the
        document registered as pending."""
        path = str(absolute(file))
        if not is_supported(file):
            return FileOutcome(path, "skipped", error=f"unsupported file type '{file.suffix}'")
        stat = file.stat()
        sha = file_sha256(file)
        collection = self.collection_for(file)
        if not is_collection_name(collection):
            # The rule uploads and the settings follow: such a folder names no collection.
            # Failed, not quarantined: renaming the folder is the fix.
            record = self.registry.register(path, collection, sha, stat.st_size, stat.st_mtime)
            error = f"its folder {collection!r} cannot name a collection: {COLLECTION_RULE}"
            return self._fail(record, error, quarantine=False)
        existing = self.registry.get_by_path(path)
        if existing and not force and existing.sha256 == sha and existing.status == "indexed":
            if existing.collection != collection:
                self.move(existing, path, collection, stat.st_mtime)
            return FileOutcome(path, "unchanged", existing.id, existing.chunks)
        if existing is None and not force:
            moved = self._moved_from(sha)
            if moved is not None:
                self.move(moved, path, collection, stat.st_mtime)
                return FileOutcome(path, "renamed", moved.id, moved.chunks)
        return self.registry.register(path, collection, sha, stat.st_size, stat.st_mtime)

    def register_again(self, record: DocumentRecord) -> DocumentRecord | None:
        """`record` pending again, from its file as it is now (same id and collection), to be
        indexed anew; None when the file is gone."""
        path = Path(record.path)
        if not path.is_file():
            return None
        stat = path.stat()
        return self.registry.register(
            record.path, record.collection, file_sha256(path), stat.st_size, stat.st_mtime
        )

    def _moved_from(self, sha: str) -> DocumentRecord | None:
        """An indexed document with the same content whose file is gone: a move or rename."""
        for record in self.registry.find_by_sha(sha):
            if record.status == "indexed" and not os.path.lexists(record.path):
                return record
        return None

    # -- indexing -----------------------------------------------------------------------------

    def ingest(
        self, paths: Iterable[Path], progress: ProgressCallback | None = None, force: bool = False
    ) -> IngestReport:
        return self.ingest_file_list(list(discover(paths)), progress, force)

    def ingest_file_list(
        self,
        files: Iterable[Path],
        progress: ProgressCallback | None = None,
        force: bool = False,
        job: str | None = None,
    ) -> IngestReport:
        start = time.perf_counter()
        report = IngestReport()

        def record(outcome: FileOutcome) -> None:
            report.outcomes.append(outcome)
            if progress:
                progress(outcome.path, outcome)

        pending: list[DocumentRecord] = []
        for file in files:
            self.check_stop()
            planned = self.plan(file, force)
            if isinstance(planned, FileOutcome):
                record(planned)
            else:
                pending.append(planned)
        for outcome in self.index_records(pending, job):
            record(outcome)
        report.seconds = time.perf_counter() - start
        return report

    def ingest_file(self, file: Path, force: bool = False) -> FileOutcome:
        planned = self.plan(file, force)
        return planned if isinstance(planned, FileOutcome) else self.index(planned)

    def index(self, record: DocumentRecord) -> FileOutcome:
        (outcome,) = self.index_records([record])
        return outcome

    def _page_progress(
        self, record: DocumentRecord, job: str | None, done: int, total: int
    ) -> None:
        try:
            self.jobs.pages(record.id, record.path, done, total, job)
        except Exception:  # progress is a display: it must not fail the file
            log.exception("recording page progress of %s failed", record.path)

    def _parse(self, record: DocumentRecord, job: str | None = None) -> _Parsed:
        """Parse (in a parser process when there is a pool) and chunk one file."""
        path = Path(record.path)
        if self.stopping.is_set():  # parsed ahead, never used: index_records stops first
            return _Parsed(record, error="not parsed: the process is stopping")
        try:
            self.check_link(path)
            # The zip, PDF and image guards open the file: the parser processes run them,
            # under their limits, when they parse (see ParserPool).
            in_workers = self.parser_pool is not None and self.loader == self.parser_pool.load
            check_file(path, self.limits, content=not in_workers)
            doc = self.loader(path, progress=functools.partial(self._page_progress, record, job))
            chunks = self.chunker.chunk(
                doc.elements, record.id, record.path, doc.title, record.collection
            )
            return _Parsed(record, doc.title, chunks, problems=doc.problems)
        except LoadError as exc:
            return _Parsed(record, error=str(exc))
        except FileNotFoundError:
            return _Parsed(record, error=f"{path.name} disappeared before it could be read")
        except Exception as exc:  # a parser bug must not stop the batch
            log.exception("parsing or chunking %s failed", path)
            return _Parsed(record, error=f"{type(exc).__name__}: {exc}")

    def _parsed_in_order(
        self,
        records: Sequence[DocumentRecord],
        chunks_per_document: Callable[[], float],
        job: str | None = None,
    ) -> Iterator[_Parsed]:
        """Parse files ahead of the one being chunked, in the parser processes (in process,
        one after the other). The workers must have the next embedding batch parsed by the
        time the current one is embedded, or the embedder waits for them file by file; so
        the window is a batch's worth of documents (estimated from the chunks per document
        so far) plus PARSE_AHEAD per worker, which also bounds the parsed text held."""
        parse = functools.partial(self._parse, job=job)
        if self.parser_pool is None:
            yield from map(parse, records)
            return

        def limit() -> int:
            per_batch = self.embed_batch_chunks / max(chunks_per_document(), 1.0)
            return min(int(per_batch) + PARSE_AHEAD * self.parse_workers, MAX_PARSE_AHEAD)

        with ThreadPoolExecutor(self.parse_workers, thread_name_prefix="parse") as pool:
            ahead: deque[Future[_Parsed]] = deque()
            for record in records:
                ahead.append(pool.submit(parse, record))
                while len(ahead) >= limit():
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()

    def index_records(
        self, records: Sequence[DocumentRecord], job: str | None = None
    ) -> Iterator[FileOutcome]:
        """Parse, chunk and write registered documents; chunks of several documents are
        embedded together (the embedder is fastest on full batches). With a work queue
        (`dispatch`), they are queued to the workers, as part of `job`, instead."""
        if self.dispatch is not None:
            if records:
                self.dispatch(records, job)
            for rec in records:
                yield FileOutcome(rec.path, "queued", rec.id)
            return
        # The writer thread stores batch N (Chroma, keyword index, registry) while this
        # thread embeds batch N+1, and files are parsed and chunked on the parse threads.
        writing: Future[list[FileOutcome]] | None = None
        with ThreadPoolExecutor(1, thread_name_prefix="index-write") as writer:
            for batch in self._batches(records, job):
                self.check_stop()  # before a failure is recorded or a batch embedded
                if batch[0].chunks is None:
                    yield self._fail(batch[0].record, batch[0].error or "unknown error")
                    continue
                vectors = self._embed(batch)
                if writing is not None:
                    yield from writing.result()
                writing = writer.submit(self._write, batch, vectors)
            if writing is not None:
                yield from writing.result()

    def _batches(
        self, records: Sequence[DocumentRecord], job: str | None = None
    ) -> Iterator[list[_Parsed]]:
        """Chunked files in embedding batches; a file that failed comes alone (no chunks).
        The first batches are small, so the embedder starts while the parsers fill the
        next; they double up to `embed_batch_chunks`."""
        documents = chunks = 0

        def chunks_per_document() -> float:
            return chunks / documents if documents else 1.0

        batch: list[_Parsed] = []
        size, limit = 0, min(FIRST_BATCH_CHUNKS, self.embed_batch_chunks)
        for parsed in self._parsed_in_order(records, chunks_per_document, job):
            if parsed.chunks is None:
                yield [parsed]
                continue
            batch.append(parsed)
            size += len(parsed.chunks)
            documents, chunks = documents + 1, chunks + len(parsed.chunks)
            if size >= limit:
                yield batch
                batch, size = [], 0
                limit = min(2 * limit, self.embed_batch_chunks)
        if batch:
            yield batch

    def _embed(self, batch: list[_Parsed]) -> Any:
        return self.embedder.embed([c.embedding_text() for p in batch for c in p.chunks or ()])

    def _write(self, batch: list[_Parsed], vectors: Any) -> list[FileOutcome]:
        chunks = [c for parsed in batch for c in parsed.chunks or ()]
        self.store_chunks(chunks, vectors, replace=[parsed.record.id for parsed in batch])
        outcomes = []
        for parsed in batch:
            rec, count = parsed.record, len(parsed.chunks or ())
            if self.registry.mark_indexed(rec.id, count, parsed.title, rec.sha256):
                unread = "; ".join(parsed.problems) or None
                if unread:
                    log.warning("%s indexed without some pages: %s", rec.path, unread)
                outcomes.append(FileOutcome(rec.path, "indexed", rec.id, count, unread))
                continue
            # Deleted or changed while it was embedded: a deleted document must not come back;
            # a changed one keeps these chunks until its new version replaces them.
            current = self.registry.get(rec.id)
            if current is None or current.status == "deleted":
                self.remove_chunks(rec.id)
            outcomes.append(
                FileOutcome(
                    rec.path,
                    "skipped",
                    rec.id,
                    error="deleted or changed while it was being indexed",
                )
            )
        self.observe(outcomes)
        return outcomes

    def write_chunks(self, chunks: Sequence[Chunk], replace: Iterable[str] = ()) -> None:
        """Embed chunks (of any number of documents, in one batched pass) and write them to
        both indexes, after removing the old chunks of the documents in `replace`."""
        vectors = self.embedder.embed([c.embedding_text() for c in chunks])
        self.store_chunks(chunks, vectors, replace)

    def store_chunks(
        self, chunks: Sequence[Chunk], vectors: Any, replace: Iterable[str] = ()
    ) -> None:
        """Write embedded chunks to both indexes, after removing the old chunks of the
        documents in `replace`."""
        # Old chunks go first: a changed document must not keep stale passages.
        self.remove_chunks(*replace)
        self.store.upsert(chunks, vectors)
        self.keyword.add(chunks)

    def _fail(self, record: DocumentRecord, error: str, quarantine: bool = True) -> FileOutcome:
        self.remove_chunks(record.id)
        self.registry.mark_failed(record.id, error)
        path = record.path
        if quarantine and self.quarantine_dir is not None and self.in_inbox(Path(path)):
            path = self._quarantine(record, error)
        outcome = FileOutcome(path, "failed", record.id, error=error)
        self.observe([outcome])
        return outcome

    def _quarantine(self, record: DocumentRecord, error: str) -> str:
        """Move a failed inbox file aside with an .error.json that says why."""
        assert self.quarantine_dir is not None
        source = Path(record.path)
        folder = self.quarantine_dir / record.collection
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / source.name
        if target.exists():
            target = folder / f"{source.stem}-{record.id[:8]}{source.suffix}"
        try:
            shutil.move(str(source), str(target))
        except OSError as exc:
            log.warning("could not quarantine %s: %s", source, exc)
            return record.path
        details = {
            "original_path": record.path,
            "error": error,
            "sha256": record.sha256,
            "failed_at": time.time(),
            "document_id": record.id,
        }
        target.with_name(target.name + ".error.json").write_text(json.dumps(details, indent=2))
        self.registry.move(record.id, str(target), record.collection, record.mtime)
        return str(target)

    def close(self) -> None:
        """Stop the parser workers and close the registry."""
        if self.parser_pool is not None:
            self.parser_pool.close()
        if not self._closed:  # a job still running here ends with this process
            self.jobs.interrupt_own()
        self._closed = True
        self.jobs.close()
        self.registry.close()

    # -- keeping the indexes in step ----------------------------------------------------------

    def remove_chunks(self, *document_ids: str) -> None:
        self.store.delete_documents(document_ids)
        for document_id in document_ids:
            self.keyword.delete_document(document_id)

    def move(self, record: DocumentRecord, path: str, collection: str, mtime: float) -> None:
        """Same content at a new path: update the metadata, never re-embed. The indexes
        first, the registry last: a move that fails half-way leaves the registry at the old
        path or collection, so the next scan or run sees the difference and moves again."""
        self.store.update_document(record.id, path=path, collection=collection)
        self.keyword.set_collection(record.id, collection)
        self.registry.move(record.id, path, collection, mtime)

    def move_to_trash(self, record: DocumentRecord, trash_dir: Path) -> Path | None:
        """Move an inbox document's file to `trash_dir/<collection>/`, so the inbox no longer
        holds it and no scan indexes it again (moving it back into the inbox restores it).
        Returns where it went; None when the file is not in the inbox or already gone. An
        OSError (permissions) propagates: the document must not be deleted then."""
        source = Path(record.path)
        if not self.in_inbox(source) or not os.path.lexists(source):
            return None
        try:
            self.check_link(source)
        except LoadError:
            return None  # another collection's file: not this document's to move
        folder = trash_dir / record.collection
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / source.name
        if os.path.lexists(target):
            target = folder / f"{source.stem}-{record.id[:8]}-{int(time.time())}{source.suffix}"
        shutil.move(str(source), str(target))  # a link moves as the link itself
        return target

    def delete(self, document_id: str) -> DocumentRecord | None:
        record = self.registry.get(document_id)
        if record is None:
            return None
        self.remove_chunks(document_id)
        self.registry.mark_deleted(document_id)
        return self.registry.get(document_id)

    def remove_missing(self, folders: Iterable[Path]) -> list[FileOutcome]:
        """Delete the documents registered under `folders` whose file is gone (whatever
        their status), so a folder ingested again leaves the index equal to the folder. Run
        after the folder's files are ingested: a moved file has its new path by then."""
        roots = [absolute(folder) for folder in folders]
        outcomes = []
        for record in self.registry.list():
            path = Path(record.path)
            if (
                record.status != "deleted"
                and any(path.is_relative_to(root) for root in roots)
                and not os.path.lexists(path)
            ):
                self.delete(record.id)
                outcomes.append(FileOutcome(record.path, "deleted", record.id))
        return outcomes

    def resume_pending(self) -> list[FileOutcome]:
        """Finish documents a crash left pending."""
        records = []
        for record in self.registry.list("pending"):
            if os.path.lexists(record.path):
                records.append(record)
            else:
                self.delete(record.id)
        return list(self.index_records(records))

    def retry_failed(self) -> list[FileOutcome]:
        records = [r for r in self.registry.list("failed") if os.path.lexists(r.path)]
        return list(self.index_records(records))

    def remove_orphans(self) -> int:
        """Drop chunks whose document the registry does not hold as indexed. With a work
        queue, a pending document's chunks may be a worker's write in progress: kept."""
        indexed = {r.id for r in self.registry.list("indexed")}
        if self.dispatch is not None:
            indexed |= {r.id for r in self.registry.list("pending")}
        orphans = (self.store.all_document_ids() | self.keyword.all_document_ids()) - indexed
        for document_id in orphans:
            self.remove_chunks(document_id)
        return len(orphans)


def build_pipeline(components: Components, parse_workers: int | None = None) -> IngestPipeline:
    """The ingestion pipeline over the retrieval side's serving index. With
    parse_workers >= 1 (default: the setting), files are parsed in worker processes with time
    and memory limits; 0 parses in process (tests, debugging, a web server whose Celery
    workers parse)."""
    settings = components.settings
    options = IngestOptions.of(settings)
    workers = settings.parse_workers if parse_workers is None else parse_workers
    pool = None
    if workers >= 1:
        pool = ParserPool(
            workers, settings.parse_timeout_s, settings.parse_memory_mb, options.limits, options.ocr
        )
    registry = Registry(settings.database_for(settings.registry_path))
    return IngestPipeline(components.serving, registry, options, pool)
