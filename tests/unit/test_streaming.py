"""Streaming answers (server-sent events), generation slots (429) and client disconnects."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config.settings import Settings
from retriever.components import Components
from retriever.embedder import SentenceTransformerEmbedder
from server.app import create_app
from tests.unit.serving import QUESTION, BlockingGenerator, fake_model, sse_json, upload


def _app(components: Components) -> Flask:
    app = create_app(components.settings, components)
    upload(app.test_client())
    return app


@pytest.fixture
def app(components: Components) -> Iterator[Flask]:
    app = _app(components)
    yield app
    app.extensions["enclave"].shutdown()


def test_ask_stream_sends_sources_then_tokens_then_the_checked_answer(
    client: FlaskClient, components: Components
) -> None:
    raw = "Parental leave lasts 16 weeks at full pay [1]. The moon is made of cheese [1]."
    fake_model(components).enqueue(raw)
    response = client.post("/api/v1/ask", json={"question": QUESTION, "stream": True})
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    events = sse_json(response.get_data(as_text=True))

    names = [name for name, _ in events]
    assert names[0] == "sources" and names[-1] == "done"
    assert set(names[1:-1]) == {"token"} and len(names) > 3
    sources = events[0][1]
    assert isinstance(sources, list) and sources[0]["n"] == 1
    assert set(sources[0]) >= {"n", "document_id", "path", "title", "page", "text", "score"}
    # Tokens are the model's raw text, as it streams ...
    assert "".join(data["text"] for name, data in events if name == "token") == raw
    # ... and `done` is the checked answer: the unsupported sentence is gone.
    done = events[-1][1]
    assert done["answer"] == ("16 weeks \u2013 Parental leave lasts 16 weeks at full pay [1].")
    assert done["unsupported_sentences_removed"] == 1
    assert done["sources"] == sources
    assert done["timings"]["queue_ms"] >= 0 and done["timings"]["tokens"] > 0

    # The same object as without streaming (timings aside).
    fake_model(components).enqueue(raw)
    whole = client.post("/api/v1/ask", json={"question": QUESTION}).get_json()
    assert {k: v for k, v in whole.items() if k != "timings"} == {
        k: v for k, v in done.items() if k != "timings"
    }
    assert set(whole["timings"]) == set(done["timings"])


def test_ask_stream_without_the_model_has_no_tokens(client: FlaskClient) -> None:
    extractive = client.post(
        "/api/v1/ask", json={"question": QUESTION, "stream": True, "answer_mode": "extractive"}
    )
    names = [name for name, _ in sse_json(extractive.get_data(as_text=True))]
    assert names == ["sources", "done"]

    nothing = client.post(
        "/api/v1/ask", json={"question": QUESTION, "stream": True, "collection": "elsewhere"}
    )
    events = sse_json(nothing.get_data(as_text=True))
    assert events[0] == ("sources", [])
    assert events[1][0] == "done" and events[1][1]["abstained"] is True


def test_ask_stream_flag_must_be_a_boolean(client: FlaskClient) -> None:
    response = client.post("/api/v1/ask", json={"question": QUESTION, "stream": "yes"})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_stream"


def test_generation_error_mid_stream_is_an_error_event(
    client: FlaskClient, components: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retriever.generation import GenerationError

    def broken(*_: object) -> Iterator[str]:
        yield "Parental"
        raise GenerationError("the model crashed")

    monkeypatch.setattr(fake_model(components), "stream", broken)
    response = client.post("/api/v1/ask", json={"question": QUESTION, "stream": True})
    events = sse_json(response.get_data(as_text=True))
    assert [name for name, _ in events] == ["sources", "token", "error"]
    assert events[-1][1] == {"error": {"code": "generation_failed", "message": "the model crashed"}}
    assert components.slots.stats()["active"] == 0


def test_client_disconnect_stops_generation_and_frees_the_slot(
    client: FlaskClient, components: Components
) -> None:
    components.settings.generation_queue = 0
    fake = fake_model(components)
    fake.enqueue(" ".join(f"word{i}" for i in range(100)))
    response = client.post(
        "/api/v1/ask", json={"question": QUESTION, "stream": True}, buffered=False
    )
    chunks = iter(response.response)
    received = [next(chunks) for _ in range(4)]  # sources + 3 tokens
    assert received[0].startswith(b"event: sources")
    assert components.slots.stats()["active"] == 1
    response.close()  # what the WSGI server does when the client has gone

    assert fake.stopped_early == 1
    assert fake.yielded < 10
    assert components.slots.stats() == {"slots": 1, "queue": 0, "active": 0, "waiting": 0}
    # The slot is free again: the next question is answered, not refused.
    assert client.post("/api/v1/ask", json={"question": QUESTION}).status_code == 200


def test_a_stopped_answer_that_cannot_be_stored_still_frees_the_slot(
    app: Flask, components: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the stream stores the answer as far as it got; when that fails (a locked
    database, say), the model is still stopped and its slot freed at once."""
    client = app.test_client()
    store = app.extensions["enclave"].conversations
    conversation = client.post("/api/v1/conversations", json={}).get_json()["id"]
    fake = fake_model(components)
    fake.enqueue(" ".join(f"word{i}" for i in range(100)))
    response = client.post(
        "/api/v1/ask",
        json={"question": QUESTION, "stream": True, "conversation_id": conversation},
        buffered=False,
    )
    chunks = iter(response.response)
    [next(chunks) for _ in range(4)]  # sources + 3 tokens

    def locked(*args: object, **kwargs: object) -> str:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(store, "add_message", locked)
    with pytest.raises(RuntimeError, match="locked"):
        response.close()
    assert fake.stopped_early == 1
    assert components.slots.stats()["active"] == 0


def test_busy_model_answers_429_with_retry_after(
    settings: Settings, embedder: SentenceTransformerEmbedder
) -> None:
    settings.generation_slots = 1
    settings.generation_queue = 0
    blocking = BlockingGenerator()
    components = Components(settings, embedder=embedder, generator=blocking)
    app = _app(components)
    try:
        results: list[int] = []
        first = threading.Thread(
            target=lambda: results.append(
                app.test_client().post("/api/v1/ask", json={"question": QUESTION}).status_code
            )
        )
        first.start()
        assert blocking.started.wait(timeout=30)  # it holds the only slot now

        client = app.test_client()
        busy = client.post("/api/v1/ask", json={"question": QUESTION})
        assert busy.status_code == 429
        assert busy.get_json()["error"]["code"] == "busy"
        assert int(busy.headers["Retry-After"]) >= 1
        streamed = client.post("/api/v1/ask", json={"question": QUESTION, "stream": True})
        assert streamed.status_code == 429 and streamed.mimetype == "application/json"
        openai = client.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]}
        )
        assert openai.status_code == 429 and int(openai.headers["Retry-After"]) >= 1
        assert openai.get_json()["error"]["code"] == "busy"
        # Extractive answers need no slot.
        quoted = client.post(
            "/api/v1/ask", json={"question": QUESTION, "answer_mode": "extractive"}
        )
        assert quoted.status_code == 200

        blocking.go.set()
        first.join(timeout=30)
        assert results == [200]
        assert client.post("/api/v1/ask", json={"question": QUESTION}).status_code == 200
        health = client.get("/api/v1/health").get_json()
        assert health["generation"] == {"slots": 1, "queue": 0, "active": 0, "waiting": 0}
    finally:
        blocking.go.set()
        app.extensions["enclave"].shutdown()


def test_ask_out_of_time_while_queued_answers_504(
    client: FlaskClient, components: Components
) -> None:
    held = components.slots.admit()  # another question holds the only slot
    try:
        response = client.post("/api/v1/ask", json={"question": QUESTION, "timeout_s": 0.05})
    finally:
        held.release()
    assert response.status_code == 504
    assert response.get_json()["error"]["code"] == "timeout"


@pytest.mark.parametrize("value", [0, -1, "soon", True])
def test_ask_timeout_must_be_a_positive_number(client: FlaskClient, value: object) -> None:
    response = client.post("/api/v1/ask", json={"question": QUESTION, "timeout_s": value})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_timeout_s"
