"""Switch the serving embedder: re-embed the index into the new generation's collection while
the current one keeps serving, then swap in one step; `rollback` is the same switch back.

Re-embedding reads the chunk texts stored in the current collection (no re-parsing). The bulk
of it runs beside the server; a short catch-up then runs where nothing else writes (the
server's ingestion thread), copying what ingestion changed meanwhile, and the swap follows:
the pointer file, then the components' embedder, store and searcher, all at once."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from retriever.embedder import Embedder
from retriever.store import COLLECTION, ChromaStore, chunk_from_record
from retriever.tuning.generations import Generation, GenerationError, Generations

if TYPE_CHECKING:
    from pathlib import Path

    from retriever.components import Components

log = logging.getLogger(__name__)
T = TypeVar("T")
PAGE = 2000  # records read from Chroma at a time
Exclusive = Callable[[Callable[[], T]], T]


@dataclass
class SyncReport:
    embedded: int = 0
    deleted: int = 0
    relabelled: int = 0


@dataclass
class ActivationStatus:
    """What an activation is doing, for `GET /api/v1/embedder` and the CLI's progress bar."""

    phase: str = "idle"  # idle | starting | embedding | swapping | done | failed
    target: int | None = None
    done: int = 0
    total: int = 0
    error: str | None = None
    started_at: float = 0.0
    finished_at: float = 0.0
    report: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sync_collection(
    source: ChromaStore,
    target: ChromaStore,
    embedder: Embedder,
    batch: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> SyncReport:
    """Make `target` hold the chunks of `source`, embedded by `embedder`: embed what it lacks,
    delete what `source` no longer has, copy changed metadata (moved files). Idempotent, so an
    interrupted activation simply starts again where the collection stands."""
    report = SyncReport()
    have = {cid: None for cid in target.collection.get(include=[])["ids"]}
    target_meta: dict[str, dict[str, Any]] = {}
    if have:
        for cid, _, meta in target.records(PAGE):
            target_meta[cid] = meta
    wanted: list[tuple[str, str, dict[str, Any]]] = []
    relabel: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for cid, text, meta in source.records(PAGE):
        seen.add(cid)
        if cid not in target_meta:
            wanted.append((cid, text, meta))
        elif target_meta[cid] != meta:
            relabel.append((cid, meta))
    total = len(wanted)
    if progress:
        progress(0, total)
    for start in range(0, total, batch):
        part = [
            chunk_from_record(cid, text, meta) for cid, text, meta in wanted[start : start + batch]
        ]
        target.upsert(part, embedder.embed([c.embedding_text() for c in part]))
        report.embedded += len(part)
        if progress:
            progress(report.embedded, total)
    gone = [cid for cid in target_meta if cid not in seen]
    target.delete_ids(gone)
    report.deleted = len(gone)
    for start in range(0, len(relabel), PAGE):
        changed = relabel[start : start + PAGE]
        target.collection.update(
            ids=[cid for cid, _ in changed],
            metadatas=[meta for _, meta in changed],
        )
    report.relabelled = len(relabel)
    return report


def _collection_names(client: Any) -> list[str]:
    return [c.name if hasattr(c, "name") else str(c) for c in client.list_collections()]


def _direct(run: Callable[[], T]) -> T:
    return run()


class EmbedderActivation:
    """One activation or rollback at a time for a set of components.

    `exclusive` runs the final catch-up and swap where nothing else writes the indexes (the
    server passes its ingestion thread; the CLI holds the data dir's writer lock and runs it
    directly)."""

    def __init__(
        self,
        components: Components,
        exclusive: Exclusive[Any] = _direct,
        load_embedder: Callable[[Generation], Embedder] | None = None,
    ) -> None:
        self.components = components
        self.generations = Generations(components.settings.data_dir)
        self.exclusive = exclusive
        self.load_embedder = load_embedder or components.embedder_for
        self.status = ActivationStatus()
        self._running = threading.Lock()
        self.before_swap: Callable[[], None] | None = None  # test hook

    @property
    def running(self) -> bool:
        return self._running.locked()

    def activate(self, model: Path) -> Generation:
        """Install `model` as a new generation and switch to it. On failure the new
        generation's files and collection are removed and the current one keeps serving."""
        with self._guard():
            target = self.generations.install(model)
            self.status.target = target.number
            try:
                return self._switch(target)
            except BaseException:
                if self.generations.current.number != target.number:
                    self._drop(target)
                raise

    def rollback(self) -> Generation:
        """Switch back to the previous generation (its collection is caught up first)."""
        with self._guard():
            _, previous = self.generations.read()
            if previous is None:
                raise GenerationError("nothing to roll back to: no embedder was activated")
            self.status.target = previous.number
            return self._switch(previous)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        if not self._running.acquire(blocking=False):
            raise GenerationError("an embedder activation is already running")
        self.status = ActivationStatus(phase="embedding", started_at=time.time())
        try:
            yield
        except BaseException as exc:
            self.status.phase, self.status.error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        else:
            self.status.phase = "done"
        finally:
            self.status.finished_at = time.time()
            self._running.release()

    def _drop(self, generation: Generation) -> None:
        client = self.components.store.client
        if generation.collection in _collection_names(client):
            client.delete_collection(generation.collection)
        current, previous = self.generations.read()
        self.generations.discard({current.number} | ({previous.number} if previous else set()))

    def _progress(self, done: int, total: int) -> None:
        self.status.done, self.status.total = done, total

    def _switch(self, target: Generation) -> Generation:
        current, _ = self.generations.read()
        if target.number == current.number:
            raise GenerationError(f"{target.describe()} is already active")
        source = self.components.store
        embedder = self.load_embedder(target)
        store = ChromaStore(
            source.path,
            target.collection,
            client=source.client,
            embedder_identity=getattr(embedder, "identity", None),
        )
        first = sync_collection(source, store, embedder, progress=self._progress)
        log.info("embedder generation %s: %s", target.number, first)
        if self.before_swap:
            self.before_swap()

        def swap() -> SyncReport:
            self.status.phase = "swapping"
            # Nothing writes now: copy what ingestion changed during the bulk pass, then swap.
            caught_up = sync_collection(self.components.store, store, embedder)
            self.generations.write(target, current)
            self.components.use_embedder(embedder, store)
            self._clean_up(keep={target.number, current.number}, store=store)
            return caught_up

        second = self.exclusive(swap)
        self.status.report = {
            "embedded": first.embedded + second.embedded,
            "deleted": first.deleted + second.deleted,
            "relabelled": first.relabelled + second.relabelled,
        }
        return target

    def _clean_up(self, keep: set[int], store: ChromaStore) -> None:
        """Drop the collections and model copies of generations rollback can no longer reach."""
        current, previous = self.generations.read()
        wanted = {current.collection} | ({previous.collection} if previous else set())
        for name in _collection_names(store.client):
            if name.startswith(COLLECTION) and name not in wanted:
                store.client.delete_collection(name)
                log.info("deleted collection %s of a retired embedder generation", name)
        self.generations.discard(keep)
