"""One serving index (embedder + Chroma collection + keyword index + searcher) that search and
ingestion both read: an embedder swap replaces that one object for both, a question in flight
finishes on the index it started with (real embedder and Chroma, fake model)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ingest.pipeline import IngestPipeline
from retriever.answer_types import DoneEvent, SourcesEvent
from retriever.components import Components
from retriever.embedder import SentenceTransformerEmbedder
from retriever.question import Question
from retriever.serving import IndexSlot, ServingIndex
from retriever.store import ChromaStore
from tests.conftest import write


class _Counting:
    """The real embedder under another identity, counting the texts it embeds."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner, self.dimension, self.max_tokens = inner, inner.dimension, inner.max_tokens
        self.identity = "counting-test-embedder"
        self.texts = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.embed(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def test_search_and_ingestion_hold_the_same_slot(
    components: Components, pipeline: IngestPipeline
) -> None:
    assert components.answers.serving is components.serving
    assert pipeline.serving is components.serving
    index = components.index
    assert pipeline.store is index.store and pipeline.embedder is index.embedder
    assert components.answers.searcher is index.searcher
    assert index.searcher.store is index.store and index.searcher.keyword is index.keyword


def test_an_embedder_swap_replaces_one_object_for_search_and_ingestion(
    components: Components,
    pipeline: IngestPipeline,
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
) -> None:
    docs = tmp_path / "docs"
    pipeline.ingest([write(docs / "leave.md", "Parental leave lasts 16 weeks at full pay.\n")])
    old = components.index
    # A question started before the swap: retrieval (and its sources) come before the first event.
    events = components.answers.stream(Question("How long is parental leave?"))
    first = next(events)
    assert isinstance(first, SourcesEvent) and first.sources[0].path.endswith("leave.md")

    tuned = _Counting(embedder)
    store = ChromaStore(old.store.path, "swap_test", client=old.store.client)
    components.use_embedder(tuned, store)

    new = components.index
    assert new is not old and isinstance(new, ServingIndex)
    assert (new.embedder, new.store, new.keyword) == (tuned, store, old.keyword)
    assert old.store is not store and old.searcher.store is old.store  # the old one is intact
    # Every reader sees the new index, through the one slot.
    assert components.answers.searcher is new.searcher and new.searcher.store is store
    assert components.answers.evidence.embedder is new.searcher.embedder
    assert pipeline.embedder is tuned and pipeline.store is store
    assert pipeline.chunker.max_tokens == tuned.max_tokens - 2

    # The question in flight finishes on the index it started with.
    *_, done = list(events)
    assert isinstance(done, DoneEvent) and not done.answer.abstained
    assert done.answer.sources[0].path.endswith("leave.md")

    # Ingestion now embeds with the new embedder into the new collection only.
    before = old.store.count()
    pipeline.ingest([write(docs / "backups.md", "Backups run every night at 02:00.\n")])
    assert tuned.texts > 0 and store.count() > 0 and old.store.count() == before
    found = components.answers.ask(Question("When do backups run?", top_k=1, mode="dense"))
    assert found.sources[0].path.endswith("backups.md")


def test_the_slot_builds_its_index_once_and_swaps_it_whole(
    components: Components,
) -> None:
    built: list[ServingIndex] = []
    started = threading.Barrier(4)

    def build() -> ServingIndex:
        built.append(components.index)
        return built[-1]

    slot = IndexSlot(build)
    assert not slot.built
    seen: list[ServingIndex] = []

    def read() -> None:
        started.wait()
        seen.append(slot.index)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1 and all(index is built[0] for index in seen) and slot.built
    other = components.index_for(components.embedder, components.store)
    assert slot.swap(other) is built[0] and slot.index is other
