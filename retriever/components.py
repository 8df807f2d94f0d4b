"""Composition root for the retrieval side: picks backends from settings, loads lazily."""

from __future__ import annotations

import logging
import os
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

from config.settings import Settings
from retriever.abstention import AbstentionThresholds
from retriever.answer import AnswerService
from retriever.audit import AuditLog
from retriever.batching import question_embedder
from retriever.embedder import Embedder, embedder_identity, load_embedder
from retriever.escalation import Escalation, EscalationRefused, check_policy
from retriever.generation import (
    CTransformersGenerator,
    FakeGenerator,
    GenerationError,
    GenerationParams,
    Generator,
    ModelUnavailable,
    OpenAIGenerator,
)
from retriever.gguf_convert import fast_cpu_gguf
from retriever.keyword import KeywordIndex
from retriever.model_process import llamacpp_specs, start_llamacpp
from retriever.models import (
    ModelNotFoundError,
    bundled_embedder_path,
    bundled_llm_path,
    resolve_model_path,
)
from retriever.prompt import fixed_prefix
from retriever.rerank import BiEncoderReranker, CrossEncoderReranker, Reranker
from retriever.search import HybridSearcher
from retriever.serving import IndexSlot, ServingIndex
from retriever.slots import GenerationSlots
from retriever.store import ChromaStore, http_client
from retriever.tuning.generations import Generation, Generations
from retriever.word_roles import wording_words

log = logging.getLogger(__name__)


class Components:
    """Each part is built on first use, so `ingest` never loads the SLM. The embedder, its
    Chroma collection, the keyword index and the searcher are one `ServingIndex` in
    `self.serving`, which the answer service and the ingestion pipeline hold too: an
    embedder swap (`use_embedder`) replaces that one object."""

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder | None = None,
        generator: Generator | None = None,
    ) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._given_embedder = embedder  # tests and benchmarks bring their own
        if generator is not None:
            self.__dict__["generator"] = generator
        self.serving = IndexSlot(self._first_index)

    @cached_property
    def generation(self) -> Generation:
        """The active embedder generation: a tuned model and its collection once one was
        activated (`enclave tune activate`), else the configured model."""
        return Generations(self.settings.data_dir).current

    @property
    def index(self) -> ServingIndex:
        """What search and ingestion read now (built on first use)."""
        return self.serving.index

    @property
    def embedder(self) -> Embedder:
        return self.index.embedder

    @property
    def store(self) -> ChromaStore:
        # Before the first index is built, its store alone: opening the collection (and
        # checking which embedder made it) loads no model.
        return self.index.store if self.serving.built else self._first_store

    @property
    def searcher(self) -> HybridSearcher:
        return self.index.searcher

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
        s = self.settings
        return load_embedder(
            self.embedder_path(generation), s.embed_backend, s.embed_batch_size, s.model_cache_dir
        )

    def _first_index(self) -> ServingIndex:
        """Called by the slot, under its lock: once."""
        store = self._first_store
        embedder = self._given_embedder
        if embedder is None:
            embedder = self.embedder_for(self.generation)
        return self.index_for(embedder, store)

    @cached_property
    def _first_store(self) -> ChromaStore:
        """The active generation's collection, claimed for its embedder."""
        with self._lock:
            embedder = self._given_embedder
            if embedder is not None:  # the caller's: its own identity, if it says
                identity = getattr(embedder, "identity", None)
            else:
                # Model + backend of the vectors: the store refuses an index made by another.
                identity = embedder_identity(self.embedder_path(), self.settings.embed_backend)
            return ChromaStore(
                self.settings.chroma_dir,
                self.generation.collection,
                client=self.chroma_client,
                embedder_identity=identity,
            )

    def index_for(self, embedder: Embedder, store: ChromaStore) -> ServingIndex:
        """A serving index over this embedder and its collection (and the one keyword
        index), with a searcher configured from the settings."""
        s = self.settings
        # Question time (queries, reranking, evidence checks) embeds through one embedder.
        question = question_embedder(embedder)
        reranker = self.reranker_for(question)
        searcher = HybridSearcher(
            question,
            store,
            self.keyword,
            candidates_k=s.candidates_k,
            rrf_k=s.rrf_k,
            dense_weight=s.dense_weight,
            bm25_weight=s.bm25_weight,
            reranker=reranker,
            rerank_candidates=s.rerank_candidates,
        )
        return ServingIndex(embedder, store, self.keyword, searcher)

    @cached_property
    def chroma_client(self) -> Any:
        """A Chroma server's client when `chroma_host` is set; None: embedded in data_dir."""
        s = self.settings
        if not s.chroma_host:
            return None
        return http_client(s.chroma_host, s.chroma_port, s.chroma_token, s.chroma_ssl)

    def use_embedder(self, embedder: Embedder, store: ChromaStore) -> None:
        """Serve from another embedder and its collection: one new `ServingIndex` replaces
        the old one for search and ingestion alike. Questions in flight finish on the index
        they started with; the next ones get the new one."""
        index = self.index_for(embedder, store)
        with self._lock:
            self.__dict__.pop("generation", None)  # active.json names the new one now
        self.serving.swap(index)

    @cached_property
    def keyword(self) -> KeywordIndex:
        with self._lock:
            return KeywordIndex(self.settings.database_for(self.settings.keyword_path))

    def reranker_for(self, embedder: Embedder) -> Reranker | None:
        s = self.settings
        if s.reranker == "cross-encoder":
            return self.cross_encoder
        if s.reranker == "bi-encoder":
            return BiEncoderReranker(embedder)  # the serving embedder's, at question time
        return None

    @cached_property
    def cross_encoder(self) -> Reranker:
        """Independent of the embedder: loaded once, kept across embedder swaps."""
        s = self.settings
        if not s.reranker_model:
            raise ModelNotFoundError(
                "reranker = 'cross-encoder' needs reranker_model: the path of a local "
                "cross-encoder (none ships with Enclave)"
            )
        return CrossEncoderReranker(resolve_model_path(s.reranker_model))

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
            draft_tokens=s.llm_draft_tokens,
        )
        return AnswerService(
            self.serving,
            self.generator,
            params,
            top_k=s.top_k,
            mode=s.retrieval_mode,
            abstention=AbstentionThresholds(
                min_relevance=s.min_relevance,
                min_coverage=s.min_question_coverage,
                min_key_coverage=s.min_key_coverage,
                min_sentence_similarity=s.min_sentence_similarity,
                names_must_occur=s.abstain_on_unknown_names,
                reworded_similarity=s.reworded_similarity,
            ),
            answer_mode=s.answer_mode,
            support_threshold=s.support_threshold,
            focus_sentences=s.focus_sentences,
            slots=self.slots,
            timeout_s=s.llm_timeout_s,
            escalation=self.escalation,
            candidates=s.answer_candidates,
        )

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(
            self.settings.database_for(self.settings.audit_path),
            self.settings.audit_retention_days,
        )

    @cached_property
    def escalation(self) -> Escalation | None:
        """The larger model, if the policy allows the configured endpoint (else None, logged)."""
        s = self.settings
        if s.escalation_policy == "never":
            return None
        try:
            check_policy(s.escalation_policy, s.escalation_endpoint, s.escalation_on_premises_hosts)
        except EscalationRefused as exc:
            log.warning("escalation disabled: %s", exc)
            return None
        generator = OpenAIGenerator(
            s.escalation_endpoint,
            s.escalation_model,
            s.escalation_api_key,
            context_size=s.llm_context,
            timeout_s=s.llm_timeout_s,
        )
        slots = GenerationSlots(s.escalation_slots, s.escalation_queue)
        return Escalation(generator, s.escalation_endpoint, self.audit, slots)

    @cached_property
    def slots(self) -> GenerationSlots:
        """Admission to the generator, shared by every request of this process, or of every
        web process when `redis_url` is set."""
        s = self.settings
        if s.redis_url:
            import redis

            from retriever.shared_slots import RedisGenerationSlots

            return RedisGenerationSlots(
                redis.Redis.from_url(s.redis_url),
                s.generation_slots,
                s.generation_queue,
                lease_s=s.llm_timeout_s + 60,
            )
        return GenerationSlots(s.generation_slots, s.generation_queue)

    def warm_up(self) -> None:
        """Load the models and page in the indexes now, so the first question is not the slow
        one: a search (Chroma loads its vector index on the first query) and, for llama.cpp,
        the system prompt evaluated into the KV cache that later questions reuse."""
        self.embedder.embed(["warm up"])
        wording_words("warm up")  # the tagger of the key-term check (retriever/word_roles.py)
        if self.store.count():
            self.searcher.search("warm up", 1)
        _ = self.keyword
        prime = getattr(self.generator, "prime", None)
        if prime is not None:
            try:
                prime(fixed_prefix())
            except ModelUnavailable as exc:  # the model's process restarts; the rest serves
                log.error("the model could not warm up: %s", exc)
        else:
            self.generator.count_tokens("warm up")


def build_generator(settings: Settings) -> Generator:
    backend = settings.llm_backend
    if backend == "fake":
        return FakeGenerator(settings.llm_context)
    if backend == "openai":
        if not settings.llm_endpoint:
            raise GenerationError('llm_backend "openai" needs llm_endpoint (the server\'s URL)')
        return OpenAIGenerator(
            settings.llm_endpoint,
            settings.llm_model,
            settings.llm_api_key,
            context_size=settings.llm_context,
            timeout_s=settings.llm_timeout_s,
        )
    bundled = None if settings.llm_model else bundled_llm_path()
    path = resolve_model_path(settings.llm_model, bundled)
    threads = settings.llm_threads or os.cpu_count() or 1
    if backend == "ctransformers":
        return CTransformersGenerator(path, settings.llm_context, threads)
    fast, name = path, path.name
    if settings.llm_fast_cpu_weights:
        fast = fast_cpu_gguf(path, settings.model_cache_dir)
        if fast != path:
            name = f"{path.name} (run as Q8_0)"
    # llama.cpp runs in a supervised child process: a crash in its native code fails one
    # answer, never the server (retriever.model_process).
    specs = llamacpp_specs(
        path, fast, name, settings.llm_context, threads, settings.llm_flash_attention
    )
    return start_llamacpp(
        specs, path, settings.llm_cpu_profile, settings.data_dir, settings.llm_timeout_s
    )
