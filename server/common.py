"""Request checks and error mapping shared by the /api/v1 and the OpenAI-compatible routes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import g, request

from retriever.answer import GenerationTimeout
from retriever.answer_types import Answer, AnswerStream, SourcesEvent
from retriever.generation import GenerationError, ModelUnavailable
from retriever.prompt import PromptTooLongError
from retriever.slots import SlotsBusy
from server import metrics
from server.access import current, escalation_shower, path_shower
from server.errors import ApiError
from server.state import state
from service.untrusted import neutralize_links

log = logging.getLogger(__name__)


def require_ready() -> None:
    st = state()
    if st.load_error:
        # The reason names the server's files: for admins only, as on /api/v1/health.
        reason = f": {st.load_error}" if current().allows("admin") else "; see the server log"
        raise ApiError(503, "not_ready", f"the models failed to load{reason}")
    if not st.ready.is_set():
        raise ApiError(503, "not_ready", "the models are still loading; retry in a few seconds")


def check_question(question: str) -> str:
    question = question.strip()
    if not question:
        raise ApiError(400, "empty_question", "the question must not be empty")
    limit = state().settings.max_question_chars
    if len(question) > limit:
        raise ApiError(400, "question_too_long", f"the question is longer than {limit} characters")
    return question


def actor() -> str:
    """Who is asking, for the audit log: the user (and key), or with auth mode none the
    client address."""
    principal = current()
    if principal.via == "none":
        return f"anonymous@{request.remote_addr or 'unknown'}"
    return principal.actor


def answer_finisher(route: str) -> Callable[[Answer], Answer]:
    """What is done to an answer as it leaves the server, bound now (a stream finishes
    outside the request's context): links and images to hosts outside `answer_link_hosts`
    are reduced to text (`service/untrusted.py`), sources show their paths as the caller may
    see them (`path_shower`), a reader is not told the escalation model's address
    (`escalation_shower`), and the audit log records who asked, when
    (the entry's time), through which route, and which documents the answer was given
    (never the question's or the documents' text)."""
    st = state()
    hosts, audit, who = st.settings.answer_link_hosts, st.audit, actor()
    route = g.get("answer_route", route)  # an MCP tool call runs the REST view: "mcp"
    started = metrics.request_started()
    shown, escalation = path_shower(), escalation_shower()

    def finish(answer: Answer) -> Answer:
        for source in answer.sources:
            source.path = shown(source.path)
        answer.escalated = escalation(answer.escalated)
        answer.answer = neutralize_links(answer.answer, hosts)
        if answer.direct_answer:
            answer.direct_answer = neutralize_links(answer.direct_answer, hosts)
        audit.record(
            who,
            "ask",
            route,
            documents=sorted({s.document_id for s in answer.sources}),
            abstained=answer.abstained,
            escalated=bool(answer.escalated),
        )
        metrics.observe_answer(route, answer, started)
        return answer

    return finish


def shows_model_details() -> bool:
    """Whether the caller of this request is told why the model failed (as on health)."""
    return current().allows("admin")


def _model_failure(exc: GenerationError, detailed: bool) -> str:
    """What the caller is told of a model's failure: the reason for admins; for others what
    happened, not the model server's address and reply or the model's files and crash."""
    if detailed:
        return str(exc)
    if isinstance(exc, ModelUnavailable):
        return (
            "the model is not available now; ask again in a moment (retrieval, extractive "
            "answers and ingestion are not affected)"
        )
    return "the model failed to write the answer; see the server log"


@contextmanager
def answer_errors() -> Iterator[None]:
    """Errors raised before an answer starts, as HTTP errors."""
    try:
        yield
    except PromptTooLongError as exc:
        raise ApiError(400, "question_too_long", str(exc)) from None
    except SlotsBusy as exc:
        raise ApiError(429, "busy", str(exc), {"Retry-After": str(exc.retry_after)}) from None
    except GenerationTimeout as exc:
        raise ApiError(504, "timeout", str(exc)) from None
    except ModelUnavailable as exc:
        log.warning("model unavailable: %s", exc)
        message = _model_failure(exc, shows_model_details())
        raise ApiError(503, "model_unavailable", message, {"Retry-After": "5"}) from None
    except GenerationError as exc:
        log.warning("generation failed: %s", exc)
        raise ApiError(
            502, "generation_failed", _model_failure(exc, shows_model_details())
        ) from None


def first_event(events: AnswerStream) -> SourcesEvent:
    """Start an answer stream: retrieval, prompt and admission run now, so a refusal is still
    an HTTP error rather than an event inside a 200 response. Its sources show their paths as
    the caller may see them."""
    with answer_errors():
        event = next(events)
    if not isinstance(event, SourcesEvent):  # pragma: no cover - the stream's contract
        events.close()
        raise TypeError(f"an answer stream starts with its sources, not {event!r}")
    shown = path_shower()
    for source in event.sources:
        source.path = shown(source.path)
    return event


def stream_failure(exc: Exception, detailed: bool) -> tuple[str, str]:
    """(code, message) for an error after a stream's headers were sent (outside the request:
    `detailed` is `shows_model_details()` taken while it was there)."""
    if isinstance(exc, GenerationTimeout):
        return "timeout", str(exc)
    if isinstance(exc, ModelUnavailable):
        log.warning("model unavailable: %s", exc)
        return "model_unavailable", _model_failure(exc, detailed)
    if isinstance(exc, GenerationError):
        log.warning("generation failed: %s", exc)
        return "generation_failed", _model_failure(exc, detailed)
    log.exception("answer stream failed")
    return "internal", "internal error; see the server log"
