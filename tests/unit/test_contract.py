"""The HTTP contract declared beside each route (server/contract.py): every route has one, auth
reads its scope from it (a view without one needs admin), a bad field gets the error its model
declares, and the OpenAPI document's answer is `Answer`'s own fields."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import pytest
from flask import Flask
from pydantic import BaseModel, ConfigDict, Field

from retriever.answer_types import Answer, Source
from retriever.embedder import SentenceTransformerEmbedder
from retriever.grounding import Span, Support
from server.contract import Invalid, contract_of, validation_error
from service.identity import SCOPES
from tests.unit.serving import add_user, api_key_app

# Who may call what: the scope each route declares, one table for review (None: public).
SCOPE_OF = {
    "api.health": None,
    "api.openapi": None,
    "auth.login": None,
    "auth.login_form": None,
    "ui.static": None,
    "metrics.scrape": None,  # checks admin or metrics_token itself
    "auth.logout": "ask",
    "ask.ask": "ask",
    "documents.list_documents": "ask",
    "documents.get_document": "ask",
    "documents.get_document_file": "ask",
    "documents.upload_document": "ingest",
    "documents.reindex_document": "ingest",
    "documents.delete_document": "ingest",
    "ingest_api.retry_failed": "ingest",
    "ingest_api.list_ingest_jobs": "admin",
    "ingest_api.get_ingest_job": "admin",
    "conversations_api.list_conversations": "ask",
    "conversations_api.create_conversation": "ask",
    "conversations_api.get_conversation": "ask",
    "conversations_api.rename_conversation": "ask",
    "conversations_api.delete_conversation": "ask",
    "conversations_api.give_feedback": "ask",
    "conversations_api.list_feedback": "admin",
    "embedder_api.get_embedder": "admin",
    "embedder_api.activate_embedder": "admin",
    "embedder_api.rollback_embedder": "admin",
    "openai.list_models": "ask",
    "openai.get_model": "ask",
    "openai.chat_completions": "ask",
    "ui.chat": "ask",
    "ui.conversation": "ask",
    "ui.library": "ask",
    "ui.admin": "admin",
    "mcp.endpoint": "ask",  # each tool checks its own scope too
}
RATE_LIMITED = {"ask.ask", "openai.chat_completions", "documents.upload_document"}


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Iterator[Flask]:
    app = api_key_app(tmp_path_factory.mktemp("contract") / "data", embedder)

    @app.get("/api/v1/undeclared")
    def undeclared() -> dict[str, bool]:  # a route someone forgot to declare
        return {"reached": True}

    app.config["keys"] = {scope: add_user(app, f"user-{scope}", scope) for scope in SCOPES}
    yield app
    app.extensions["enclave"].shutdown()


def test_every_route_declares_its_scope_and_limit_beside_its_view(app: Flask) -> None:
    declared = {}
    for rule in app.url_map.iter_rules():
        contract = contract_of(app, rule.endpoint)
        if rule.endpoint == "undeclared":
            assert contract is None
            continue
        assert contract is not None, f"{rule.rule} has no @route contract"
        declared[rule.endpoint] = contract
    assert {e: c.scope for e, c in declared.items()} == SCOPE_OF
    assert {e for e, c in declared.items() if c.rate_limited} == RATE_LIMITED
    assert {e for e, c in declared.items() if c.upload} == {"documents.upload_document"}


def test_a_view_without_a_contract_needs_admin(app: Flask) -> None:
    client = app.test_client()
    keys = app.config["keys"]
    assert client.get("/api/v1/undeclared").status_code == 401
    for scope in ("ask", "ingest"):
        response = client.get("/api/v1/undeclared", headers=keys[scope])
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "forbidden"
    assert client.get("/api/v1/undeclared", headers=keys["admin"]).get_json() == {"reached": True}
    paths = app.test_client().get("/api/v1/openapi.json").get_json()["paths"]
    assert "/api/v1/undeclared" not in paths  # undocumented, as it is undeclared


class _Body(BaseModel):
    model_config = ConfigDict(strict=True)

    name: Annotated[str, Invalid("'name' must be a string", missing="'name' is required")]
    size: Annotated[int, Field(ge=1), Invalid("'size' must be a positive integer")] = 1
    note: str = ""


@pytest.mark.parametrize(
    "body, status, code, message",
    [
        ({}, 400, "missing_name", "'name' is required"),
        ({"name": 3}, 400, "invalid_name", "'name' must be a string"),
        ({"name": "x", "size": 0}, 400, "invalid_size", "'size' must be a positive integer"),
        ({"name": "x", "size": "2"}, 400, "invalid_size", "'size' must be a positive integer"),
        ({"name": "x", "size": True}, 400, "invalid_size", "'size' must be a positive integer"),
        ({"name": "x", "note": 5}, 400, "invalid_note", "'note': Input should be a valid string"),
        # The first field in declaration order is the one reported.
        ({"name": 3, "size": 0}, 400, "invalid_name", "'name' must be a string"),
    ],
)
def test_a_validation_error_becomes_the_error_its_field_declares(
    body: dict[str, object], status: int, code: str, message: str
) -> None:
    with pytest.raises(Exception) as caught:
        _Body.model_validate(body)
    error = validation_error(_Body, caught.value)  # type: ignore[arg-type]
    assert (error.status, error.code, error.message) == (status, code, message)


def test_the_documented_answer_is_the_answers_own_fields(app: Flask, tmp_path: Path) -> None:
    """A field added to `Answer` appears in `to_dict` and in the OpenAPI document with no
    other edit: both are derived from the dataclass."""
    answer = Answer(
        "Parental leave lasts 16 weeks [1].",
        False,
        [Source(1, "d1", "/inbox/hr/leave.txt", "Leave", None, "Parental leave ...", 0.5)],
        citations=[1],
        timings={"tokens": 7, "generate_ms": 12.5},
        supports=[Support(1, Span(0, 33, "Parental leave lasts 16 weeks"), 1.0)],
        dropped=1,
        mode="extractive",
    )
    body = answer.to_dict()
    assert body["supports"] == [{"n": 1, "start": 0, "end": 33, "score": 1.0}]
    assert body["answer_mode"] == "extractive" and body["unsupported_sentences_removed"] == 1
    assert body["timings"] == {"tokens": 7, "generate_ms": 12.5}
    assert isinstance(body["timings"]["tokens"], int)
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    documented = schemas["AskResponse"]["properties"]
    assert set(documented) == set(body) | {"conversation_id", "message_id", "query"}
    assert documented["direct_answer"]["description"].startswith("The short answer")
    assert set(schemas["Source"]["properties"]) == set(body["sources"][0])
    ask = spec["paths"]["/api/v1/ask"]["post"]
    assert ask["x-required-scope"] == "ask"
    assert {"400", "401", "403", "429"} <= set(ask["responses"])
    top_k = schemas["AskRequest"]["properties"]["top_k"]
    assert (top_k["minimum"], top_k["maximum"], top_k["type"]) == (1, 50, "integer")


def test_a_registry_field_is_documented_or_this_fails() -> None:
    """A document goes out through `Document` (fields it lacks are dropped): every field of
    the registry's record must be one of its fields."""
    from ingest.registry import DocumentRecord
    from server.documents.schemas import Document

    record = DocumentRecord("d1", "/x.txt", "hr", "X", "ab", 3, 1.0, "indexed", None, 2, 1.0, 2.0)
    assert set(record.to_dict()) <= set(Document.model_fields)
    assert set(Document.model_fields) - set(record.to_dict()) == {"name", "indexed_at", "pages"}


def test_a_model_path_with_a_nul_byte_is_a_400_not_a_500(app: Flask) -> None:
    """Found by the fuzz test: the path reached `Path.resolve`, which raised ValueError."""
    client = app.test_client()
    response = client.post(
        "/api/v1/embedder/activate",
        json={"model": "tuned\x00x"},
        headers=app.config["keys"]["admin"],
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_model"
