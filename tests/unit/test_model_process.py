"""The model in a supervised process: a crash (SIGSEGV) or a hang in the model fails only the
answer being written (JSON 503 `model_unavailable` or an SSE `error`), the process is replaced
and the next question is answered by the same server; a client that goes away stops the
generation in the child; the start-up self-test falls back to the safe CPU settings when the
fast ones crash, and its verdict is kept. The model here is `ScriptedModel`, run in the child."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config.settings import Settings, load_settings
from retriever.components import Components, build_generator
from retriever.embedder import SentenceTransformerEmbedder
from retriever.generation import GenerationParams, ModelUnavailable
from retriever.model_process import (
    CRASH_HOOK_ENV,
    ModelProcessGenerator,
    ModelSpec,
    Verdicts,
    exit_reason,
    start_with_profile,
    verdict_key,
)
from retriever.models import bundled_llm_path
from retriever.prompt import fixed_prefix
from server.app import create_app
from tests.unit.model_backend import record, scripted_process, scripted_spec
from tests.unit.serving import QUESTION, sse_json, upload


@pytest.fixture
def model(tmp_path: Path) -> Iterator[ModelProcessGenerator]:
    generator = scripted_process(tmp_path)
    yield generator
    generator.close()


@pytest.fixture
def app(
    settings: Settings, embedder: SentenceTransformerEmbedder, model: ModelProcessGenerator
) -> Iterator[Flask]:
    settings.llm_timeout_s = 3.0
    app = create_app(settings, Components(settings, embedder=embedder, generator=model))
    upload(app.test_client())
    yield app
    app.extensions["enclave"].shutdown()


def script(folder: Path, command: str) -> None:
    (folder / "script").write_text(command)


def test_a_crash_mid_answer_is_a_503_and_the_next_question_is_answered(
    client: FlaskClient, model: ModelProcessGenerator, tmp_path: Path
) -> None:
    server, child = os.getpid(), model.pid
    script(tmp_path, "crash-after 2")
    response = client.post("/api/v1/ask", json={"question": QUESTION})

    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "model_unavailable"
    assert "SIGSEGV" in error["message"] and "restarting" in error["message"]
    assert response.headers["Retry-After"]
    assert "crash-after 2" in record(tmp_path)  # it did die in the middle of the answer

    script(tmp_path, "")
    again = client.post("/api/v1/ask", json={"question": QUESTION})
    assert again.status_code == 200, again.get_json()
    assert "Parental leave lasts 16 weeks" in again.get_json()["answer"]
    # The same server, a new model process.
    assert os.getpid() == server and model.pid not in (None, child)

    health = client.get("/api/v1/health").get_json()
    assert health["status"] == "ok"
    process = health["model_process"]
    assert process["restarts"] == 1 and process["alive"] and process["pid"] == model.pid
    assert "SIGSEGV" in process["last_crash"]["reason"]


def test_a_crash_while_streaming_is_an_sse_error_event(
    client: FlaskClient, model: ModelProcessGenerator, tmp_path: Path
) -> None:
    script(tmp_path, "crash-after 3")
    response = client.post("/api/v1/ask", json={"question": QUESTION, "stream": True})
    assert response.status_code == 200
    events = sse_json(response.get_data(as_text=True))
    names = [name for name, _ in events]
    # What was written before the crash, then the error (the child sends pieces written in
    # the same 30 ms together, so the last ones may die with it).
    assert names[0] == "sources" and names[-1] == "error"
    assert names[1:-1] and set(names[1:-1]) == {"token"}
    assert events[-1][1]["error"]["code"] == "model_unavailable"
    assert "SIGSEGV" in events[-1][1]["error"]["message"]

    script(tmp_path, "")
    events = sse_json(
        client.post("/api/v1/ask", json={"question": QUESTION, "stream": True}).get_data(
            as_text=True
        )
    )
    assert events[-1][0] == "done" and not events[-1][1]["abstained"]


def test_a_hung_model_process_is_replaced_after_the_request_timeout(
    client: FlaskClient, model: ModelProcessGenerator, tmp_path: Path
) -> None:
    child = model.pid
    script(tmp_path, "hang-after 1")
    start = time.perf_counter()
    response = client.post("/api/v1/ask", json={"question": QUESTION, "timeout_s": 1.5})
    took = time.perf_counter() - start

    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "model_unavailable"
    assert "hung" in response.get_json()["error"]["message"]
    # The request's 1.5 s, then the child's grace to stop (1 s in these tests), not llm_timeout_s.
    assert 1.5 <= took < 2.9 + 1.0, took
    assert model.pid != child and model.restarts == 1

    script(tmp_path, "")
    assert client.post("/api/v1/ask", json={"question": QUESTION}).status_code == 200


def test_client_disconnect_stops_the_generation_in_the_child(
    client: FlaskClient, model: ModelProcessGenerator, tmp_path: Path
) -> None:
    child = model.pid
    script(tmp_path, "slow")
    response = client.post(
        "/api/v1/ask", json={"question": QUESTION, "stream": True}, buffered=False
    )
    chunks = iter(response.response)
    received = [next(chunks) for _ in range(4)]  # sources + 3 tokens
    assert received[0].startswith(b"event: sources")
    response.close()  # what the WSGI server does when the client has gone

    ended = [line for line in record(tmp_path) if line.startswith("ended after")]
    assert ended and int(ended[-1].split()[-1]) < 20  # of the 200 pieces it would write
    # Stopped between two tokens, not killed: the same child answers the next question.
    script(tmp_path, "")
    assert client.post("/api/v1/ask", json={"question": QUESTION}).status_code == 200
    assert model.pid == child and model.restarts == 0


def test_pieces_written_faster_than_they_are_read_arrive_together_and_whole(
    model: ModelProcessGenerator, tmp_path: Path
) -> None:
    script(tmp_path, "burst")
    reply = " ".join(f"word{i}" for i in range(200))
    messages = [{"role": "user", "content": "go"}]
    arrived = list(model.stream(messages, GenerationParams(max_tokens=300)))
    assert "".join(arrived) == reply
    assert arrived[0] == "word0"  # the first piece is not held back (time to first token)
    # A message per PIECE_INTERVAL_S at most after the first, not one per piece.
    assert len(arrived) < 20
    assert [line for line in record(tmp_path) if line.startswith("ended")] == ["ended after 200"]


def test_the_replacement_child_is_primed_with_the_system_prompt(tmp_path: Path) -> None:
    model = scripted_process(tmp_path)
    try:
        messages = [{"role": "system", "content": "You answer from sources."}]
        model.prime(messages)
        script(tmp_path, "crash-after 0")
        with pytest.raises(ModelUnavailable):
            list(model.stream(messages, GenerationParams()))
        model.wait_ready()
        lines = record(tmp_path)
        assert lines[lines.index(f"loaded {model.pid}") + 1 :] == ["primed 1"]
    finally:
        model.close()


def test_a_model_still_loading_is_not_killed_by_a_short_deadline(tmp_path: Path) -> None:
    spec = scripted_spec(tmp_path)
    spec.kwargs["load_s"] = 3.0
    model = ModelProcessGenerator(spec, len, 2048, timeout_s=30)
    try:
        child = model.pid
        messages = [{"role": "user", "content": "hi"}]
        with pytest.raises(ModelUnavailable, match="still starting"):
            list(model.stream(messages, GenerationParams(deadline=time.perf_counter() + 0.5)))
        assert model.pid == child and model.restarts == 0
        assert list(model.stream(messages, GenerationParams()))  # once loaded, it answers
        assert model.pid == child
    finally:
        model.close()


def test_a_model_that_cannot_load_says_why(tmp_path: Path) -> None:
    spec = ModelSpec("tests.unit.model_backend:ScriptedModel", {"script": "x"}, "fast")
    model = ModelProcessGenerator(spec, len, 2048, timeout_s=10)
    with pytest.raises(ModelUnavailable, match="could not start: TypeError"):
        model.wait_ready(restart=False)


def test_exit_reasons_in_words() -> None:
    assert exit_reason(-11) == "killed by SIGSEGV"
    assert exit_reason(-9) == "killed by SIGKILL (out of memory?)"
    assert exit_reason(1) == "exited with code 1"


# -- the CPU profile self-test ---------------------------------------------------------------


def _start(tmp_path: Path, choice: str, made: list[tuple[str, bool]]) -> ModelProcessGenerator:
    specs = {"fast": scripted_spec(tmp_path, "fast"), "safe": scripted_spec(tmp_path, "safe")}
    model_file = tmp_path / "model.gguf"
    if not model_file.exists():
        model_file.write_bytes(b"GGUF")

    def make(spec: ModelSpec, self_test: bool) -> ModelProcessGenerator:
        made.append((spec.profile, self_test))
        return ModelProcessGenerator(spec, len, 2048, name=spec.profile, self_test=self_test)

    return start_with_profile(
        specs,  # type: ignore[arg-type]
        choice,  # type: ignore[arg-type]
        Verdicts(tmp_path / "verdicts.json"),
        verdict_key(model_file),
        make,
    )


def test_a_self_test_that_crashes_falls_back_to_safe_and_is_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(CRASH_HOOK_ENV, "fast")  # the fast settings crash, as AMX did
    made: list[tuple[str, bool]] = []
    with caplog.at_level(logging.INFO, logger="retriever.model_process"):
        model = _start(tmp_path, "auto", made)
    try:
        assert made == [("fast", True), ("safe", True)]
        assert model.spec.profile == "safe"
        assert "crashed the start-up self-test" in model.profile_reason
        assert "SIGSEGV" in model.profile_reason
        assert "falling back to the safe settings" in caplog.text
        assert "runs with the safe CPU settings" in caplog.text
        assert list(model.stream([{"role": "user", "content": "hi"}], GenerationParams()))
    finally:
        model.close()

    verdicts = json.loads((tmp_path / "verdicts.json").read_text())
    (verdict,) = verdicts.values()
    assert verdict["profile"] == "safe" and verdict["cpu"]["model"]
    assert verdict["model"]["name"] == "model.gguf" and verdict["llama_cpp_python"]

    # The second start on this machine does not pay for the self-test again.
    made.clear()
    again = _start(tmp_path, "auto", made)
    try:
        assert made == [("safe", False)]
        assert "crashed the start-up self-test" in again.profile_reason
    finally:
        again.close()


def test_a_self_test_that_fails_without_a_native_fault_is_not_remembered(tmp_path: Path) -> None:
    """The fast settings fail to load (a Python error, as a wrong model file or a broken
    install gives): the safe settings serve this start, but nothing is concluded about the
    CPU, and the next start tests the fast settings again."""
    safe = scripted_spec(tmp_path, "safe")
    broken = ModelSpec(safe.factory, {"script": "x"}, "fast")  # a TypeError when loaded
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    made: list[str] = []

    def make(spec: ModelSpec, self_test: bool) -> ModelProcessGenerator:
        made.append(spec.profile)
        return ModelProcessGenerator(spec, len, 2048, name=spec.profile, self_test=self_test)

    def start() -> ModelProcessGenerator:
        return start_with_profile(
            {"fast": broken, "safe": safe},
            "auto",
            Verdicts(tmp_path / "verdicts.json"),
            verdict_key(tmp_path / "model.gguf"),
            make,
        )

    model = start()
    try:
        assert model.spec.profile == "safe"
        assert "not by a fault in native code" in model.profile_reason
        assert list(model.stream([{"role": "user", "content": "hi"}], GenerationParams()))
    finally:
        model.close()
    assert not (tmp_path / "verdicts.json").exists()
    start().close()
    assert made == ["fast", "safe", "fast", "safe"]  # tested again


def test_when_both_profiles_crash_the_server_still_starts_and_answers_503(
    settings: Settings,
    embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CRASH_HOOK_ENV, "fast,safe")
    made: list[tuple[str, bool]] = []
    model = _start(tmp_path, "auto", made)
    app = create_app(settings, Components(settings, embedder=embedder, generator=model))
    try:
        client = app.test_client()
        upload(client)  # the server is up: ingestion works
        assert client.get("/api/v1/health").get_json()["status"] == "ok"
        assert "the safe settings crashed too" in model.profile_reason
        assert not (tmp_path / "verdicts.json").exists()  # the next start tests again
        extractive = client.post(
            "/api/v1/ask", json={"question": QUESTION, "answer_mode": "extractive"}
        )
        assert extractive.status_code == 200 and not extractive.get_json()["abstained"]
        generative = client.post("/api/v1/ask", json={"question": QUESTION})
        assert generative.status_code == 503
        assert generative.get_json()["error"]["code"] == "model_unavailable"
    finally:
        app.extensions["enclave"].shutdown()


def test_a_self_test_that_passes_keeps_the_fast_settings(tmp_path: Path) -> None:
    made: list[tuple[str, bool]] = []
    model = _start(tmp_path, "auto", made)
    model.close()
    assert made == [("fast", True)] and model.spec.profile == "fast"
    made.clear()
    _start(tmp_path, "auto", made).close()
    assert made == [("fast", False)]


def test_a_rebuilt_llama_cpp_is_tested_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llama_cpp

    # A llama_cpp package whose libllama is a file of ours: rebuilding it changes the key.
    package = tmp_path / "site" / "llama_cpp"
    (package / "lib").mkdir(parents=True)
    library = package / "lib" / "libllama.so"
    library.write_bytes(b"native build")
    monkeypatch.setattr(llama_cpp, "__file__", str(package / "__init__.py"))
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    native, parts = verdict_key(model)
    assert parts["llama_cpp_build"]["size"] == len(b"native build")
    library.write_bytes(b"portable build, all variants")
    assert verdict_key(model)[0] != native


def test_a_changed_model_file_is_tested_again(tmp_path: Path) -> None:
    made: list[tuple[str, bool]] = []
    _start(tmp_path, "auto", made).close()
    (tmp_path / "model.gguf").write_bytes(b"GGUF, another one")
    made.clear()
    _start(tmp_path, "auto", made).close()
    assert made == [("fast", True)]


@pytest.mark.parametrize("choice", ["fast", "safe"])
def test_an_administrator_can_force_a_profile(tmp_path: Path, choice: str) -> None:
    made: list[tuple[str, bool]] = []
    model = _start(tmp_path, choice, made)
    model.close()
    assert made == [(choice, False)]
    assert model.profile_reason == f"llm_cpu_profile = {choice}"
    assert not (tmp_path / "verdicts.json").exists()


# -- the real SLM (llama.cpp) in its process ------------------------------------------------


def test_the_bundled_slm_falls_back_to_safe_settings_and_keeps_its_prompt_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CRASH_HOOK_ENV, "fast")
    settings = load_settings(data_dir=tmp_path, llm_backend="llamacpp", llm_cpu_profile="auto")
    model = build_generator(settings)
    assert isinstance(model, ModelProcessGenerator)
    try:
        assert model.spec.profile == "safe" and "SIGSEGV" in model.profile_reason
        assert model.spec.kwargs["model_path"] == bundled_llm_path()  # the file as shipped
        assert model.spec.kwargs["extra_buffer_types"] is False
        assert model.name == f"{bundled_llm_path().name} (safe CPU settings)"
        system, user = fixed_prefix()
        # The web process counts tokens from the vocabulary alone, as the model does.
        for text in (system["content"], "<|im_start|>user\nwörld [1] 🙂", ""):
            assert model.count_tokens(text) == model.call("count_tokens", text)
        model.prime([system, user])
        model.call("perf_counters", True)
        question = {"role": "user", "content": user["content"] + "[1] Leave\nLeave is 16 weeks."}
        reply = "".join(model.stream([system, question], GenerationParams(max_tokens=12)))
        assert reply.strip()
        counters = model.call("perf_counters")
        # Only what follows the primed system prompt was evaluated, in the child's cache.
        assert 0 < counters["n_p_eval"] < model.count_tokens(system["content"])
        assert counters["n_eval"] >= 1

        # Closing the stream (a client gone) stops llama.cpp in the child within a token.
        child = model.pid
        model.call("perf_counters", True)
        story = {"role": "user", "content": "Write a long story about a cat."}
        stream = model.stream([story], GenerationParams(max_tokens=200))
        received = "".join(next(stream) for _ in range(3))
        stream.close()
        # What was shown, plus the token or two written while the cancel was on its way.
        written = model.count_tokens(received)
        assert model.call("perf_counters")["n_eval"] <= written + 3 and model.pid == child
    finally:
        model.close()

    again = build_generator(settings)
    assert isinstance(again, ModelProcessGenerator)
    try:  # the verdict was kept: no second self-test
        assert again.spec.profile == "safe" and "(self-test of" in again.profile_reason
    finally:
        again.close()


def test_the_safe_profile_loads_without_extra_buffer_types() -> None:
    import llama_cpp.llama_cpp as low_level

    from retriever.generation import LlamaCppGenerator

    safe = LlamaCppGenerator(bundled_llm_path(), 512, 1, False, extra_buffer_types=False)
    assert safe.llm.model_params.use_extra_bufts is False
    assert "".join(safe.stream([{"role": "user", "content": "Hi"}], GenerationParams(max_tokens=4)))
    # Only that model: the defaults are llama.cpp's again.
    assert low_level.llama_model_default_params().use_extra_bufts is True
    fast = LlamaCppGenerator(bundled_llm_path(), 512, 1, False)
    assert fast.llm.model_params.use_extra_bufts is True
