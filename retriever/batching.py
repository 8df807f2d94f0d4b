"""How question-time texts (queries, the sentences the evidence checks compare) are embedded.

`CoalescingEmbedder`: requests that arrive while the embedder is busy wait together and go
through it as one batch when it frees up; a request that finds it idle runs at once. No timer,
so a lone query pays nothing extra, and under load one forward pass serves many queries instead
of several passes fighting over the same cores.

`UnbatchedEmbedder`: one forward pass per text, for an embedder whose vectors depend on their
batch-mates (int8 with dynamic quantization). Batched, the same question could be retrieved,
focused and checked differently depending on what else was embedded with it: a concurrent
question, or which of its sentences were already in the evidence check's cache.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from retriever.embedder import Embedder


@dataclass
class _Request:
    texts: list[str]
    vectors: np.ndarray | None = None
    error: BaseException | None = None
    done: bool = False


class CoalescingEmbedder:
    """An Embedder that merges the calls of concurrent threads into batches."""

    def __init__(self, inner: Embedder, max_batch: int = 64) -> None:
        self.inner = inner
        self.dimension = inner.dimension
        self.max_tokens = inner.max_tokens
        self.identity = getattr(inner, "identity", None)
        self.max_batch = max_batch
        self.batches = 0  # forward calls made, for tests and benchmarks
        self._queue: list[_Request] = []
        self._busy = False
        self._changed = threading.Condition()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed(self, texts: list[str]) -> np.ndarray:
        request = _Request(list(texts))
        with self._changed:
            self._queue.append(request)
        while True:
            with self._changed:
                while self._busy and not request.done:
                    self._changed.wait()
                if request.done:
                    break
                # Idle embedder: this thread runs what is queued, oldest first.
                self._busy = True
                batch = self._take()
            self._run(batch)
        if request.error is not None:
            raise request.error
        assert request.vectors is not None
        return request.vectors

    def _take(self) -> list[_Request]:
        batch: list[_Request] = []
        size = 0
        while self._queue and (not batch or size + len(self._queue[0].texts) <= self.max_batch):
            size += len(self._queue[0].texts)
            batch.append(self._queue.pop(0))
        return batch

    def _run(self, batch: list[_Request]) -> None:
        vectors: np.ndarray | None = None
        error: BaseException | None = None
        try:
            vectors = self.inner.embed([t for r in batch for t in r.texts])
        except BaseException as exc:  # handed to every waiting caller
            error = exc
        with self._changed:
            offset = 0
            for r in batch:
                if vectors is not None:
                    r.vectors = vectors[offset : offset + len(r.texts)]
                r.error, r.done = error, True
                offset += len(r.texts)
            self.batches += 1
            self._busy = False
            self._changed.notify_all()


class UnbatchedEmbedder:
    """An Embedder that embeds each text in a forward pass of its own, so that a text's vector
    is the same whatever is embedded beside it or at the same time (about 25% slower than one
    batch for 40 sentences, int8 MiniLM on 2 cores)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.dimension = inner.dimension
        self.max_tokens = inner.max_tokens
        self.identity = getattr(inner, "identity", None)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate([self.inner.embed([text]) for text in texts])


def question_embedder(embedder: Embedder) -> Embedder:
    """The embedder for question time: concurrent calls share batches where the vectors do
    not depend on the batch (`batch_invariant`, true unless an embedder says otherwise), else
    every text is embedded alone."""
    if getattr(embedder, "batch_invariant", True):
        return CoalescingEmbedder(embedder)
    return UnbatchedEmbedder(embedder)
