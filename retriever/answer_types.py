"""The answer and the events of its stream, as `AnswerService` hands them to every caller:
the cited sources, the answer's wire shape (the one place it is declared) and the events
`stream` yields."""

from __future__ import annotations

import collections.abc
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import ConfigDict, Field, PlainSerializer, TypeAdapter

from retriever.grounding import Support
from retriever.types import Hit


@dataclass
class Source:
    """A passage the model was given, numbered as the answer cites it."""

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


@dataclass(frozen=True)
class SupportSpan:
    """Where an answer sentence is backed: the source, the character span of the supporting
    sentence in that source's text, and the share of the sentence's words it holds."""

    n: int
    start: int
    end: int
    score: float


def _support_spans(supports: list[Support]) -> list[SupportSpan]:
    return [SupportSpan(s.n, s.span.start, s.span.end, s.score) for s in supports]


@dataclass
class Answer:
    """An answer as /api/v1/ask, `enclave ask --json` and MCP's `ask` return it: these fields,
    serialized by `to_dict` (wire names by `serialization_alias`), are the one place the
    answer's shape is written; the OpenAPI document is generated from them."""

    # Every field is always sent (a default here is not "may be absent").
    __pydantic_config__ = ConfigDict(json_schema_serialization_defaults_required=True)

    answer: str
    abstained: bool
    sources: list[Source]
    citations: Annotated[
        list[int], Field(description="The source numbers the answer cites, [n] in its text.")
    ] = field(default_factory=list)
    timings: Annotated[
        dict[str, int | float],
        Field(description="retrieve_ms, generate_ms, tokens, tokens_per_s and the like."),
    ] = field(default_factory=dict)
    supports: Annotated[
        list[Support],
        PlainSerializer(_support_spans, return_type=list[SupportSpan]),
        Field(
            description="For each answer sentence: the source and the character span of its "
            "supporting sentence in that source's text."
        ),
    ] = field(default_factory=list)
    dropped: Annotated[
        int,
        Field(
            serialization_alias="unsupported_sentences_removed",
            description="Answer sentences removed because no source supported them.",
        ),
    ] = 0
    mode: Annotated[
        str,
        Field(serialization_alias="answer_mode", description="generative or extractive."),
    ] = "generative"
    model_cited: Annotated[
        bool | None, Field(description="Whether the model's own text cited a given source.")
    ] = None
    escalated: Annotated[
        dict[str, Any] | None,
        Field(
            description="The larger model that answered (model, reason; the endpoint for "
            "administrators), when the local answer was escalated under the escalation policy."
        ),
    ] = None
    abstention_reason: Annotated[
        str | None,
        Field(
            description="Why the passages could not answer, when Enclave abstained (before "
            "asking the model, or after it when no sentence found gives the number or amount "
            "asked for)."
        ),
    ] = None
    direct_answer: Annotated[
        str | None,
        Field(
            description="The short answer the text opens with (the phrase or number asked "
            "for), before the quoted evidence; null when Enclave abstained."
        ),
    ] = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = _ANSWER_JSON.dump_python(self, mode="json", by_alias=True)
        return body


_ANSWER_JSON: TypeAdapter[Answer] = TypeAdapter(Answer)


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
