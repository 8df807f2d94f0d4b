"""Optional second-stage reranking of the fused candidates."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from retriever.embedder import Embedder


class Reranker(Protocol):
    def score(self, query: str, texts: list[str]) -> list[float]: ...


class CrossEncoderReranker:
    """A sentence-transformers cross-encoder read from a local path (no weights ship offline:
    point `reranker_model` at one, e.g. a copy of cross-encoder/ms-marco-MiniLM-L-6-v2)."""

    def __init__(self, path: Path, max_length: int = 512) -> None:
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(
            str(path), device="cpu", max_length=max_length, local_files_only=True, num_labels=1
        )

    def score(self, query: str, texts: list[str]) -> list[float]:
        if not texts:
            return []
        scores = self.model.predict([(query, t) for t in texts], show_progress_bar=False)
        return [float(s) for s in np.asarray(scores).reshape(-1)]


class BiEncoderReranker:
    """Cosine of the query and each full candidate text with an embedder: a cheap reranker that
    needs no extra weights (it re-reads each candidate whole, title and headings included)."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def score(self, query: str, texts: list[str]) -> list[float]:
        if not texts:
            return []
        vectors = self.embedder.embed([query, *texts])
        return [float(v) for v in vectors[1:] @ vectors[0]]
