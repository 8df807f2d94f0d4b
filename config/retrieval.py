"""Finding the passages for a question: dense, BM25, fusion, reranking (retriever/search.py,
rerank.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from config.section import Section


class RetrievalSettings(Section):
    model_config = ConfigDict(title="Retrieval")

    retrieval_mode: Literal["hybrid", "dense", "bm25"] = Field("hybrid")
    top_k: int = Field(4, ge=1, le=50, description="Sources given to the model.")
    answer_candidates: int = Field(
        8,
        ge=0,
        le=200,
        description="Passages an answer's sources are chosen from: the top_k whose best "
        "sentence answers the question best, in search order. top_k or less: the first top_k.",
    )
    candidates_k: int = Field(30, ge=1, le=1000, description="Candidates per retriever.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant.")
    dense_weight: float = Field(1.0, ge=0, description="Weight of dense ranks in fusion.")
    bm25_weight: float = Field(1.0, ge=0, description="Weight of BM25 ranks in fusion.")
    reranker: Literal["none", "cross-encoder", "bi-encoder"] = Field(
        "none", description="Second-stage reranking of the fused candidates."
    )
    reranker_model: str = Field("", description="Local path of a cross-encoder model.")
    rerank_candidates: int = Field(20, ge=1, le=500, description="Candidates reranked.")
