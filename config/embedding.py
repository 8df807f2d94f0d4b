"""The embedder and the chunks it embeds (retriever/embedder.py, onnx_embedder.py,
ingest/chunker.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from config.section import Section


class EmbeddingSettings(Section):
    model_config = ConfigDict(title="Embedding and chunking")

    embed_model: str = Field(
        "", description="Path of a sentence-transformers model; empty: bundled."
    )
    embed_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx-int8", description="How the embedder runs: torch, or ONNX Runtime fp32/int8."
    )
    embed_cache_dir: str = Field(
        "", description="Where ONNX exports of the embedder are kept; empty: data_dir/models."
    )
    embed_batch_size: int = Field(32, ge=1, le=1024, description="Texts per embedding batch.")
    chunk_tokens: int = Field(200, ge=32, le=512, description="Chunk size in embedder tokens.")
    chunk_overlap_tokens: int = Field(32, ge=0, le=256, description="Overlap between chunks.")
