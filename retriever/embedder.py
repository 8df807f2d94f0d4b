"""Sentence-transformers embedder loaded from a local path (never from a hub)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

import retriever.privacy  # noqa: F401  (offline switches before the HF imports)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class Embedder(Protocol):
    dimension: int
    max_tokens: int

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


class SentenceTransformerEmbedder:
    """Normalized float32 embeddings, batched; token counts from the model's own tokenizer."""

    def __init__(self, path: Path, batch_size: int = 32, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.path = path
        self.batch_size = batch_size
        self.model: SentenceTransformer = SentenceTransformer(
            str(path), device=device, local_files_only=True
        )
        self.dimension = int(self.model.get_embedding_dimension() or 0)
        self.max_tokens = int(self.model.max_seq_length or 256)
        self.tokenizer = self.model.tokenizer

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        """Tokens the model reads for `text`, without the [CLS]/[SEP] it adds."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))
