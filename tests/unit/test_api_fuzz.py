"""The API under generated input (schemathesis, from /api/v1/openapi.json) with auth on: no
input makes it fail with a 5xx, and every protected operation answers 401 without a key and
403 with a key of too small a scope."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from retriever.embedder import SentenceTransformerEmbedder
from service.identity import SCOPES
from tests.unit.serving import LEAVE, add_user, api_key_app, index_into


@pytest.fixture(scope="module")
def secured_app(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Iterator[Flask]:
    data: Path = tmp_path_factory.mktemp("fuzz") / "data"
    app = api_key_app(data, embedder)
    index_into(app, {"hr/leave.txt": LEAVE})
    app.config["keys"] = {scope: add_user(app, f"user-{scope}", scope) for scope in SCOPES}
    yield app
    app.extensions["enclave"].shutdown()


def test_no_input_makes_a_server_error(secured_app: Flask) -> None:
    """Each operation of the OpenAPI document, with inputs generated from its schema (valid
    and invalid), called with an admin key: never a 5xx. (schemathesis's pytest plugin does
    not load with this pytest, so its strategies are driven here with hypothesis.)"""
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", secured_app)
    admin = secured_app.config["keys"]["admin"]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            response = case.call(headers=admin)
            case.validate_response(response, checks=[not_a_server_error])

        call()


def _operations(app: Flask) -> list[tuple[str, str, str | None]]:
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    return [
        (method.upper(), re.sub(r"\{\w+\}", "x", path), op.get("x-required-scope"))
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    ]


def test_every_protected_operation_needs_a_key_of_its_scope(secured_app: Flask) -> None:
    client = secured_app.test_client()
    keys = secured_app.config["keys"]
    checked = 0
    for method, path, scope in _operations(secured_app):
        if scope is None:  # public: health, this document
            assert path in ("/api/v1/health", "/api/v1/openapi.json"), path
            continue
        response = client.open(path, method=method, json={})
        assert response.status_code == 401, (method, path)
        assert response.get_json()["error"]["code"] == "unauthorized"
        for lower in SCOPES[: SCOPES.index(scope)]:
            response = client.open(path, method=method, json={}, headers=keys[lower])
            assert response.status_code == 403, (method, path, lower)
        response = client.open(path, method=method, json={}, headers=keys[scope])
        assert response.status_code not in (401, 403), (method, path, scope)
        checked += 1
    assert checked >= 15
