"""Escalation to a larger model under the owner's policy, with a real HTTP model server
standing in for the larger model and the real audit log."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import Settings, load_settings
from retriever.components import Components
from retriever.embedder import SentenceTransformerEmbedder
from retriever.escalation import ESCALATION_ACTION, EscalationRefused, check_policy
from retriever.generation import FakeGenerator
from retriever.question import Question
from retriever.types import Chunk, chunk_id
from tests.openai_stub import stub_model_server

LEAVE = "Parental leave lasts 16 weeks at full pay. It may be split into two blocks."
QUESTION = "How long is parental leave?"


def test_policy_never_refuses_every_endpoint() -> None:
    with pytest.raises(EscalationRefused, match="never"):
        check_policy("never", "http://10.0.0.5:8080/v1", ["10.0.0.5"])


def test_policy_on_premises_refuses_a_host_not_listed() -> None:
    with pytest.raises(EscalationRefused, match=r"api\.example\.com is not in"):
        check_policy("on_premises", "https://api.example.com/v1", ["models.internal"])
    assert check_policy("on_premises", "http://Models.Internal:8080/v1", ["models.internal"])


def test_policy_always_allows_any_endpoint_but_needs_one() -> None:
    assert check_policy("always", "https://api.example.com/v1", []) == "api.example.com"
    with pytest.raises(EscalationRefused, match="no escalation_endpoint"):
        check_policy("always", "", [])
    with pytest.raises(EscalationRefused, match="not an http"):
        check_policy("always", "models.internal", [])


def _components(
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
    local: FakeGenerator,
    **escalation: object,
) -> Components:
    settings = Settings(
        data_dir=tmp_path / "data", llm_backend="fake", watch="off", parse_workers=0, **escalation
    )
    components = Components(settings, embedder=embedder, generator=local)
    chunk = Chunk(chunk_id("leave", 0, LEAVE), "leave", 0, LEAVE, "/hr/leave.md", "Leave", "hr")
    components.store.upsert([chunk], embedder.embed([chunk.embedding_text()]))
    components.keyword.add([chunk])
    return components


def _always(
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
    url: str,
    local: FakeGenerator | None = None,
) -> Components:
    """Components whose local model gives up (unless given), escalating under `always`."""
    local = local or _local_model_that_gives_up()
    return _components(
        tmp_path, embedder, local, escalation_policy="always", escalation_endpoint=url
    )


def _on_premises(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, url: str, hosts: list[str]
) -> Components:
    return _components(
        tmp_path,
        embedder,
        _local_model_that_gives_up(),
        escalation_policy="on_premises",
        escalation_endpoint=url,
        escalation_on_premises_hosts=hosts,
    )


def _local_model_that_gives_up() -> FakeGenerator:
    local = FakeGenerator()
    local.enqueue("I could not find that in the documents.")
    return local


def test_abstention_escalates_to_an_allowed_on_premises_model(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    with stub_model_server() as larger:
        larger.reply = lambda messages: "Parental leave lasts 16 weeks at full pay [1]."
        components = _on_premises(tmp_path, embedder, larger.url, ["127.0.0.1"])
        answer = components.answers.ask(Question(QUESTION, actor="alice"))
    assert not answer.abstained
    assert answer.answer == ("16 weeks \u2013 Parental leave lasts 16 weeks at full pay [1].")
    assert answer.escalated == {
        "endpoint": larger.url,
        "model": "stub-large",
        "reason": "unsupported",  # the local model found nothing: its answer failed
    }
    # The larger model got the question and the numbered source, nothing else.
    (request,) = larger.requests
    prompt = request["body"]["messages"][-1]["content"]
    assert QUESTION in prompt and "[1] Leave" in prompt
    (entry,) = components.audit.tail(action=ESCALATION_ACTION)
    assert entry.actor == "alice"
    assert entry.target == larger.url
    assert entry.detail["documents"] == ["leave"]
    assert entry.detail["reason"] == "unsupported"


def test_on_premises_policy_never_sends_to_an_unlisted_host(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    with stub_model_server() as larger:
        components = _on_premises(tmp_path, embedder, larger.url, ["models.internal"])
        answer = components.answers.ask(Question(QUESTION))
    assert answer.mode == "extractive_fallback" and answer.escalated is None
    assert larger.requests == []
    assert components.audit.tail(action=ESCALATION_ACTION) == []


def test_a_supported_local_answer_is_not_escalated(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    with stub_model_server() as larger:
        components = _always(tmp_path, embedder, larger.url, FakeGenerator())  # quotes [1]
        answer = components.answers.ask(Question(QUESTION))
    assert not answer.abstained and answer.escalated is None
    assert larger.requests == []


def test_the_escalated_answer_is_checked_like_a_local_one(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    with stub_model_server() as larger:
        larger.reply = lambda messages: "Parental leave is paid by the moon council for 99 years."
        components = _always(tmp_path, embedder, larger.url)
        answer = components.answers.ask(Question(QUESTION))
    # Unsupported by the source: removed, and the source is quoted instead.
    assert answer.escalated is not None
    assert "moon" not in answer.answer
    assert answer.mode == "extractive_fallback"


def test_a_failing_escalation_keeps_the_local_answer(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    with stub_model_server() as larger:
        larger.status = 500
        components = _always(tmp_path, embedder, larger.url)
        answer = components.answers.ask(Question(QUESTION))
    assert answer.mode == "extractive_fallback" and answer.escalated is None
    # The attempt is still on record: the documents were sent.
    assert len(components.audit.tail(action=ESCALATION_ACTION)) == 1


def test_escalation_settings_from_a_toml_table_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "enclave.toml"
    config.write_text(
        '[escalation]\npolicy = "on_premises"\nendpoint = "http://gpu1.internal:8080/v1"\n'
        'on_premises_hosts = ["gpu1.internal"]\n'
    )
    settings = load_settings(config, environ={})
    assert settings.escalation_policy == "on_premises"
    assert settings.escalation_on_premises_hosts == ["gpu1.internal"]
    env = {"ENCLAVE_ESCALATION_ON_PREMISES_HOSTS": "a.internal, b.internal"}
    assert load_settings(environ=env).escalation_on_premises_hosts == ["a.internal", "b.internal"]
