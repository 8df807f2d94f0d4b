"""Question -> retrieval -> grounded prompt -> SLM -> cleaned, cited answer."""

from __future__ import annotations

import collections.abc
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from retriever.abstention import AbstentionThresholds, EvidenceCheck
from retriever.escalation import Escalation, EscalationClaim, read_in_background
from retriever.generation import GenerationError, GenerationParams, Generator
from retriever.grounding import (
    CITATION,
    Support,
    extract_answer,
    focus,
    split_sentences,
    support_for,
)
from retriever.prompt import NOT_FOUND, BuiltPrompt, build_prompt
from retriever.search import HybridSearcher, Mode, SearchResult
from retriever.slots import GenerationSlots
from retriever.types import Hit

log = logging.getLogger(__name__)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Phrases by which a model says it found nothing.
_ABSTAIN_PATTERNS = re.compile(
    r"could not find|couldn't find|cannot find|can't find|not (?:mentioned|stated|found|"
    r"provided|specified) in the (?:sources|documents|context)|no information",
    re.IGNORECASE,
)


@dataclass
class Source:
    n: int
    document_id: str
    path: str
    title: str
    page: int | None
    text: str
    score: float

    @classmethod
    def from_hit(cls, n: int, hit: Hit) -> Source:
        c = hit.chunk
        return cls(n, c.document_id, c.path, c.title, c.page, c.text, round(hit.score, 6))


@dataclass
class Answer:
    answer: str
    abstained: bool
    sources: list[Source]
    citations: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    supports: list[Support] = field(default_factory=list)
    dropped: int = 0  # answer sentences removed because no source supported them
    mode: str = "generative"
    model_cited: bool | None = None  # whether the model's own text cited a given source
    escalated: dict[str, Any] | None = None  # the larger model that answered, if one did
    abstention_reason: str | None = None  # why the passages could not answer, if they could not

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "abstained": self.abstained,
            "citations": self.citations,
            "sources": [vars(s) for s in self.sources],
            "supports": [
                {"n": s.n, "start": s.span.start, "end": s.span.end, "score": s.score}
                for s in self.supports
            ],
            "answer_mode": self.mode,
            "unsupported_sentences_removed": self.dropped,
            "model_cited": self.model_cited,
            "escalated": self.escalated,
            "abstention_reason": self.abstention_reason,
            "timings": self.timings,
        }


@dataclass(frozen=True)
class SourcesEvent:
    """The sources given to the model, numbered as the answer cites them."""

    sources: list[Source]


@dataclass(frozen=True)
class TokenEvent:
    """A piece of the model's raw text, before any check."""

    text: str


@dataclass(frozen=True)
class DoneEvent:
    """The checked answer, as `ask` returns it."""

    answer: Answer


@dataclass(frozen=True)
class WaitingEvent:
    """Nothing to show yet (an escalation is queued or writing): a streaming client is sent a
    keep-alive, which notices a client that has gone and so stops the escalation."""


AnswerEvent = SourcesEvent | TokenEvent | DoneEvent | WaitingEvent
AnswerStream = collections.abc.Generator[AnswerEvent, None, None]


def final_answer(events: Iterable[AnswerEvent]) -> Answer:
    for event in events:
        if isinstance(event, DoneEvent):
            return event.answer
    raise RuntimeError("the answer stream ended without an answer")


def clean_answer(text: str, n_sources: int) -> tuple[str, list[int]]:
    """Drop repeated sentences (small models loop) and citations of sources never given."""
    text = text.strip()
    kept: list[str] = []
    seen: set[str] = set()
    for sentence in _SENTENCE_END.split(text):
        key = CITATION.sub("", sentence).strip().lower()
        if not key and kept:  # a citation after the full stop belongs to that sentence
            kept[-1] += " " + sentence.strip()
            continue
        if not key or key in seen:
            continue
        seen.add(key)
        kept.append(sentence.strip())
    text = " ".join(kept)

    def check(match: re.Match[str]) -> str:
        return match.group(0) if 1 <= int(match.group(1)) <= n_sources else ""

    text = CITATION.sub(check, text)
    text = re.sub(r"\s+([.,;:])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()
    cited = sorted({int(m) for m in CITATION.findall(text)})
    return text, cited


def _rate(tokens: int, ms: float) -> float:
    return round(tokens / (ms / 1000), 1) if tokens > 0 and ms > 0 else 0.0


def says_not_found(text: str) -> bool:
    return not text.strip() or bool(_ABSTAIN_PATTERNS.search(text))


class GenerationTimeout(GenerationError):
    """The request's time ran out before the model could start."""


AnswerMode = Literal["generative", "extractive"]
ANSWER_MODES: tuple[AnswerMode, ...] = ("generative", "extractive")


def verify(text: str, sources: Sequence[str], threshold: float) -> tuple[str, list[Support], int]:
    """Keep the answer sentences a given source supports (each then cites it); drop the rest.

    Returns the checked text, the support of each kept sentence and how many were dropped."""
    kept: list[str] = []
    supports: list[Support] = []
    dropped = 0
    for span in split_sentences(text):
        if not CITATION.sub("", span.text).strip(" .!?"):
            continue  # a citation after the full stop ("... days. [1]"), not a sentence
        cited = [int(n) for n in CITATION.findall(span.text)]
        found = support_for(span.text, sources, preferred=cited)
        if found is None or found.score < threshold:
            dropped += 1
            continue
        sentence = CITATION.sub("", span.text).strip()
        sentence = re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"\s{2,}", " ", sentence))
        end = sentence[-1] if sentence[-1] in ".!?" else "."
        kept.append(f"{sentence.rstrip('.!?').rstrip()} [{found.n}]{end}")
        supports.append(found)
    return " ".join(kept), supports, dropped


def quote(supports: Sequence[Support]) -> str:
    quoted = []
    for s in supports:
        text = s.span.text
        end = text[-1] if text[-1] in ".!?" else "."
        quoted.append(f"{text.rstrip('.!?').rstrip()} [{s.n}]{end}")
    return " ".join(quoted)


class AnswerService:
    """Question -> answer, as one list of steps shared by `ask` (whole answer) and `stream`
    (events while the model writes)."""

    def __init__(
        self,
        searcher: HybridSearcher,
        generator: Generator,
        params: GenerationParams,
        top_k: int = 4,
        mode: Mode = "hybrid",
        abstention: AbstentionThresholds | None = None,
        answer_mode: AnswerMode = "generative",
        support_threshold: float = 0.6,
        slots: GenerationSlots | None = None,
        focus_sentences: int = 0,
        timeout_s: float = 120.0,
        escalation: Escalation | None = None,
    ) -> None:
        self.searcher = searcher
        self.generator = generator
        self.params = params
        self.top_k = top_k
        self.mode = mode
        self.evidence = EvidenceCheck(
            abstention or AbstentionThresholds(min_relevance=0.2),
            searcher.embedder,
            searcher.keyword.term_weights,
            focus_sentences,
        )
        self.answer_mode = answer_mode
        self.support_threshold = support_threshold
        self.slots = slots
        self.focus_sentences = focus_sentences
        self.timeout_s = timeout_s
        self.escalation = escalation

    def use_searcher(self, searcher: HybridSearcher) -> None:
        """Answer from another searcher (an embedder swap): the evidence check must compare
        sentences with the same embedder that retrieves."""
        self.searcher = searcher
        self.evidence.embedder = searcher.embedder

    def ask(
        self,
        question: str,
        top_k: int | None = None,
        mode: Mode | None = None,
        collections: Sequence[str] | None = None,
        answer_mode: AnswerMode | None = None,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        actor: str = "anonymous",
    ) -> Answer:
        with closing(
            self.stream(
                question, top_k, mode, collections, answer_mode, max_tokens, timeout_s, actor
            )
        ) as events:
            return final_answer(events)

    def stream(
        self,
        question: str,
        top_k: int | None = None,
        mode: Mode | None = None,
        collections: Sequence[str] | None = None,
        answer_mode: AnswerMode | None = None,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        actor: str = "anonymous",
    ) -> AnswerStream:
        """`SourcesEvent`, then a `TokenEvent` per piece the model writes, then `DoneEvent`
        with the checked answer (which may differ from the raw tokens: unsupported sentences
        are removed, or the answer becomes an abstention or a quotation).

        Retrieval, the prompt and admission to a generation slot all happen before the first
        event, so their errors (`PromptTooLongError`, `SlotsBusy`) come from the first
        `next()`, before anything is sent. Closing the generator stops the model and frees
        the slot. `max_tokens` and `timeout_s` can only lower the configured limits; when the
        time runs out while queued, `GenerationTimeout`; while writing, the model stops and
        the answer is checked from what it wrote (`timings["timed_out"]`). Answers that need
        no model (abstention, extractive mode) take no slot and have no token events. An
        abstention or an answer that failed the support check goes to the escalation model
        when the policy allows one (`actor` is recorded in the audit log)."""
        timings: dict[str, float] = {}
        limit = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        deadline = time.perf_counter() + limit
        result = self._retrieve(question, top_k, mode, collections, timings)
        answer = self._without_model(question, result, answer_mode or self.answer_mode, timings)
        if answer is not None:
            # An escalation's admission, like a generation's, comes before the first event.
            claim = (
                EscalationClaim(self.escalation.slots.admit())
                if self.escalation is not None and self._escalates(answer, result.hits)
                else None
            )
            try:
                yield SourcesEvent(answer.sources)
                answer = yield from self._maybe_escalate(
                    question, answer, result.hits, actor, deadline, claim
                )
            finally:
                if claim is not None:
                    claim.release()
            yield DoneEvent(answer)
            return
        params = self._params(max_tokens)
        shown = result.hits
        if self.focus_sentences:
            shown = [
                replace(
                    h,
                    chunk=replace(
                        h.chunk, text=focus(question, h.chunk.text, self.focus_sentences)
                    ),
                )
                for h in result.hits
            ]
        prompt = build_prompt(
            question,
            shown,
            self.generator.count_tokens,
            self.generator.context_size,
            params.max_tokens,
        )
        # The model sees the focused sentences; sources, checks and spans use whole passages.
        prompt.hits = result.hits[: len(prompt.hits)]
        sources = [Source.from_hit(i, h) for i, h in enumerate(prompt.hits, start=1)]
        ticket = self.slots.admit() if self.slots is not None else None
        pieces: list[str] = []
        try:
            yield SourcesEvent(sources)
            queued = time.perf_counter()
            if ticket is not None and not ticket.wait(timeout=deadline - queued):
                raise GenerationTimeout(
                    f"no generation slot became free within {limit:g} s; retry later"
                )
            timings["queue_ms"] = round((time.perf_counter() - queued) * 1000, 1)
            yield from self._generate(prompt, params, pieces, timings, deadline)
        finally:
            if ticket is not None:
                ticket.release()
        answer = self._check(question, "".join(pieces), prompt, sources, timings)
        answer = yield from self._maybe_escalate(question, answer, prompt.hits, actor, deadline)
        yield DoneEvent(answer)

    def _escalates(self, local: Answer, hits: Sequence[Hit]) -> bool:
        failed = local.abstained or local.mode == "extractive_fallback"
        return self.escalation is not None and failed and bool(hits)

    def _maybe_escalate(
        self,
        question: str,
        local: Answer,
        hits: Sequence[Hit],
        actor: str,
        deadline: float,
        claim: EscalationClaim | None = None,
    ) -> collections.abc.Generator[WaitingEvent, None, Answer]:
        """The larger model's checked answer when the local one abstained or failed the
        support check, the policy allows it and there are sources to give it; else `local`.
        It takes one of the escalation's own slots (`SlotsBusy` when they and their queue
        are full; `claim` if already admitted), waits and writes within the question's
        `deadline` (`GenerationTimeout` while queued; the local answer when the larger model
        runs past it), and yields `WaitingEvent`s meanwhile: closing the stream there (the
        client went away) stops the call to the larger model."""
        escalation = self.escalation
        if escalation is None or not self._escalates(local, hits):
            return local
        own = claim is None
        claim = claim or EscalationClaim(escalation.slots.admit())
        try:
            while not claim.ticket.wait(timeout=min(1.0, max(0.0, deadline - time.perf_counter()))):
                if time.perf_counter() >= deadline:
                    raise GenerationTimeout(
                        "no escalation slot became free within the question's time; retry later"
                    )
                yield WaitingEvent()
            if time.perf_counter() >= deadline:  # the local answer took the question's time
                local.timings["escalation_timed_out"] = True
                return local
            generator = escalation.generator
            prompt = build_prompt(
                question,
                list(hits),
                generator.count_tokens,
                generator.context_size,
                self.params.max_tokens,
            )
            sources = [Source.from_hit(i, h) for i, h in enumerate(prompt.hits, start=1)]
            reason = "abstained" if local.abstained else "unsupported"
            escalation.record(actor, question, [h.chunk.document_id for h in prompt.hits], reason)
            timings = dict(local.timings)
            start = time.perf_counter()
            pieces: list[str] = []
            reader = read_in_background(generator, prompt.messages, self.params, claim)
            try:
                for piece in reader:
                    if piece is not None:
                        pieces.append(piece)
                    if time.perf_counter() > deadline:
                        log.warning("escalation to %s ran past the deadline", escalation.endpoint)
                        local.timings["escalation_timed_out"] = True
                        return local
                    yield WaitingEvent()
            except GenerationError as exc:
                log.warning("escalation to %s failed: %s", escalation.endpoint, exc)
                return local
            finally:
                reader.close()  # the reader stops and closes the connection
            raw = "".join(pieces)
            timings["escalation_ms"] = round((time.perf_counter() - start) * 1000, 1)
            text = clean_answer(raw, len(prompt.hits))[0]
            answer = self._checked(question, text, prompt, sources, timings)
            answer.escalated = {
                "endpoint": escalation.endpoint,
                "model": generator.name,
                "reason": reason,
            }
            return answer
        finally:
            if own:
                claim.release()

    def _retrieve(
        self,
        question: str,
        top_k: int | None,
        mode: Mode | None,
        collections: Sequence[str] | None,
        timings: dict[str, float],
    ) -> SearchResult:
        start = time.perf_counter()
        result = self.searcher.search(question, top_k or self.top_k, mode or self.mode, collections)
        timings["retrieve_ms"] = round((time.perf_counter() - start) * 1000, 1)
        return result

    def _without_model(
        self,
        question: str,
        result: SearchResult,
        answer_mode: AnswerMode,
        timings: dict[str, float],
    ) -> Answer | None:
        """The answer when the model is not needed: nothing relevant, or extractive mode."""
        reason = self.evidence.weakness(question, result)
        if reason is not None:
            timings.update(generate_ms=0.0, tokens=0, tokens_per_s=0.0)
            nearest = [Source.from_hit(i, h) for i, h in enumerate(result.hits, start=1)]
            answer = Answer(NOT_FOUND, True, nearest, [], timings, mode=answer_mode)
            answer.abstention_reason = reason
            return answer
        if answer_mode == "extractive":
            return self._extractive(question, result.hits, timings)
        return None

    def _params(self, max_tokens: int | None) -> GenerationParams:
        if max_tokens is None:
            return self.params
        return replace(self.params, max_tokens=max(1, min(max_tokens, self.params.max_tokens)))

    def _generate(
        self,
        prompt: BuiltPrompt,
        params: GenerationParams,
        pieces: list[str],
        timings: dict[str, float],
        deadline: float,
    ) -> Iterator[TokenEvent]:
        start = time.perf_counter()
        first_token_ms = None
        # The deadline goes with the params: a model in its own process that sends nothing by
        # then is stopped (retriever.model_process).
        stream = self.generator.stream(prompt.messages, replace(params, deadline=deadline))
        try:
            for piece in stream:
                if first_token_ms is None:
                    first_token_ms = (time.perf_counter() - start) * 1000
                pieces.append(piece)
                yield TokenEvent(piece)
                if time.perf_counter() > deadline:
                    timings["timed_out"] = True
                    break
        finally:
            # Stops the model now, not when the garbage collector gets to it.
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        generate_ms = (time.perf_counter() - start) * 1000
        raw = "".join(pieces)
        tokens = self.generator.count_tokens(raw) if raw else 0
        timings.update(
            generate_ms=round(generate_ms, 1),
            first_token_ms=round(first_token_ms or generate_ms, 1),
            prompt_tokens=prompt.prompt_tokens,
            tokens=tokens,
            # Decode rate: tokens after the first, over the time after the first.
            tokens_per_s=_rate(tokens - 1, generate_ms - (first_token_ms or 0.0)),
        )

    def _check(
        self,
        question: str,
        raw: str,
        prompt: BuiltPrompt,
        sources: list[Source],
        timings: dict[str, float],
    ) -> Answer:
        """Clean the model's text and keep only what the sources support."""
        text, model_citations = clean_answer(raw, len(prompt.hits))
        answer = self._checked(question, text, prompt, sources, timings)
        answer.model_cited = bool(model_citations)
        return answer

    def _checked(
        self,
        question: str,
        text: str,
        prompt: BuiltPrompt,
        sources: list[Source],
        timings: dict[str, float],
    ) -> Answer:
        texts = [h.chunk.text for h in prompt.hits]
        if says_not_found(text):
            return Answer(NOT_FOUND, True, sources, [], timings, mode="generative")
        checked, supports, dropped = verify(text, texts, self.support_threshold)
        if supports:
            return Answer(
                checked,
                False,
                sources,
                _cited(supports),
                timings,
                supports=supports,
                dropped=dropped,
                mode="generative",
            )
        # Nothing the model wrote is backed by the sources: quote them instead.
        fallback = self._extractive(question, prompt.hits, timings)
        fallback.dropped = dropped
        fallback.mode = "extractive_fallback"
        return fallback

    def _extractive(self, question: str, hits: Sequence[Hit], timings: dict[str, float]) -> Answer:
        hits = list(hits)
        sources = [Source.from_hit(i, h) for i, h in enumerate(hits, start=1)]
        supports = extract_answer(question, [h.chunk.text for h in hits])
        timings.setdefault("generate_ms", 0.0)
        timings.setdefault("tokens", 0)
        timings.setdefault("tokens_per_s", 0.0)
        if not supports:
            return Answer(NOT_FOUND, True, sources, [], timings, mode="extractive")
        return Answer(
            quote(supports),
            False,
            sources,
            _cited(supports),
            timings,
            supports=supports,
            mode="extractive",
        )


def _cited(supports: Sequence[Support]) -> list[int]:
    return sorted({s.n for s in supports})
