"""The `openai` generation backend against a real HTTP server, and per-request time limits."""

from __future__ import annotations

import pytest

from config.settings import Settings
from retriever.answer import GenerationTimeout
from retriever.components import Components, build_generator
from retriever.generation import GenerationError, GenerationParams, OpenAIGenerator
from retriever.question import Question
from retriever.types import Chunk, chunk_id
from tests.openai_stub import stub_model_server

MESSAGES = [{"role": "user", "content": "Say hello."}]


def test_streams_the_server_reply_and_names_its_model() -> None:
    with stub_model_server(model="qwen-7b") as server:
        server.reply = lambda messages: "Hello there, friend."
        generator = OpenAIGenerator(server.url, api_key="s3cret")
        pieces = list(generator.stream(MESSAGES, GenerationParams(max_tokens=17)))
    assert "".join(pieces) == "Hello there, friend."
    assert len(pieces) == 3  # streamed, not buffered
    assert generator.name == "qwen-7b"
    (request,) = server.requests
    assert request["body"]["model"] == "qwen-7b"
    assert request["body"]["max_tokens"] == 17 and request["body"]["stream"] is True
    assert request["headers"]["Authorization"] == "Bearer s3cret"


def test_token_estimate_errs_on_the_safe_side() -> None:
    with stub_model_server() as server:
        generator = OpenAIGenerator(server.url, model="m")
    text = "Parental leave lasts sixteen weeks at full pay."
    assert generator.count_tokens(text) >= len(text.split()) * 1.5


def test_a_server_error_is_a_clear_generation_error() -> None:
    with stub_model_server() as server:
        server.status = 503
        generator = OpenAIGenerator(server.url, model="m")
        with pytest.raises(GenerationError, match="answered 503"):
            list(generator.stream(MESSAGES, GenerationParams()))


def test_an_unreachable_server_is_named_in_the_error() -> None:
    with stub_model_server() as server:
        url = server.url
    with pytest.raises(GenerationError, match="cannot list the models"):
        OpenAIGenerator(url)


def test_settings_pick_the_backend_and_require_an_endpoint(settings: Settings) -> None:
    with pytest.raises(GenerationError, match="needs llm_endpoint"):
        build_generator(settings.model_copy(update={"llm_backend": "openai"}))
    with stub_model_server() as server:
        chosen = settings.model_copy(
            update={"llm_backend": "openai", "llm_endpoint": server.url, "llm_model": "big"}
        )
        generator = build_generator(chosen)
    assert isinstance(generator, OpenAIGenerator) and generator.name == "big"


def _index(components: Components) -> None:
    text = "Parental leave lasts 16 weeks at full pay. It may be split into two blocks."
    chunk = Chunk(chunk_id("leave", 0, text), "leave", 0, text, "/leave.md", "Leave", "default")
    components.store.upsert([chunk], components.embedder.embed([chunk.embedding_text()]))
    components.keyword.add([chunk])


def test_out_of_time_while_writing_stops_the_model_and_checks_what_it_wrote(
    components: Components,
) -> None:
    _index(components)
    components.generator.enqueue(  # type: ignore[attr-defined]
        "Parental leave lasts 16 weeks at full pay [1]. It may be split into two blocks [1]."
    )
    answer = components.answers.ask(Question("How long is parental leave?", timeout_s=1e-9))
    assert answer.timings["timed_out"] is True
    assert components.generator.stopped_early == 1  # type: ignore[attr-defined]
    assert answer.timings["tokens"] == 1  # one piece, then the deadline


def test_out_of_time_while_queued_is_a_timeout(components: Components) -> None:
    _index(components)
    held = components.slots.admit()  # another request holds the only slot
    try:
        with pytest.raises(GenerationTimeout, match="no generation slot"):
            components.answers.ask(Question("How long is parental leave?", timeout_s=0.05))
        assert components.slots.stats()["waiting"] == 0  # the timed-out request left the queue
    finally:
        held.release()


def test_a_request_cannot_raise_the_configured_time_limit(components: Components) -> None:
    components.answers.timeout_s = 1e-9
    _index(components)
    answer = components.answers.ask(Question("How long is parental leave?", timeout_s=3600))
    assert answer.timings.get("timed_out") is True
