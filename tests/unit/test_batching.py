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


def test_question_time_vectors_of_an_int8_embedder_do_not_depend_on_their_batch() -> None:
    import os
    from pathlib import Path

    from retriever.batching import UnbatchedEmbedder, question_embedder
    from retriever.embedder import load_embedder
    from retriever.models import bundled_embedder_path

    cache = Path(os.environ["ENCLAVE_EMBED_CACHE_DIR"])
    int8 = load_embedder(bundled_embedder_path(), "onnx-int8", 32, cache)
    fp32 = load_embedder(bundled_embedder_path(), "onnx", 32, cache)
    a = "The large flapping ears of an elephant are very important for temperature regulation."
    b = "Lincoln was born in a one-room log cabin in Hardin County, Kentucky, in 1809. " * 3
    # Why: int8 quantizes each forward pass with one activation scale, so `a` moves with `b`.
    assert not np.array_equal(int8.embed([a])[0], int8.embed([a, b])[0])
    np.testing.assert_array_equal(fp32.embed([a])[0], fp32.embed([a, b])[0])

    question_time = question_embedder(int8)
    assert isinstance(question_time, UnbatchedEmbedder)
    alone = question_time.embed([a])[0]
    np.testing.assert_array_equal(question_time.embed([b, a])[1], alone)
    assert question_time.embed([]).shape == (0, int8.dimension)
    # A batch-invariant embedder keeps sharing forward passes between concurrent questions.
    assert isinstance(question_embedder(fp32), CoalescingEmbedder)
