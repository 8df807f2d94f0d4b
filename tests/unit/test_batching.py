"""Concurrent queries embedded together, each caller getting its own rows back."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from retriever.batching import CoalescingEmbedder


class SlowEmbedder:
    """Deterministic vectors (the text's length and first letter), a little slow per call."""

    dimension = 2
    max_tokens = 16

    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        time.sleep(0.05)
        if self.fail_on in texts:
            raise RuntimeError("model failed")
        return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def _ask_concurrently(embedder: CoalescingEmbedder, texts: list[str]) -> dict[str, object]:
    results: dict[str, object] = {}
    barrier = threading.Barrier(len(texts))

    def ask(text: str) -> None:
        barrier.wait()
        try:
            results[text] = embedder.embed([text])
        except RuntimeError as exc:
            results[text] = exc

    threads = [threading.Thread(target=ask, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    return results


def test_concurrent_callers_share_batches_and_get_their_own_rows() -> None:
    inner = SlowEmbedder()
    texts = [f"{chr(97 + i)}{'x' * i}" for i in range(12)]
    results = _ask_concurrently(CoalescingEmbedder(inner), texts)
    for text in texts:
        np.testing.assert_array_equal(results[text], [[len(text), ord(text[0])]])
    assert len(inner.calls) < len(texts)  # some calls carried several queries
    assert sorted(t for call in inner.calls for t in call) == sorted(texts)


def test_a_lone_call_goes_straight_through() -> None:
    inner = SlowEmbedder()
    embedder = CoalescingEmbedder(inner)
    vectors = embedder.embed(["alpha", "beta"])
    assert vectors.shape == (2, 2) and inner.calls == [["alpha", "beta"]]
    assert embedder.batches == 1 and embedder.dimension == 2


def test_batches_respect_the_size_limit() -> None:
    inner = SlowEmbedder()
    _ask_concurrently(CoalescingEmbedder(inner, max_batch=3), [f"q{i}" for i in range(10)])
    assert max(len(call) for call in inner.calls) <= 3


def test_a_failure_reaches_every_caller_of_that_batch_and_then_recovers() -> None:
    inner = SlowEmbedder(fail_on="boom")
    embedder = CoalescingEmbedder(inner)
    results = _ask_concurrently(embedder, ["boom", "b1", "c2", "d3"])
    assert isinstance(results["boom"], RuntimeError)
    with pytest.raises(RuntimeError):
        embedder.embed(["boom"])
    np.testing.assert_array_equal(embedder.embed(["ok"]), [[2, ord("o")]])
