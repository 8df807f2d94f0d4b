"""Original files, re-indexing and retrying failed documents; the page routes."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from retriever.components import Components
from server.app import create_app
from server.ui import CONTENT_SECURITY_POLICY
from tests.conftest import DEMO
from tests.unit.serving import LEAVE, upload

BROKEN_DOCX = b"PK\x03\x04 this is not a zip archive"


@pytest.fixture
def app(components: Components) -> Iterator[Flask]:
    app = create_app(components.settings, components)
    yield app
    app.extensions["enclave"].shutdown()


def _settled(client: FlaskClient, doc_id: str) -> dict:
    for _ in range(300):
        body = client.get(f"/api/v1/documents/{doc_id}").get_json()
        if body["status"] != "pending":
            return dict(body)
        time.sleep(0.05)
    raise AssertionError("still pending")


def _newest_job_over(client: FlaskClient) -> dict:
    """The newest ingestion job once it has finished: a document is marked indexed before its
    job records the file, so counts are only final then."""
    for _ in range(300):
        job = client.get("/api/v1/ingest/jobs").get_json()["jobs"][0]
        if job["status"] != "running":
            return dict(job)
        time.sleep(0.05)
    raise AssertionError("the job is still running")


def test_original_file_is_served_by_id_only(client: FlaskClient) -> None:
    doc_id = upload(client, name="leave policy.txt")
    listed = client.get("/api/v1/documents").get_json()["documents"]
    assert listed[0]["name"] == "leave_policy.txt" and listed[0]["indexed_at"]
    response = client.get(f"/api/v1/documents/{doc_id}/file")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == LEAVE
    assert response.mimetype == "text/plain"
    assert response.headers["Content-Security-Policy"] == "sandbox"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "inline" in response.headers["Content-Disposition"]
    assert response.headers["Cache-Control"] == "no-cache, max-age=0"  # always revalidated
    assert response.content_length == len(LEAVE.encode())
    # Served from the open file (not by name), it still revalidates and serves ranges.
    etag, modified = response.headers["ETag"], response.headers["Last-Modified"]
    again = client.get(f"/api/v1/documents/{doc_id}/file", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.data
    since = client.get(f"/api/v1/documents/{doc_id}/file", headers={"If-Modified-Since": modified})
    assert since.status_code == 304
    part = client.get(f"/api/v1/documents/{doc_id}/file", headers={"Range": "bytes=0-7"})
    assert part.status_code == 206 and part.data == LEAVE.encode()[:8]
    assert part.headers["Content-Security-Policy"] == "sandbox"
    assert client.get("/api/v1/documents/../../etc/passwd/file").status_code == 404
    assert client.get("/api/v1/documents/nope/file").get_json()["error"]["code"] == (
        "document_not_found"
    )
    # Deleted: the id no longer opens anything.
    client.delete(f"/api/v1/documents/{doc_id}")
    assert client.get(f"/api/v1/documents/{doc_id}/file").status_code == 404


def test_a_very_long_file_name_is_shortened_not_a_500(client: FlaskClient) -> None:
    """Review 2: a 300-character name made a stored name over the file system's 255 bytes:
    an OSError, a 500 and a traceback for every such upload."""
    doc_id = upload(client, name="a" * 300 + ".txt")
    name = client.get(f"/api/v1/documents/{doc_id}").get_json()["name"]
    assert name.endswith(".txt") and name.startswith("aaa") and len(name) <= 200
    assert client.get(f"/api/v1/documents/{doc_id}/file").get_data(as_text=True) == LEAVE


def test_pdf_inline_and_office_files_downloaded(client: FlaskClient) -> None:
    pdf = (DEMO / "it-security-policy.pdf").read_bytes()
    pdf_id = client.post(
        "/api/v1/documents", data={"file": (io.BytesIO(pdf), "policy.pdf")}
    ).get_json()["id"]
    assert _settled(client, pdf_id)["status"] == "indexed"
    response = client.get(f"/api/v1/documents/{pdf_id}/file")
    assert response.mimetype == "application/pdf" and response.data == pdf
    assert "inline" in response.headers["Content-Disposition"]

    bad_id = client.post(
        "/api/v1/documents", data={"file": (io.BytesIO(BROKEN_DOCX), "broken.docx")}
    ).get_json()["id"]
    failed = _settled(client, bad_id)
    assert failed["status"] == "failed" and "damaged" in failed["error"]
    response = client.get(f"/api/v1/documents/{bad_id}/file")
    assert response.status_code == 200 and "attachment" in response.headers["Content-Disposition"]


def test_reindex_and_retry_failed(client: FlaskClient, components: Components) -> None:
    doc_id = upload(client)
    response = client.post(f"/api/v1/documents/{doc_id}/reindex")
    assert response.status_code == 202
    assert _settled(client, doc_id)["status"] == "indexed"
    assert _newest_job_over(client)["kind"] == "reindex"

    bad_id = client.post(
        "/api/v1/documents", data={"file": (io.BytesIO(BROKEN_DOCX), "broken.docx")}
    ).get_json()["id"]
    failed = _settled(client, bad_id)
    assert failed["status"] == "failed"
    # The file is repaired in place (as an admin would), then retried.
    path = components.settings.uploads_dir / next(
        p.name for p in components.settings.uploads_dir.iterdir() if p.name.endswith(".docx")
    )
    path.write_bytes((DEMO / "hr-leave-policy.docx").read_bytes())
    retried = client.post("/api/v1/ingest/retry-failed")
    assert retried.status_code == 202 and retried.get_json()["documents"] == [bad_id]
    assert _settled(client, bad_id)["status"] == "indexed"
    job = _newest_job_over(client)
    assert job["kind"] == "retry" and job["counts"] == {"indexed": 1}
    assert client.post("/api/v1/ingest/retry-failed").get_json()["count"] == 0

    # A file that is gone cannot be indexed again.
    path.unlink()
    response = client.post(f"/api/v1/documents/{bad_id}/reindex")
    assert response.status_code == 410 and response.get_json()["error"]["code"] == "file_gone"
    assert client.get(f"/api/v1/documents/{bad_id}/file").status_code == 410


def _queue(client: FlaskClient) -> int:
    return int(client.get("/api/v1/health").get_json()["ingest"]["queue"])


def test_health_reports_the_ingestion_queue(app: Flask, client: FlaskClient) -> None:
    state = app.extensions["enclave"]
    go = threading.Event()
    running = state._run_ingest(go.wait)  # holds the one ingestion thread
    waiting = state._run_ingest(lambda: None)
    assert _queue(client) >= 2
    go.set()
    running.result(timeout=30)
    waiting.result(timeout=30)
    assert _queue(client) == 0
    assert set(client.get("/api/v1/health").get_json()["generation"]) >= {"slots", "active"}


@pytest.mark.parametrize("path", ["/", "/library", "/admin", "/c/abc123"])
def test_pages_load_only_from_this_server(client: FlaskClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    html = page.get_data(as_text=True)
    # No absolute or protocol-relative URL: every link and asset is on this server.
    assert not re.search(r"https?:|(?:src|href)=\"//", html)
    assert "<script>" not in html and "style=" not in html  # nothing inline (CSP)
    for asset in ("/static/app.css", "/static/common.js"):
        assert asset in html
        assert client.get(asset).status_code == 200


def test_scripts_never_parse_text_as_html() -> None:
    static = Path(__file__).resolve().parents[2] / "server" / "static"
    for script in static.glob("*.js"):
        code = script.read_text()
        for sink in ("innerHTML", "outerHTML =", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in code, f"{script.name} uses {sink}"
