"""Embedders loaded from a local sentence-transformers model (never from a hub): torch
(sentence-transformers itself) or ONNX Runtime (fp32 or int8, see onnx_embedder.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

import retriever.privacy  # noqa: F401  (offline switches before the HF imports)
from retriever.onnx_embedder import OnnxEmbedder, export_onnx
from retriever.token_batches import batches_by_length

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnx", "onnx-int8")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


class Embedder(Protocol):
    dimension: int
    max_tokens: int

    def embed(self, texts: list[str]) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


_digests: dict[tuple[str, int, float], str] = {}


def model_id(path: Path) -> str:
    """A readable name plus a digest of the model's config and weights: the same model at
    another path has the same id, a retrained one (same name) does not."""
    label = path.name if path.name not in ("", "model") else path.parent.name
    files = sorted(
        f
        for f in path.rglob("*")
        if f.is_file() and (f.suffix in WEIGHT_SUFFIXES or f.name == "config.json")
    )
    sha = hashlib.sha256()
    for file in files:
        stat = file.stat()
        key = (str(file), stat.st_size, stat.st_mtime)
        if key not in _digests:
            _digests[key] = hashlib.sha256(file.read_bytes()).hexdigest()
        sha.update(f"{file.relative_to(path)}:{_digests[key]}\n".encode())
    return f"{label}-{sha.hexdigest()[:12]}"


def embedder_identity(path: Path, backend: str) -> str:
    """What a vector index must record: the model and how it was run (an int8 model's
    vectors differ from the fp32 ones, slightly but not interchangeably)."""
    return f"{model_id(path)}/{backend}"


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
        self.identity = embedder_identity(path, "torch")

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        lengths = [len(ids) for ids in self.tokenizer(texts, truncation=True)["input_ids"]]
        for part in batches_by_length(lengths, self.batch_size):
            out[part] = self.model.encode(
                [texts[i] for i in part],
                batch_size=len(part),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return out

    def count_tokens(self, text: str) -> int:
        """Tokens the model reads for `text`, without the [CLS]/[SEP] it adds."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))


def load_embedder(
    path: Path, backend: str, batch_size: int, cache_dir: Path, threads: int = 0
) -> Embedder:
    """The embedder for a backend; ONNX ones are exported into `cache_dir` on first use."""
    if backend == "torch":
        return SentenceTransformerEmbedder(path, batch_size=batch_size)
    if backend not in BACKENDS:
        raise ValueError(f"unknown embed_backend {backend!r}; use one of {', '.join(BACKENDS)}")
    quantized = backend == "onnx-int8"
    onnx_file = export_onnx(path, model_id(path), cache_dir, quantize=quantized)
    return OnnxEmbedder(
        path,
        onnx_file,
        embedder_identity(path, backend),
        batch_size=batch_size,
        threads=threads,
        batch_invariant=not quantized,
    )
