"""POST /api/v1/ask: a question answered from the documents the caller may read."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from typing import Any

from flask import Blueprint
from flask.typing import ResponseReturnValue

from retriever.answer_types import (
    Answer,
    AnswerStream,
    DoneEvent,
    SourcesEvent,
    TokenEvent,
    WaitingEvent,
    final_answer,
)
from retriever.followup import Turn, contextualize
from retriever.question import Question
from server.access import current, readable_collections
from server.ask.schemas import AskRequest, AskResponse
from server.common import (
    actor,
    answer_errors,
    answer_finisher,
    first_event,
    require_ready,
    shows_model_details,
    stream_failure,
)
from server.contract import route
from server.errors import ApiError
from server.sse import KEEP_ALIVE, EventStream, event_stream_response, sse
from server.state import state
from service.untrusted import StreamedLinks

ask_api = Blueprint("ask", __name__, url_prefix="/api/v1")


@route(
    ask_api,
    "/ask",
    "POST",
    scope="ask",
    rate_limited=True,
    body=AskRequest,
    responses={200: AskResponse},
    stream=("sources", "token", "done", "error"),
    errors=(404, 502, 503, 504),
)
def ask(body: AskRequest) -> ResponseReturnValue:
    """Answer a question from the indexed documents, with sources.

    The answer is JSON, or server-sent events when `stream` is true. 429 also when every
    generation slot and queue place is taken (with `Retry-After`)."""
    settings = state().settings
    question = body.question
    top_k = settings.top_k if body.top_k is None else body.top_k
    mode = body.mode or settings.retrieval_mode
    answer_mode = body.answer_mode or settings.answer_mode
    # The caller's readable collections go inside both index queries: nothing else is found.
    collections = readable_collections(body.collections())
    stream = body.stream
    timeout_s = body.timeout_s
    thread = _Thread.open(body.conversation_id, question)
    require_ready()
    answers = state().components.answers
    # The whole answer is the last event of the stream (`final_answer`), so one call serves both.
    asked = Question(
        thread.query if thread else question,
        top_k=top_k,
        mode=mode,
        answer_mode=answer_mode,
        collections=collections,
        timeout_s=timeout_s,
        actor=actor(),
    )
    events = answers.stream(asked)
    if not stream:
        with answer_errors(), closing(events):
            answer = final_answer(events)
        answer_finisher("api")(answer)
        result = answer.to_dict()
        if thread:
            thread.save_question()
            result.update(thread.save_answer(result))
        return result
    first = first_event(events)
    if thread:
        thread.save_question()
    return event_stream_response(
        EventStream(
            _ask_events(
                first,
                events,
                answer_finisher("api"),
                StreamedLinks(state().settings.answer_link_hosts),
                shows_model_details(),
                thread,
            ),
            events,
        )
    )


def owns_conversation(conversation: dict[str, Any] | None) -> bool:
    """Conversations are their owner's alone (the anonymous caller of auth mode none owns
    those made before users existed)."""
    if conversation is None:
        return False
    principal = current()
    owner = "" if principal.via == "none" else principal.name
    return bool(conversation.get("owner", "") == owner)


class _Thread:
    """The conversation a question belongs to: its history makes a follow-up self-contained
    for retrieval (`retriever.followup`), and the question and answer are stored in it."""

    def __init__(self, conversation_id: str, question: str) -> None:
        self.store = state().conversations
        self.conversation_id = conversation_id
        self.question = question
        self.cap = state().settings.max_messages_per_conversation
        history = [Turn(m["role"], m["content"]) for m in self.store.messages(conversation_id)]
        self.query = contextualize(question, history, state().settings.max_question_chars)

    @classmethod
    def open(cls, conversation_id: str | None, question: str) -> _Thread | None:
        if conversation_id is None:
            return None
        if not owns_conversation(state().conversations.get(conversation_id)):
            raise ApiError(
                404, "conversation_not_found", f"no conversation with id '{conversation_id}'"
            )
        return cls(conversation_id, question)

    def _add(self, role: str, content: str, **fields: Any) -> str:
        message_id = self.store.add_message(self.conversation_id, role, content, **fields)
        if self.cap:  # a bounded conversation: its oldest messages beyond the cap go
            self.store.prune_messages(self.conversation_id, self.cap)
        return message_id

    def save_question(self) -> None:
        query = self.query if self.query != self.question else None
        self._add("user", self.question, query=query)

    def save_answer(self, answer: dict[str, Any], stopped: bool = False) -> dict[str, Any]:
        """Store the answer; returns the fields that tell the client where it was stored."""
        message_id = self._add("assistant", answer["answer"], answer=answer, stopped=stopped)
        return {
            "conversation_id": self.conversation_id,
            "message_id": message_id,
            "query": self.query,
        }


def _ask_events(
    first: SourcesEvent,
    events: AnswerStream,
    finish: Callable[[Answer], Answer],
    links: StreamedLinks,
    detailed: bool,
    thread: _Thread | None = None,
) -> Generator[str, None, None]:
    """`sources`, `token`..., then `done` (the checked answer, as without streaming) or
    `error`. The tokens are the model's raw text, less links to hosts not allowed (a link
    is held back until it is complete): `done.answer` replaces them. In a conversation, an
    answer stopped by the client is stored as far as it got."""
    sources = [vars(s) for s in first.sources]
    pieces: list[str] = []
    finished = False

    def token(text: str) -> Iterator[str]:
        if text:
            pieces.append(text)
            yield sse({"text": text}, "token")

    try:
        yield sse(sources, "sources")
        for event in events:
            if isinstance(event, TokenEvent):
                yield from token(links.add(event.text))
            elif isinstance(event, WaitingEvent):
                yield KEEP_ALIVE  # notices a client that has gone (an escalation stops)
            elif isinstance(event, DoneEvent):
                yield from token(links.finish())
                finish(event.answer)
                result = event.answer.to_dict()
                if thread:
                    result.update(thread.save_answer(result))
                finished = True
                yield sse(result, "done")
    except Exception as exc:
        finished = True
        code, message = stream_failure(exc, detailed)
        yield from token(links.finish())  # what the model wrote before it failed
        yield sse({"error": {"code": code, "message": message}}, "error")
    finally:
        if thread and not finished:
            shown = "".join(pieces) + links.finish()
            partial = {"answer": shown.strip(), "abstained": False, "sources": sources}
            thread.save_answer({**partial, "stopped": True}, stopped=True)
