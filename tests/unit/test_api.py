from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from retriever.components import Components
from server.app import create_app
from tests.conftest import DEMO


@pytest.fixture
def app(components: Components) -> Iterator[Flask]:
    components.settings.max_upload_mb = 1
    app = create_app(components.settings, components)
    yield app
    app.extensions["enclave"].shutdown()


def _assert_error(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        ({"data": "{not json", "content_type": "application/json"}, 400, "bad_json"),
        ({"data": "question=hi", "content_type": "text/plain"}, 400, "bad_json"),
        ({"json": ["a list"]}, 400, "bad_json"),
        # Review 2: nesting deeper than Python's recursion limit was a 500 and a traceback
        # in the log for every such request.
        ({"data": "[" * 20000, "content_type": "application/json"}, 400, "bad_json"),
        ({"data": '{"a":' * 20000, "content_type": "application/json"}, 400, "bad_json"),
        ({"json": {}}, 400, "missing_question"),
        ({"json": {"question": 42}}, 400, "invalid_question"),
        ({"json": {"question": "   "}}, 400, "empty_question"),
        ({"json": {"question": "x" * 5000}}, 400, "question_too_long"),
        ({"json": {"question": "hi", "top_k": 0}}, 400, "invalid_top_k"),
        ({"json": {"question": "hi", "top_k": "3"}}, 400, "invalid_top_k"),
        ({"json": {"question": "hi", "mode": "magic"}}, 400, "invalid_mode"),
        ({"json": {"question": "hi", "answer_mode": "poem"}}, 400, "invalid_answer_mode"),
        ({"json": {"question": "hi", "collection": []}}, 400, "invalid_collection"),
        ({"json": {"question": "hi", "collection": [3]}}, 400, "invalid_collection"),
    ],
)
def test_ask_errors(client: FlaskClient, kwargs: dict, status: int, code: str) -> None:
    _assert_error(client.post("/api/v1/ask", **kwargs), status, code)


def test_other_error_paths(client: FlaskClient) -> None:
    _assert_error(client.get("/api/v1/documents/nope"), 404, "document_not_found")
    _assert_error(client.delete("/api/v1/documents/nope"), 404, "document_not_found")
    _assert_error(client.get("/api/v1/no-such-route"), 404, "not_found")
    _assert_error(client.get("/api/v1/ingest/jobs/nope"), 404, "job_not_found")
    _assert_error(client.get("/api/v1/ingest/jobs?limit=0"), 400, "invalid_limit")
    _assert_error(client.get("/api/v1/ask"), 405, "method_not_allowed")
    _assert_error(client.post("/api/v1/documents", data={}), 400, "missing_file")
    _assert_error(
        client.post("/api/v1/documents", data={"file": (io.BytesIO(b"MZ\x00"), "tool.exe")}),
        415,
        "unsupported_type",
    )
    _assert_error(
        client.post("/api/v1/documents", data={"file": (io.BytesIO(b"hello"), "fake.pdf")}),
        415,
        "unsupported_type",
    )
    big = io.BytesIO(b"a" * (2 * 1024 * 1024))
    _assert_error(
        client.post("/api/v1/documents", data={"file": (big, "big.txt")}), 413, "too_large"
    )
    _assert_error(
        client.post("/api/v1/documents", data={"file": (io.BytesIO(b""), "empty.txt")}),
        400,
        "empty_file",
    )


def test_not_ready_is_503_with_the_error_body(components: Components) -> None:
    app = create_app(components.settings, components, load="never")
    client = app.test_client()
    assert client.get("/api/v1/health").status_code == 503
    _assert_error(client.post("/api/v1/ask", json={"question": "hi"}), 503, "not_ready")


def test_upload_ask_and_delete(client: FlaskClient, tmp_path: Path) -> None:
    assert client.get("/api/v1/health").get_json()["status"] == "ok"
    data = (DEMO / "facilities-guide.txt").read_bytes()
    response = client.post(
        "/api/v1/documents", data={"file": (io.BytesIO(data), "../../etc/facilities.txt")}
    )
    assert response.status_code == 202
    doc_id = response.get_json()["id"]
    # The client's name never becomes a path outside the uploads folder.
    assert "/etc/" not in client.get(f"/api/v1/documents/{doc_id}").get_json()["path"]
    for _ in range(300):
        status = client.get(f"/api/v1/documents/{doc_id}").get_json()["status"]
        if status != "pending":
            break
        time.sleep(0.1)
    assert status == "indexed"
    jobs = client.get("/api/v1/ingest/jobs").get_json()["jobs"]
    assert jobs[0]["kind"] == "upload" and jobs[0]["counts"] == {"indexed": 1}
    job = client.get(f"/api/v1/ingest/jobs/{jobs[0]['id']}").get_json()
    assert job["files"][0]["document_id"] == doc_id
    listed = client.get("/api/v1/documents").get_json()["documents"]
    assert [d["id"] for d in listed] == [doc_id]
    assert listed[0]["chunks"] > 0

    body = client.post("/api/v1/ask", json={"question": "What are the canteen hours?"}).get_json()
    assert set(body) >= {"answer", "abstained", "sources", "timings"}
    assert body["sources"][0]["document_id"] == doc_id
    assert set(body["sources"][0]) >= {"n", "document_id", "path", "title", "page", "text", "score"}

    # A collection filter that excludes the document finds nothing.
    other = client.post(
        "/api/v1/ask", json={"question": "What are the canteen hours?", "collection": "hr"}
    ).get_json()
    assert other["abstained"] and other["sources"] == []

    assert client.delete(f"/api/v1/documents/{doc_id}").status_code == 200
    assert client.get("/api/v1/documents").get_json()["documents"] == []
    body = client.post("/api/v1/ask", json={"question": "What are the canteen hours?"}).get_json()
    assert body["abstained"] and body["sources"] == []


def test_openapi_matches_the_routes(app: Flask, client: FlaskClient) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    routed = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        routed |= {(path, m) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    assert documented == routed


def test_index_page_is_served(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and b'id="composer"' in page.data
    assert b"http://" not in page.data and b"https://" not in page.data  # no outside host
