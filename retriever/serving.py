"""The serving index: the embedder, the Chroma collection its vectors are in, the keyword index
and the searcher over the three, as one object that search (`AnswerService`, MCP's `search`)
and ingestion (`IngestPipeline`) both read.

An embedder swap (`enclave tune activate`, `rollback`) builds a new `ServingIndex` and puts
it in the one `IndexSlot` everyone holds: a question in flight keeps what it retrieved from
the index it started with, the next one searches the new one, and no reader can see the new
embedder with the old collection (the parts change together, as one object)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from retriever.embedder import Embedder
from retriever.keyword import KeywordIndex
from retriever.search import HybridSearcher
from retriever.store import ChromaStore


@dataclass(frozen=True)
class ServingIndex:
    embedder: Embedder  # what ingestion embeds chunks with (the searcher's own may coalesce)
    store: ChromaStore  # the collection of this embedder's vectors
    keyword: KeywordIndex  # shared by every embedder: BM25 does not depend on it
    searcher: HybridSearcher  # over `store` and `keyword`, embedding queries like `embedder`


class IndexSlot:
    """Holds the current `ServingIndex`, built on first use (so `enclave ingest` never
    builds what only questions need before it needs it, and nothing loads at import).
    `swap` replaces it whole."""

    def __init__(self, build: Callable[[], ServingIndex]) -> None:
        self._build = build
        self._index: ServingIndex | None = None
        self._lock = threading.Lock()

    @property
    def index(self) -> ServingIndex:
        index = self._index
        if index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._build()
                index = self._index
        return index

    @property
    def built(self) -> bool:
        return self._index is not None

    def swap(self, index: ServingIndex) -> ServingIndex | None:
        """Serve `index` from now on; returns the one it replaces (None if none was built)."""
        with self._lock:
            old, self._index = self._index, index
        return old
