"""Composition root for the retrieval side: picks backends from settings, loads lazily."""

from __future__ import annotations

import os
import threading
from functools import cached_property
from pathlib import Path

from retriever.answer import AnswerService
from retriever.embedder import Embedder, SentenceTransformerEmbedder
from retriever.generation import (
    CTransformersGenerator,
    FakeGenerator,
    GenerationParams,
    Generator,
    LlamaCppGenerator,
)
from retriever.keyword import KeywordIndex
from retriever.models import (
    ModelNotFoundError,
    bundled_embedder_path,
    bundled_llm_path,
    resolve_model_path,
)
from retriever.rerank import BiEncoderReranker, CrossEncoderReranker, Reranker
from retriever.search import HybridSearcher
from retriever.settings import Settings
from retriever.slots import GenerationSlots
from retriever.store import ChromaStore
from retriever.tuning.generations import Generation, Generations


class Components:
    """Each part is built on first use, so `ingest` never loads the SLM."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder | None = None,
        generator: Generator | None = None,
    ) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        if embedder is not None:
            self.__dict__["embedder"] = embedder
        if generator is not None:
            self.__dict__["generator"] = generator

    @cached_property
    def generation(self) -> Generation:
        """The active embedder generation: a tuned model and its collection once one was
        activated (`enclave tune activate`), else the configured model."""
        return Generations(self.settings.data_dir).current

    @cached_property
    def embedder(self) -> Embedder:
        with self._lock:
            return self.embedder_for(self.generation)

    def embedder_path(self, generation: Generation | None = None) -> Path:
        """The model folder of a generation (default: the active one)."""
        tuned = (generation or self.generation).model_path(self.settings.data_dir)
        if tuned is not None:
            return resolve_model_path(str(tuned))
        return resolve_model_path(
            self.settings.embed_model,
            None if self.settings.embed_model else bundled_embedder_path(),
        )

    def embedder_for(self, generation: Generation) -> Embedder:
        return SentenceTransformerEmbedder(
            self.embedder_path(generation), batch_size=self.settings.embed_batch_size
        )

    @cached_property
    def store(self) -> ChromaStore:
        with self._lock:
            return ChromaStore(self.settings.chroma_dir, self.generation.collection)

    def use_embedder(self, embedder: Embedder, store: ChromaStore) -> None:
        """Serve from another embedder and its collection. Questions in flight finish on the
        searcher they started with; the next ones get the new one (one attribute swap)."""
        with self._lock:
            self.__dict__.pop("generation", None)
            self.__dict__.update(embedder=embedder, store=store)
            for name in ("reranker", "searcher"):  # both may hold the old embedder
                self.__dict__.pop(name, None)
            searcher = self.searcher
            if "answers" in self.__dict__:
                self.answers.searcher = searcher

    @cached_property
    def keyword(self) -> KeywordIndex:
        with self._lock:
            return KeywordIndex(self.settings.keyword_path)

    @cached_property
    def searcher(self) -> HybridSearcher:
        s = self.settings
        return HybridSearcher(
            self.embedder,
            self.store,
            self.keyword,
            candidates_k=s.candidates_k,
            rrf_k=s.rrf_k,
            dense_weight=s.dense_weight,
            bm25_weight=s.bm25_weight,
            reranker=self.reranker,
            rerank_candidates=s.rerank_candidates,
        )

    @cached_property
    def reranker(self) -> Reranker | None:
        s = self.settings
        if s.reranker == "cross-encoder":
            if not s.reranker_model:
                raise ModelNotFoundError(
                    "reranker = 'cross-encoder' needs reranker_model: the path of a local "
                    "cross-encoder (none ships with Enclave)"
                )
            return CrossEncoderReranker(resolve_model_path(s.reranker_model))
        if s.reranker == "bi-encoder":
            return BiEncoderReranker(self.embedder)
        return None

    @cached_property
    def generator(self) -> Generator:
        with self._lock:
            return build_generator(self.settings)

    @cached_property
    def answers(self) -> AnswerService:
        s = self.settings
        params = GenerationParams(
            max_tokens=s.llm_max_tokens,
            temperature=s.llm_temperature,
            repeat_penalty=s.llm_repeat_penalty,
        )
        return AnswerService(
            self.searcher,
            self.generator,
            params,
            top_k=s.top_k,
            mode=s.retrieval_mode,
            min_relevance=s.min_relevance,
            answer_mode=s.answer_mode,
            support_threshold=s.support_threshold,
            min_coverage=s.min_question_coverage,
            focus_sentences=s.focus_sentences,
            slots=self.slots,
        )

    @cached_property
    def slots(self) -> GenerationSlots:
        """Admission to the generator, shared by every request of this process."""
        return GenerationSlots(self.settings.generation_slots, self.settings.generation_queue)

    def warm_up(self) -> None:
        """Load the models now, so the first question is not the slow one."""
        self.embedder.embed(["warm up"])
        self.generator.count_tokens("warm up")
        _ = self.store, self.keyword


def build_generator(settings: Settings) -> Generator:
    backend = settings.llm_backend
    if backend == "fake":
        return FakeGenerator(settings.llm_context)
    bundled = None if settings.llm_model else bundled_llm_path()
    path = resolve_model_path(settings.llm_model, bundled)
    threads = settings.llm_threads or os.cpu_count() or 1
    if backend == "ctransformers":
        return CTransformersGenerator(path, settings.llm_context, threads)
    return LlamaCppGenerator(path, settings.llm_context, threads)
