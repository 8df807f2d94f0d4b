"""Conversations, follow-ups through /api/v1/ask, and feedback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from retriever.components import Components
from retriever.generation import FakeGenerator
from server.app import create_app
from tests.unit.serving import LEAVE, QUESTION, BlockingGenerator, fake_model, sse_json, upload


@pytest.fixture
def app(components: Components) -> Iterator[Flask]:
    app = create_app(components.settings, components)
    yield app
    app.extensions["enclave"].shutdown()


def _new(client: FlaskClient, **body: str) -> str:
    response = client.post("/api/v1/conversations", json=body)
    assert response.status_code == 201
    return str(response.get_json()["id"])


def test_conversation_routes(client: FlaskClient) -> None:
    conversation_id = _new(client)
    listed = client.get("/api/v1/conversations").get_json()["conversations"]
    assert [(c["id"], c["title"], c["messages"]) for c in listed] == [
        (conversation_id, "New chat", 0)
    ]
    renamed = client.patch(f"/api/v1/conversations/{conversation_id}", json={"title": "Leave"})
    assert renamed.status_code == 200 and renamed.get_json()["title"] == "Leave"
    body = client.get(f"/api/v1/conversations/{conversation_id}").get_json()
    assert body["title"] == "Leave" and body["messages"] == []
    assert client.delete(f"/api/v1/conversations/{conversation_id}").status_code == 200
    assert client.get(f"/api/v1/conversations/{conversation_id}").status_code == 404


@pytest.mark.parametrize(
    "method, path, body, status, code",
    [
        ("get", "/api/v1/conversations/nope", None, 404, "conversation_not_found"),
        ("delete", "/api/v1/conversations/nope", None, 404, "conversation_not_found"),
        ("patch", "/api/v1/conversations/nope", {"title": "x"}, 404, "conversation_not_found"),
        ("get", "/api/v1/conversations?limit=0", None, 400, "invalid_limit"),
        ("post", "/api/v1/conversations", {"title": 3}, 400, "invalid_title"),
        ("post", "/api/v1/ask", {"question": "hi", "conversation_id": 3}, 400,
         "invalid_conversation_id"),
        ("post", "/api/v1/ask", {"question": "hi", "conversation_id": "nope"}, 404,
         "conversation_not_found"),
        ("post", "/api/v1/feedback", {"message_id": "m", "rating": "meh"}, 400, "invalid_rating"),
        ("post", "/api/v1/feedback", {"rating": "up"}, 400, "invalid_message_id"),
        ("post", "/api/v1/feedback", {"message_id": "m", "rating": "up", "comment": 5}, 400,
         "invalid_comment"),
        ("post", "/api/v1/feedback", {"message_id": "nope", "rating": "up"}, 404,
         "message_not_found"),
        ("get", "/api/v1/feedback?rating=meh", None, 400, "invalid_rating"),
    ],
)  # fmt: skip
def test_conversation_errors(
    client: FlaskClient, method: str, path: str, body: dict | None, status: int, code: str
) -> None:
    response = getattr(client, method)(path, json=body)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == code


def test_rename_needs_a_title(client: FlaskClient) -> None:
    conversation_id = _new(client)
    for body in ({}, {"title": "  "}, {"title": "x" * 81}):
        response = client.patch(f"/api/v1/conversations/{conversation_id}", json=body)
        assert response.get_json()["error"]["code"] == "invalid_title"


def test_ask_in_a_conversation_stores_turns_and_rewrites_follow_ups(
    client: FlaskClient, components: Components
) -> None:
    upload(client)
    conversation_id = _new(client)
    first = client.post(
        "/api/v1/ask", json={"question": QUESTION, "conversation_id": conversation_id}
    ).get_json()
    assert first["conversation_id"] == conversation_id and first["query"] == QUESTION
    assert not first["abstained"]

    # A follow-up: retrieval (and the model) get the topic of the previous question.
    fake_model(components).enqueue("It can be split into two blocks [1].")
    events = sse_json(
        client.post(
            "/api/v1/ask",
            json={
                "question": "Can it be split?",
                "conversation_id": conversation_id,
                "stream": True,
            },
        ).get_data(as_text=True)
    )
    done = dict(events)["done"]
    assert done["query"].startswith("Can it be split? (") and "parental" in done["query"]
    assert "parental" in fake_model(components).history[-1][-1]["content"]
    assert done["message_id"] and done["conversation_id"] == conversation_id

    body = client.get(f"/api/v1/conversations/{conversation_id}").get_json()
    assert body["title"] == QUESTION
    messages = body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["query"] is None and messages[2]["query"] == done["query"]
    assert messages[3]["id"] == done["message_id"]
    assert messages[3]["answer"]["sources"][0]["text"] == LEAVE  # renders again as answered
    assert messages[3]["answer"]["supports"] == done["supports"]

    rated = client.post(
        "/api/v1/feedback",
        json={"message_id": done["message_id"], "rating": "down", "comment": "Too vague"},
    )
    assert rated.status_code == 201
    listed = client.get("/api/v1/feedback").get_json()
    assert listed["counts"] == {"up": 0, "down": 1}
    [entry] = listed["feedback"]
    assert (entry["question"], entry["comment"]) == ("Can it be split?", "Too vague")
    assert client.get("/api/v1/feedback?rating=up").get_json()["feedback"] == []
    messages = client.get(f"/api/v1/conversations/{conversation_id}").get_json()["messages"]
    assert messages[3]["feedback"] == {"rating": "down", "comment": "Too vague"}


def test_a_stopped_stream_is_stored_as_far_as_it_got(
    components: Components, tmp_path: Path
) -> None:
    blocking = BlockingGenerator()
    components.__dict__["generator"] = blocking
    app = create_app(components.settings, components)
    try:
        client = app.test_client()
        upload(client)
        conversation_id = _new(client)
        response = client.post(
            "/api/v1/ask",
            json={"question": QUESTION, "conversation_id": conversation_id, "stream": True},
            buffered=False,
        )
        chunks = iter(response.response)
        assert b"event: sources" in next(chunks)
        blocking.go.set()
        assert b"event: token" in next(chunks)
        response.close()  # the reader pressed stop
        messages = client.get(f"/api/v1/conversations/{conversation_id}").get_json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[1]["stopped"] and messages[1]["answer"]["stopped"]
        assert messages[1]["content"] and messages[1]["answer"]["sources"]
    finally:
        app.extensions["enclave"].shutdown()


def test_a_conversation_keeps_its_newest_messages_only(components: Components) -> None:
    """Review 2: one user could grow a conversation without bound through /api/v1/ask.
    Beyond `max_messages_per_conversation` its oldest messages go (as the oldest
    conversations beyond `max_conversations_per_user`); the conversation goes on."""
    settings = components.settings.model_copy(update={"max_messages_per_conversation": 4})
    app = create_app(
        settings, Components(settings, embedder=components.embedder, generator=FakeGenerator())
    )
    try:
        client = app.test_client()
        upload(client)
        conversation_id = _new(client)
        questions = [
            "How long is parental leave?",
            "Can parental leave be split into blocks?",
            "Where do parental leave requests go?",
            "How far ahead must parental leave be requested?",
        ]
        answers = []
        for i, question in enumerate(questions[:3]):
            stream = i == 2  # the streamed answer is stored the same way
            body = {"question": question, "conversation_id": conversation_id, "stream": stream}
            response = client.post("/api/v1/ask", json=body)
            assert response.status_code == 200, response.get_data(as_text=True)
            text = response.get_data(as_text=True)
            done = dict(sse_json(text))["done"] if stream else response.get_json()
            answers.append(done["message_id"])
            if i == 0:  # rated before it is pruned
                rated = {"message_id": done["message_id"], "rating": "up"}
                assert client.post("/api/v1/feedback", json=rated).status_code == 201

        messages = client.get(f"/api/v1/conversations/{conversation_id}").get_json()["messages"]
        # 6 stored, the newest 4 kept, in order: the second and third question and answer.
        assert [(m["role"], m["content"]) for m in messages][0::2] == [
            ("user", questions[1]),
            ("user", questions[2]),
        ]
        assert [m["role"] for m in messages] == ["user", "assistant"] * 2
        assert [m["id"] for m in messages[1::2]] == answers[1:]
        listed = client.get("/api/v1/conversations").get_json()["conversations"]
        assert [(c["id"], c["messages"]) for c in listed] == [(conversation_id, 4)]
        # A pruned answer is gone for rating; its earlier rating stays listed for the admins,
        # as when a whole conversation is deleted.
        gone = client.post("/api/v1/feedback", json={"message_id": answers[0], "rating": "down"})
        assert gone.status_code == 404
        assert client.get("/api/v1/feedback").get_json()["counts"] == {"up": 1, "down": 0}

        # The conversation goes on: a follow-up is answered, stored, and can be rated.
        last = client.post(
            "/api/v1/ask", json={"question": questions[3], "conversation_id": conversation_id}
        )
        assert last.status_code == 200 and last.get_json()["conversation_id"] == conversation_id
        messages = client.get(f"/api/v1/conversations/{conversation_id}").get_json()["messages"]
        assert [m["content"] for m in messages[0::2]] == questions[2:]
        assert [m["id"] for m in messages[1::2]] == [answers[2], last.get_json()["message_id"]]
        rated = {"message_id": last.get_json()["message_id"], "rating": "up"}
        assert client.post("/api/v1/feedback", json=rated).status_code == 201
    finally:
        app.extensions["enclave"].shutdown()
