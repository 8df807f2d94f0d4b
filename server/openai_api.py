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
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from retriever.answer import Answer, AnswerStream, DoneEvent, SourcesEvent
from retriever.question import Question
from server.access import readable_collections
from server.common import (
    actor,
    answer_errors,
    answer_finisher,
    check_question,
    first_event,
    json_body,
    optional_bool,
    require_ready,
    stream_failure,
)
from server.contract import route
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


@route(openai_api, "/chat/completions", "POST", scope="ask", rate_limited=True)
def chat_completions() -> ResponseReturnValue:
    body = json_body()
    question = check_question(_last_user_message(body.get("messages")))
    stream = optional_bool(body, "stream")
    include_usage = _include_usage(body.get("stream_options"))
    max_tokens = _max_tokens(body)
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
            _chunks(completion, first, events, include_usage, answer_finisher("openai")), events
        )
    )


def _last_user_message(messages: Any) -> str:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "invalid_messages", "'messages' must be a list of message objects")
    # Single-turn for now: only the last user message is asked; earlier turns are ignored.
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        raise ApiError(400, "missing_user_message", "'messages' holds no message with role user")
    content = users[-1].get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        texts = [p.get("text") for p in content if p.get("type") == "text"]
        if texts and all(isinstance(t, str) for t in texts):
            return "\n".join(str(t) for t in texts)
    raise ApiError(400, "invalid_messages", "the user message's content must be text")


def _max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ApiError(400, "invalid_max_tokens", f"'{name}' must be a positive integer")
        return value
    return None


def _include_usage(options: Any) -> bool:
    if options is None:
        return False
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise ApiError(400, "invalid_stream_options", "'stream_options' must be an object")
    return bool(options.get("include_usage", False))


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
        code, message = stream_failure(exc)
        yield sse({"error": _error_body(500, code, message)})
        return
    if answer is None:  # pragma: no cover - the stream's contract
        return
    yield sse(completion.chunk({"content": answer.answer}))
    yield sse(completion.chunk({}, completion.finish_reason(answer), abstained=answer.abstained))
    if include_usage:
        yield sse(completion.chunk(None, usage=completion.usage(answer)))
    yield sse("[DONE]")
