"""Question -> retrieval -> grounded prompt -> SLM -> cleaned, cited answer."""

from __future__ import annotations

import collections.abc
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import replace

from retriever.abstention import AbstentionThresholds, EvidenceCheck
from retriever.answer_cleanup import clean_answer, says_not_found
from retriever.answer_types import (
    Answer,
    AnswerStream,
    DoneEvent,
    Source,
    SourcesEvent,
    TokenEvent,
    WaitingEvent,
    final_answer,
)
from retriever.direct_answer import answering_support, direct_answer, quote, with_evidence
from retriever.escalation import Escalation, EscalationClaim, read_in_background
from retriever.generation import GenerationError, GenerationParams, Generator
from retriever.grounding import (
    CITATION,
    LIST_MARKER,
    RankedSentence,
    Support,
    answering_passages,
    asked_code,
    asks_amount,
    extract_answer,
    focus,
    gives_asked_number,
    is_list_marker,
    is_title,
    names_code,
    needs_number,
    rank_sentences,
    split_sentences,
    states_amount,
)
from retriever.prompt import NOT_FOUND, BuiltPrompt, build_prompt, source_label
from retriever.question import AnswerMode, Mode, Question
from retriever.search import HybridSearcher, SearchResult
from retriever.serving import IndexSlot, ServingIndex
from retriever.slots import GenerationSlots
from retriever.support_check import answers_as_well, verify
from retriever.types import Hit

log = logging.getLogger(__name__)


def _rate(tokens: int, ms: float) -> float:
    return round(tokens / (ms / 1000), 1) if tokens > 0 and ms > 0 else 0.0


class GenerationTimeout(GenerationError):
    """The request's time ran out before the model could start."""


class AnswerService:
    """Question -> answer, as one list of steps shared by `ask` (whole answer) and `stream`
    (events while the model writes)."""

    def __init__(
        self,
        serving: IndexSlot,
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
        candidates: int = 0,
    ) -> None:
        self.serving = serving
        self.generator = generator
        self.params = params
        self.top_k = top_k
        self.mode = mode
        self.abstention = abstention or AbstentionThresholds(min_relevance=0.2)
        self._evidence: tuple[ServingIndex, EvidenceCheck] | None = None
        self.answer_mode = answer_mode
        self.support_threshold = support_threshold
        self.slots = slots
        self.focus_sentences = focus_sentences
        self.timeout_s = timeout_s
        self.escalation = escalation
        self.candidates = candidates  # passages searched to choose the top_k sources from

    @property
    def searcher(self) -> HybridSearcher:
        """The searcher of the serving index now (an embedder swap replaces it)."""
        return self.serving.index.searcher

    @property
    def evidence(self) -> EvidenceCheck:
        """The evidence check of the serving index now: it compares sentences with the same
        embedder that retrieves, so it is made again when an embedder swap replaces it."""
        index = self.serving.index
        made = self._evidence
        if made is None or made[0] is not index:
            check = EvidenceCheck(
                self.abstention,
                index.searcher.embedder,
                index.keyword.term_weights,
                self.focus_sentences,
                index.keyword.unmentioned,
            )
            made = self._evidence = (index, check)
        return made[1]

    def ask(self, question: Question) -> Answer:
        """The whole answer (the last event of `stream`)."""
        with closing(self.stream(question)) as events:
            return final_answer(events)

    def stream(self, asked: Question) -> AnswerStream:
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
        question, actor = asked.text, asked.actor
        timings: dict[str, float] = {}
        limit = self.timeout_s if asked.timeout_s is None else min(asked.timeout_s, self.timeout_s)
        deadline = time.perf_counter() + limit
        result = self._retrieve(asked, timings)
        answer = self._without_model(
            question, result, asked.answer_mode or self.answer_mode, timings
        )
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
        params = self._params(asked.max_tokens)
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
        answer = _without_what_is_asked(question, answer)
        answer = yield from self._maybe_escalate(question, answer, prompt.hits, actor, deadline)
        yield DoneEvent(answer)

    def _similarity(self, question: str, sentences: list[str]) -> list[float]:
        """Embedding cosine of each sentence with the question (the retrieval embedder)."""
        if not sentences:
            return []
        return [float(c) for c in self.evidence.cosines(question, sentences)]

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

    def _retrieve(self, asked: Question, timings: dict[str, float]) -> SearchResult:
        start = time.perf_counter()
        k = asked.top_k or self.top_k
        result = self.searcher.search(
            asked.text, max(k, self.candidates), asked.mode or self.mode, asked.collections
        )
        if len(result.hits) > k:
            texts = [h.chunk.text for h in result.hits]
            chosen = answering_passages(asked.text, texts, k, self._similarity)
            result.hits = [result.hits[i] for i in chosen]
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
            return _without_what_is_asked(
                question, self._extractive(question, result.hits, timings)
            )
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
        # The passages passed the evidence checks: a model that finds nothing in them (or
        # writes nothing that passes) failed, and the best extract answers instead.
        checked, supports, dropped = (
            ("", [], 0)
            if says_not_found(text)
            else verify(
                text,
                texts,
                self.support_threshold,
                question,
                [source_label(h) for h in prompt.hits],
            )
        )
        ranked = rank_sentences(question, texts, self._similarity)
        said = split_sentences(CITATION.sub("", checked))
        lead = LIST_MARKER.sub("", said[0].text) if said else ""
        if (
            supports
            and answers_as_well(supports, ranked, question, lead)
            and not _names_only(checked)
        ):
            answer_text, direct, shown = with_evidence(
                question, checked, supports, texts, ranked=ranked
            )
            return Answer(
                answer_text,
                False,
                sources,
                _cited(shown),
                timings,
                supports=shown,
                dropped=dropped,
                mode="generative",
                direct_answer=direct,
            )
        # Nothing the model wrote is backed by the sources, or what it leads with answers the
        # question worse than the best source sentence: quote the sources instead.
        fallback = self._extractive(question, prompt.hits, timings, ranked)
        fallback.dropped = dropped
        fallback.mode = "extractive_fallback"
        return fallback

    def _extractive(
        self,
        question: str,
        hits: Sequence[Hit],
        timings: dict[str, float],
        ranked: Sequence[RankedSentence] | None = None,
    ) -> Answer:
        hits = list(hits)
        sources = [Source.from_hit(i, h) for i, h in enumerate(hits, start=1)]
        supports = extract_answer(
            question, [h.chunk.text for h in hits], similarity=self._similarity, ranked=ranked
        )
        timings.setdefault("generate_ms", 0.0)
        timings.setdefault("tokens", 0)
        timings.setdefault("tokens_per_s", 0.0)
        if not supports:
            return Answer(NOT_FOUND, True, sources, [], timings, mode="extractive")
        best = answering_support(question, supports)
        return Answer(
            quote(supports),
            False,
            sources,
            _cited(supports),
            timings,
            supports=supports,
            mode="extractive",
            direct_answer=direct_answer(question, best.span.text),
        )


def _without_what_is_asked(question: str, answer: Answer) -> Answer:
    """`answer`, or an abstention when the question asks for what only a number or a name
    written as code can say and no sentence it quotes gives one: "Which dpkg version first
    supported ...?" with none about what the question asks of (`gives_asked_number`), "How
    much does the bounty pay?" with no amount at all (`states_amount`), "Which environment
    variable sets ...?" with no variable named (`names_code`). Those sentences are about the
    subject, or another thing's number, not the answer."""
    if answer.abstained:
        return answer
    if needs_number(question):
        titles = {source.n: source.title for source in answer.sources}
        if any(
            gives_asked_number(question, s.span.text, titles.get(s.n, "")) for s in answer.supports
        ):
            return answer
        reason = "no passage found gives the number the question asks for"
    elif asks_amount(question):
        if any(states_amount(s.span.text, question) for s in answer.supports):
            return answer
        reason = "no passage found gives the amount the question asks for"
    elif (kind := asked_code(question)) is not None:
        if any(names_code(kind, s.span.text, question) for s in answer.supports):
            return answer
        reason = f"no passage found names the {kind} the question asks for"
    else:
        return answer
    refused = Answer(NOT_FOUND, True, answer.sources, [], answer.timings, mode=answer.mode)
    refused.abstention_reason = reason
    return refused


def _names_only(text: str) -> bool:
    """Whether the checked answer is a list of names and nothing else, titles or labels ("1. HR
    Service Centre [1].\n2. Change Manager [2]."): picked from the sources, each backed by a
    sentence, but no sentence says which answers the question. The best extract says it, and
    its direct answer is the name asked for. (One name alone is an answer.)"""
    said = [s.text for s in split_sentences(text) if not is_list_marker(s.text)]
    return len(said) > 1 and all(is_title(s) for s in said)


def _cited(supports: Sequence[Support]) -> list[int]:
    return sorted({s.n for s in supports})
