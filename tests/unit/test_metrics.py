"""GET /metrics: scraped after uploads and questions (REST and MCP) and parsed with
prometheus_client's own parser, the counters moved by exactly what happened; who may read it;
multiprocess mode (serve --workers N) sums every process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from retriever.components import Components
from retriever.embedder import SentenceTransformerEmbedder
from retriever.generation import FakeGenerator
from server.app import create_app
from tests.conftest import ROOT
from tests.unit.serving import LEAVE, add_user, api_key_app

QUESTIONS = (
    "How long is parental leave?",
    "Can parental leave be split into blocks?",
    "What is the boiling point of tungsten on the planet Neptune?",
)


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Iterator[tuple[Flask, dict[str, dict[str, str]]]]:
    data: Path = tmp_path_factory.mktemp("metrics") / "data"
    app = api_key_app(
        data, embedder, metrics_token="scrape-token-123", unmapped_collections="everyone"
    )
    keys = {"admin": add_user(app, "ada", "admin"), "staff": add_user(app, "sam", "ask")}
    yield app, keys
    app.extensions["enclave"].shutdown()


def scrape(
    client: FlaskClient, headers: dict[str, str]
) -> dict[tuple[str, tuple[Any, ...]], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[Any, ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def upload(client: FlaskClient, headers: dict[str, str], name: str, data: bytes) -> str:
    response = client.post(
        "/api/v1/documents", data={"file": (io.BytesIO(data), name)}, headers=headers
    )
    assert response.status_code == 202, response.get_data(as_text=True)
    doc_id = str(response.get_json()["id"])
    for _ in range(300):
        status = client.get(f"/api/v1/documents/{doc_id}", headers=headers).get_json()["status"]
        if status != "pending":
            return str(status)
        time.sleep(0.05)
    raise AssertionError(f"{name} is still pending")


def test_counters_move_by_what_happened(world: tuple[Flask, dict[str, dict[str, str]]]) -> None:
    app, keys = world
    client = app.test_client()
    admin, staff = keys["admin"], keys["staff"]
    before = scrape(client, admin)

    assert upload(client, admin, "leave.txt", LEAVE.encode()) == "indexed"
    assert upload(client, admin, "broken.pdf", b"%PDF-1.4\nnot really a pdf\n") == "failed"
    answers = []
    for question in QUESTIONS:
        response = client.post("/api/v1/ask", json={"question": question}, headers=staff)
        assert response.status_code == 200
        answers.append(response.get_json())
    mcp = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    mcp["params"] = {"name": "ask", "arguments": {"question": QUESTIONS[0]}}
    accept = {"Accept": "application/json, text/event-stream"}
    reply = client.post("/mcp", json=mcp, headers={**staff, **accept}).get_json()
    answers.append(reply["result"]["structuredContent"])
    assert client.post("/api/v1/ask", json={"question": ""}, headers=staff).status_code == 400

    after = scrape(client, admin)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ask = {"route": "/api/v1/ask", "method": "POST"}
    assert moved("enclave_http_requests_total", **ask, status="200") == 3
    assert moved("enclave_http_requests_total", **ask, status="400") == 1
    assert moved("enclave_http_requests_total", route="/mcp", method="POST", status="200") == 1
    assert moved("enclave_http_request_duration_seconds_count", route="/api/v1/ask") == 4
    assert moved("enclave_answers_total", route="api") == 3
    assert moved("enclave_answers_total", route="mcp") == 1
    abstained = sum(a["abstained"] for a in answers[:3])
    assert abstained >= 1, answers  # the question about Neptune
    assert moved("enclave_abstentions_total", route="api") == abstained
    assert moved("enclave_escalations_total", route="api") == 0
    assert moved("enclave_retrieve_duration_seconds_count") == 4
    generated = sum(1 for a in answers if a["timings"].get("tokens"))
    assert generated >= 2, [a["timings"] for a in answers]
    assert moved("enclave_generate_duration_seconds_count") == generated
    assert moved("enclave_time_to_first_token_seconds_count") == generated
    assert moved("enclave_generated_tokens_total") == sum(
        a["timings"].get("tokens", 0) for a in answers
    )
    assert moved("enclave_answer_duration_seconds_count", route="api") == 3
    assert moved("enclave_answer_duration_seconds_count", route="mcp") == 1
    assert moved("enclave_mcp_tool_calls_total", tool="ask", outcome="ok") == 1
    assert moved("enclave_ingested_documents_total") == 1
    assert moved("enclave_ingested_chunks_total") >= 1
    assert moved("enclave_ingest_failures_total", reason="damaged") == 1
    counts = app.extensions["enclave"].pipeline.registry.counts()
    assert value(after, "enclave_documents", status="indexed") == counts["indexed"] >= 1
    assert value(after, "enclave_documents", status="failed") == counts["failed"] >= 1
    assert value(after, "enclave_generation_slots") == 1
    assert value(after, "enclave_generation_slots_in_use") == 0
    assert value(after, "enclave_generation_queue_length") == 0


def test_who_may_read_the_metrics(world: tuple[Flask, dict[str, dict[str, str]]]) -> None:
    app, keys = world
    client = app.test_client()
    assert client.get("/metrics", headers=keys["admin"]).status_code == 200
    token = {"Authorization": "Bearer scrape-token-123"}
    assert client.get("/metrics", headers=token).status_code == 200
    for headers, status in (
        ({}, 401),
        ({"Authorization": "Bearer scrape-token-124"}, 401),
        (keys["staff"], 403),
    ):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == status
        assert response.get_json()["error"]["code"] in ("unauthorized", "forbidden")


def test_a_token_of_any_characters_is_refused_not_a_500(
    world: tuple[Flask, dict[str, dict[str, str]]],
) -> None:
    """Review 3: a Bearer value with a character beyond ASCII (HTTP headers are read as
    Latin-1) made the constant-time comparison raise: 500 and a traceback in the log for
    each such request, from anyone."""
    app, _ = world
    client = app.test_client()
    for presented in ("scrape-token-12\xe9", "\xe9" * 20, "scrape-token-123\xff"):
        response = client.get("/metrics", headers={"Authorization": f"Bearer {presented}"})
        assert response.status_code == 401, presented
        assert response.get_json()["error"]["code"] == "unauthorized"


def test_an_outsider_cannot_grow_the_label_sets(
    world: tuple[Flask, dict[str, dict[str, str]]],
) -> None:
    """Review 2: labels never come from what a client chose. An anonymous client sending
    made-up HTTP methods (each a new `method` label, kept for the process's life) must not
    grow the series without bound."""
    app, keys = world
    client = app.test_client()
    for n in range(50):
        client.open(f"/nowhere/{n}", method=f"X{n}FOO")
        client.open("/api/v1/health", method=f"Y{n}BAR")
    samples = scrape(client, keys["admin"])
    methods = {
        dict(labels).get("method")
        for name, labels in samples
        if name == "enclave_http_requests_total"
    }
    assert not {m for m in methods if m and ("FOO" in m or "BAR" in m)}
    assert (
        value(
            samples, "enclave_http_requests_total", route="unmatched", method="other", status="404"
        )
        >= 50
    )


def test_429s_are_counted(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    app = api_key_app(tmp_path / "data", embedder, rate_limit_per_minute=1)
    key = add_user(app, "ada", "admin")
    client = app.test_client()
    before = scrape(client, key)
    for _ in range(3):
        client.post("/api/v1/ask", json={"question": "Anything?"}, headers=key)
    # MCP's ask counts against the same limit, and its 429 is a tool error.
    mcp = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    mcp["params"] = {"name": "ask", "arguments": {"question": "Anything?"}}
    accept = {"Accept": "application/json, text/event-stream"}
    result = client.post("/mcp", json=mcp, headers={**key, **accept}).get_json()["result"]
    assert result["isError"] and result["structuredContent"]["error"]["code"] == "rate_limited"
    after = scrape(client, key)

    def moved(**labels: str) -> float:
        name = "enclave_rejected_429_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved(route="/api/v1/ask", code="rate_limited") == 2
    assert moved(route="mcp", code="rate_limited") == 1
    app.extensions["enclave"].shutdown()


def test_auth_none_serves_loopback_only(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    s = Settings(data_dir=tmp_path / "data", llm_backend="fake", watch="off", parse_workers=0)
    app = create_app(s, Components(s, embedder=embedder, generator=FakeGenerator()))
    client = app.test_client()
    assert client.get("/metrics").status_code == 200  # the local admin
    remote = client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert remote.status_code == 403
    app.extensions["enclave"].shutdown()


PROCESS = """
from server import metrics
metrics.rejected("/api/v1/ask", "busy")
metrics.ANSWERS.labels("api").inc({n})
"""
SCRAPE = """
from prometheus_client import CollectorRegistry, generate_latest
from server import metrics
class Counted:
    def collect(self):
        return metrics.counted_metrics()
registry = CollectorRegistry(auto_describe=False)
registry.register(Counted())
print(generate_latest(registry).decode())
"""


def test_several_processes_are_summed(tmp_path: Path) -> None:
    """serve --workers N: each process writes its values under the data dir, a scrape by any
    of them sums them all; a new start begins from zero."""
    from prometheus_client import values

    from cli.serve import prepare_metrics_dir

    settings = Settings(data_dir=tmp_path / "data")
    folder = tmp_path / "data" / "prometheus"
    folder.mkdir(parents=True)
    (folder / "counter_999999.db").write_bytes(b"stale")  # a previous run's process
    saved = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    try:
        prepare_metrics_dir(settings)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
    finally:
        if saved is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = saved
        values.ValueClass = values.get_value_class()  # this process: as it was
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(folder)
    assert not (folder / "counter_999999.db").exists()
    for n in (2, 3):
        subprocess.run([sys.executable, "-c", PROCESS.format(n=n)], env=env, check=True)
    out = subprocess.run(
        [sys.executable, "-c", SCRAPE], env=env, check=True, capture_output=True, text=True
    ).stdout
    samples = {}
    for family in text_string_to_metric_families(out):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert value(samples, "enclave_answers_total", route="api") == 5
    busy = {"route": "/api/v1/ask", "code": "busy"}
    assert value(samples, "enclave_rejected_429_total", **busy) == 2
    # One file per process: the two writers and the scraper (its unlabelled counters).
    assert len(list(folder.glob("counter_*.db"))) == 3


class SupervisedGenerator(FakeGenerator):
    """A model backend that reports its process's restarts (as a supervised model server's
    generator is to)."""

    def __init__(self) -> None:
        super().__init__()
        self.restarts = 0


def test_model_restarts_come_from_the_backend(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    s = Settings(data_dir=tmp_path / "data", llm_backend="fake", watch="off", parse_workers=0)
    generator = SupervisedGenerator()
    app = create_app(s, Components(s, embedder=embedder, generator=generator))
    client = app.test_client()
    assert value(scrape(client, {}), "enclave_model_restarts_total") == 0
    generator.restarts = 3
    assert value(scrape(client, {}), "enclave_model_restarts_total") == 3
    plain = FakeGenerator()  # an in-process model has none to report: no series at all
    other = create_app(s, Components(s, embedder=embedder, generator=plain), load="never")
    other.extensions["enclave"].ready.set()
    samples = scrape(other.test_client(), {})
    assert not any(name == "enclave_model_restarts_total" for name, _ in samples)
    app.extensions["enclave"].shutdown()
