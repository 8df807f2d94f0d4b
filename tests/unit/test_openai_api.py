"""The OpenAI-compatible routes under /v1, parsed by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from retriever.components import Components
from server.app import create_app
from tests.unit.serving import QUESTION, fake_model, parse_sse, upload

ANSWER = "Parental leave lasts 16 weeks at full pay [1]."
CHECKED = "16 weeks \u2013 " + ANSWER  # the direct answer, then its source sentence


@pytest.fixture
def app(components: Components) -> Iterator[Flask]:
    components.settings.llm_max_tokens = 40
    app = create_app(components.settings, components)
    upload(app.test_client())
    yield app
    app.extensions["enclave"].shutdown()


def _messages(question: str = QUESTION) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is the canteen menu?"},
        {"role": "assistant", "content": "I could not find the answer in the documents."},
        {"role": "user", "content": question},
    ]


def _assert_openai_error(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")


def test_models(client: FlaskClient) -> None:
    listed = client.get("/v1/models").get_json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == ["enclave-rag"]
    assert client.get("/v1/models/enclave-rag").get_json()["object"] == "model"
    _assert_openai_error(client.get("/v1/models/gpt-4"), 404, "model_not_found")


def test_chat_completion(client: FlaskClient, components: Components) -> None:
    fake_model(components).enqueue(ANSWER + " Cats rule the HR portal [1].")
    response = client.post(
        "/v1/chat/completions",
        json={"model": "anything", "messages": _messages(), "temperature": 0.7},
        headers={"Authorization": "Bearer unused"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "enclave-rag" and isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    # The checked answer: the unsupported sentence was removed.
    assert choice["message"] == {"role": "assistant", "content": CHECKED}
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["abstained"] is False
    assert body["sources"][0]["n"] == 1 and "16 weeks" in body["sources"][0]["text"]
    # Only the last user message was asked.
    prompt = fake_model(components).history[-1][-1]["content"]
    assert QUESTION in prompt and "canteen" not in prompt


def test_chat_completion_content_parts_and_max_tokens(
    client: FlaskClient, components: Components
) -> None:
    fake = fake_model(components)
    long_reply = " ".join(f"w{i}" for i in range(100))
    fake.enqueue(long_reply)
    parts = [{"type": "text", "text": QUESTION}]
    body = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": parts}], "max_tokens": 3},
    ).get_json()
    assert fake.yielded == 3
    assert body["choices"][0]["finish_reason"] == "length"

    # A larger max_tokens is capped by llm_max_tokens (40 here).
    fake.enqueue(long_reply)
    client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}], "max_completion_tokens": 4096},
    )
    assert fake.yielded == 40


def test_chat_completion_stream(client: FlaskClient, components: Components) -> None:
    fake_model(components).enqueue(ANSWER)
    response = client.post(
        "/v1/chat/completions",
        json={
            "messages": _messages(),
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    text = response.get_data(as_text=True)
    assert ": keep-alive" in text  # while the model writes; clients skip comments
    events = parse_sse(text)
    assert all(name is None for name, _ in events)
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    first = chunks[0]
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert first["sources"][0]["n"] == 1
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == CHECKED
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1 and finish[0]["choices"][0]["finish_reason"] == "stop"
    assert finish[0]["abstained"] is False
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_chat_completion_stream_without_usage_ends_with_finish(client: FlaskClient) -> None:
    text = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}], "stream": True},
    ).get_data(as_text=True)
    events = parse_sse(text)
    assert events[-1][1] == "[DONE]"
    last = json.loads(events[-2][1])
    assert last["choices"][0]["finish_reason"] == "stop" and "usage" not in last


@pytest.mark.parametrize(
    "body, code",
    [
        ({}, "invalid_messages"),
        ({"messages": "hi"}, "invalid_messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "missing_user_message"),
        ({"messages": [{"role": "user", "content": 3}]}, "invalid_messages"),
        ({"messages": [{"role": "user", "content": "  "}]}, "empty_question"),
        ({"messages": [{"role": "user", "content": "x" * 5000}]}, "question_too_long"),
        ({"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "invalid_stream"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "invalid_max_tokens"),
        (
            {"messages": [{"role": "user", "content": "hi"}], "stream_options": 1},
            "invalid_stream_options",
        ),
        (
            {
                "messages": [{"role": "user", "content": "hi"}],
                "stream_options": {"include_usage": "yes"},
            },
            "invalid_stream_options",
        ),
        (
            {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": "9"},
            "invalid_max_completion_tokens",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            "invalid_messages",
        ),
    ],
)
def test_chat_completion_errors_use_openai_shape(
    client: FlaskClient, body: dict, code: str
) -> None:
    _assert_openai_error(client.post("/v1/chat/completions", json=body), 400, code)


def test_other_errors_under_v1_use_openai_shape(client: FlaskClient) -> None:
    _assert_openai_error(
        client.post("/v1/chat/completions", data="{", content_type="application/json"),
        400,
        "bad_json",
    )
    _assert_openai_error(client.get("/v1/chat/completions"), 405, "method_not_allowed")
    _assert_openai_error(client.get("/v1/embeddings"), 404, "not_found")
    # /api/v1 keeps Enclave's own shape.
    assert set(client.get("/api/v1/nope").get_json()["error"]) == {"code", "message"}


def test_not_ready_is_503_in_openai_shape(components: Components) -> None:
    client = create_app(components.settings, components, load="never").test_client()
    _assert_openai_error(
        client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}),
        503,
        "not_ready",
    )
