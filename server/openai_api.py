"""OpenAI-compatible routes under /v1, so existing clients and chat tools can ask Enclave.

What a grounded answer can honour of the Chat Completions API:
- the question is the last user message. Earlier turns and system messages are ignored for
  now: retrieval and the grounded prompt are single-turn;
- `stream`, `stream_options.include_usage`, and `max_tokens` / `max_completion_tokens`, which
  can only lower the configured `llm_max_tokens`;
- `model`, `temperature` and the other sampling fields are accepted and ignored;
- responses carry two extra top-level fields: `sources` (as in /api/v1/ask) and `abstained`.

The content is always the checked answer (unsupported sentences removed, or an abstention),
never the model's raw text: an OpenAI client cannot take back text it has shown. So a stream
sends `sources` in its first chunk, keep-alive comments while the model writes, then the
checked answer. Errors use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`;
/api/v1 keeps Enclave's own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field

from retriever.answer_types import Answer, AnswerStream, DoneEvent, SourcesEvent
from retriever.question import Question
from server.access import readable_collections
from server.common import (
    actor,
    answer_errors,
    answer_finisher,
    check_question,
    first_event,
    require_ready,
    shows_model_details,
    stream_failure,
)
from server.contract import Invalid, absent, route
from server.errors import ApiError
from server.sse import KEEP_ALIVE, EventStream, event_stream_response, sse
from server.state import state

MODEL_ID = "enclave-rag"
_STARTED = int(time.time())

openai_api = Blueprint("openai", __name__, url_prefix="/v1")


def openai_error_response(
    status: int, code: str, message: str, headers: Mapping[str, str]
) -> ResponseReturnValue:
    return jsonify({"error": _error_body(status, code, message)}), status, dict(headers)


def _error_body(status: int, code: str, message: str) -> dict[str, Any]:
    if status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    return {"message": message, "type": kind, "param": None, "code": code}


def _model() -> dict[str, Any]:
    return {"id": MODEL_ID, "object": "model", "created": _STARTED, "owned_by": "enclave"}


@route(openai_api, "/models", scope="ask")
def list_models() -> ResponseReturnValue:
    return jsonify({"object": "list", "data": [_model()]})


@route(openai_api, "/models/<model_id>", scope="ask")
def get_model(model_id: str) -> ResponseReturnValue:
    if model_id != MODEL_ID:
        raise ApiError(404, "model_not_found", f"the only model is '{MODEL_ID}'")
    return jsonify(_model())


class _ContentPart(BaseModel):
    """One part of a message's content; only `text` parts are read."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: str
    text: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")  # name, tool_calls...: not read
    role: str
    content: str | list[_ContentPart] | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    include_usage: bool = False


_TokenLimit = Annotated[
    int,
    Field(ge=1, description="Lowers the configured `llm_max_tokens` for this answer."),
]


class ChatCompletionRequest(BaseModel):
    """The Chat Completions fields a grounded answer honours. `model`, `temperature` and the
    other sampling fields are accepted and ignored."""

    model_config = ConfigDict(strict=True, extra="allow")

    messages: Annotated[
        list[_Message],
        Field(description="The question is the last message with role user."),
        Invalid("'messages' must be a list of message objects with text content"),
    ]
    stream: Annotated[
        bool,
        Field(description="Server-sent chunks: the sources first, then the checked answer."),
        Invalid("'stream' must be true or false"),
    ] = False
    stream_options: Annotated[
        _StreamOptions | None,
        Invalid("'stream_options' must be an object with a boolean 'include_usage'"),
    ] = None
    max_completion_tokens: Annotated[
        _TokenLimit, Invalid("'max_completion_tokens' must be a positive integer")
    ] = absent()
    max_tokens: Annotated[
        _TokenLimit,
        Invalid("'max_tokens' must be a positive integer (or use max_completion_tokens)"),
    ] = absent()

    def question(self) -> str:
        # Single-turn for now: only the last user message is asked; earlier turns are ignored.
        users = [m for m in self.messages if m.role == "user"]
        if not users:
            raise ApiError(
                400, "missing_user_message", "'messages' holds no message with role user"
            )
        content = users[-1].content
        if isinstance(content, list):
            texts = [p.text for p in content if p.type == "text" and p.text is not None]
            content = "\n".join(texts) if texts else None
        if content is None:
            raise ApiError(400, "invalid_messages", "the user message's content must be text")
        return check_question(content)


@route(
    openai_api,
    "/chat/completions",
    "POST",
    scope="ask",
    rate_limited=True,
    body=ChatCompletionRequest,
)
def chat_completions(body: ChatCompletionRequest) -> ResponseReturnValue:
    question = body.question()
    stream = body.stream
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    max_tokens = body.max_completion_tokens or body.max_tokens
    require_ready()
    answers = state().components.answers
    limit = min(max_tokens or answers.params.max_tokens, answers.params.max_tokens)
    completion = _Completion(limit)
    # The same permission rule as /api/v1/ask: only the caller's readable collections.
    collections = readable_collections()
    asked = Question(question, collections=collections, max_tokens=max_tokens, actor=actor())
    if not stream:
        with answer_errors():
            answer = answers.ask(asked)
        answer_finisher("openai")(answer)
        return jsonify(completion.whole(answer))
    events = answers.stream(asked)
    first = first_event(events)
    return event_stream_response(
        EventStream(
            _chunks(
                completion,
                first,
                events,
                include_usage,
                answer_finisher("openai"),
                shows_model_details(),
            ),
            events,
        )
    )


@dataclass
class _Completion:
    """One completion's identity and the objects that describe it."""

    max_tokens: int
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": MODEL_ID}

    def finish_reason(self, answer: Answer) -> str:
        return "length" if answer.timings.get("tokens", 0) >= self.max_tokens else "stop"

    @staticmethod
    def usage(answer: Answer) -> dict[str, int]:
        prompt = int(answer.timings.get("prompt_tokens", 0))
        completion = int(answer.timings.get("tokens", 0))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def whole(self, answer: Answer) -> dict[str, Any]:
        message = {"role": "assistant", "content": answer.answer}
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason(answer)}
        return {
            **self._head("chat.completion"),
            "choices": [choice],
            "usage": self.usage(answer),
            "sources": [vars(s) for s in answer.sources],
            "abstained": answer.abstained,
        }

    def chunk(
        self, delta: dict[str, Any] | None, finish_reason: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        choices = (
            [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
        )
        return {**self._head("chat.completion.chunk"), "choices": choices, **extra}


def _chunks(
    completion: _Completion,
    first: SourcesEvent,
    events: AnswerStream,
    include_usage: bool,
    finish: Callable[[Answer], Answer],
    detailed: bool,
) -> Generator[str, None, None]:
    sources = [vars(s) for s in first.sources]
    yield sse(completion.chunk({"role": "assistant", "content": ""}, sources=sources))
    answer: Answer | None = None
    try:
        for event in events:
            if isinstance(event, DoneEvent):
                answer = event.answer
                finish(answer)
            else:
                yield KEEP_ALIVE
    except Exception as exc:
        code, message = stream_failure(exc, detailed)
        yield sse({"error": _error_body(500, code, message)})
        return
    if answer is None:  # pragma: no cover - the stream's contract
        return
    yield sse(completion.chunk({"content": answer.answer}))
    yield sse(completion.chunk({}, completion.finish_reason(answer), abstained=answer.abstained))
    if include_usage:
        yield sse(completion.chunk(None, usage=completion.usage(answer)))
    yield sse("[DONE]")
