"""Prometheus metrics: the counters and histograms, served by `GET /metrics`
(server/metrics_api.py) in the Prometheus text format.

Counters and histograms are updated where things happen, through the one-line hooks below
(`observe_answer`, `ingested`, `tool_call`, and the request hooks `install_metrics` adds in
metrics_api.py); gauges that describe the present (documents by status, generation slots in
use and queued, ingestion queue, model process restarts) are read from the app when scraped.

Several web processes (`serve --workers N`): `enclave serve` points prometheus_client's
multiprocess mode at `<data_dir>/prometheus` (emptied at start) before this module is imported
(`cli/serve.py`, `prepare_metrics_dir`); each process writes its values there and a scrape
sums them over every process.

This module imports nothing of the app (state, auth): the app's modules import it to count.
Access to the scrape is checked in metrics_api.py."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from flask import g
from prometheus_client import (
    REGISTRY,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from ingest.pipeline import FileOutcome
    from retriever.answer_types import Answer

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # no *_created series: they only double the output

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
_RATE = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300)

REQUESTS = Counter(
    "enclave_http_requests",
    "HTTP requests by route, method and status",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "enclave_http_request_duration_seconds",
    "Time to the response's headers (a streamed answer goes on after them), by route",
    ["route"],
    buckets=_LATENCY,
)
REJECTED = Counter(
    "enclave_rejected_429",
    "Requests and MCP calls refused with 429: rate_limited (per caller) or busy (queue full)",
    ["route", "code"],
)
RETRIEVE_SECONDS = Histogram(
    "enclave_retrieve_duration_seconds", "Retrieval time of an answer", buckets=_LATENCY
)
GENERATE_SECONDS = Histogram(
    "enclave_generate_duration_seconds",
    "Model time of an answer that used the model",
    buckets=_LATENCY,
)
ANSWER_SECONDS = Histogram(
    "enclave_answer_duration_seconds",
    "End to end: request received to checked answer, by route (api, openai, mcp)",
    ["route"],
    buckets=_LATENCY,
)
FIRST_TOKEN_SECONDS = Histogram(
    "enclave_time_to_first_token_seconds", "Model time to the first token", buckets=_LATENCY
)
TOKENS_PER_SECOND = Histogram(
    "enclave_generation_tokens_per_second", "Decode rate of an answer", buckets=_RATE
)
TOKENS = Counter("enclave_generated_tokens", "Tokens the model wrote")
ANSWERS = Counter("enclave_answers", "Answers given, by route", ["route"])
ABSTENTIONS = Counter("enclave_abstentions", "Answers that abstained, by route", ["route"])
ESCALATIONS = Counter(
    "enclave_escalations", "Answers the larger (escalation) model gave, by route", ["route"]
)
INGESTED = Counter("enclave_ingested_documents", "Documents indexed by this server's processes")
INGESTED_CHUNKS = Counter("enclave_ingested_chunks", "Chunks written by this server's processes")
INGEST_FAILURES = Counter(
    "enclave_ingest_failures", "Documents that could not be indexed, by reason", ["reason"]
)
TOOL_CALLS = Counter(
    "enclave_mcp_tool_calls",
    "MCP tool calls by tool and outcome (ok or the error code)",
    ["tool", "outcome"],
)

# Failure reason from the error text of an ingestion outcome (ingest/guards.py, loaders.py).
_REASONS = (
    ("unsupported_type", re.compile(r"unsupported file type|not a .* file|looks like", re.I)),
    ("too_large", re.compile(r"over the limit|zip bomb|\(max_\w+\)", re.I)),
    ("empty", re.compile(r" is empty$", re.I)),
    ("encrypted", re.compile(r"encrypted", re.I)),
    ("damaged", re.compile(r"damaged", re.I)),
    ("no_text", re.compile(r"no text could be extracted", re.I)),
    ("file_gone", re.compile(r"disappeared|no longer there", re.I)),
    ("outside_inbox", re.compile(r"outside the inbox", re.I)),
    ("parse_error", re.compile(r"could not parse", re.I)),
)


def multiprocess_dir() -> Path | None:
    folder = os.environ.get(MULTIPROC_ENV)
    return Path(folder) if folder else None


def failure_reason(error: str | None) -> str:
    text = error or ""
    for reason, pattern in _REASONS:
        if pattern.search(text):
            return reason
    return "other"


# -- hooks: one call each from the code that does the work ------------------------------------


def observe_answer(route: str, answer: Answer, started: float | None) -> None:
    """An answer leaving the server (server/common.py `answer_finisher`)."""
    t = answer.timings
    ANSWERS.labels(route).inc()
    if answer.abstained:
        ABSTENTIONS.labels(route).inc()
    if answer.escalated:
        ESCALATIONS.labels(route).inc()
    if "retrieve_ms" in t:
        RETRIEVE_SECONDS.observe(float(t["retrieve_ms"]) / 1000)
    if t.get("tokens"):  # the model ran
        GENERATE_SECONDS.observe(float(t.get("generate_ms", 0.0)) / 1000)
        FIRST_TOKEN_SECONDS.observe(float(t.get("first_token_ms", 0.0)) / 1000)
        TOKENS.inc(float(t["tokens"]))
        if t.get("tokens_per_s"):
            TOKENS_PER_SECOND.observe(float(t["tokens_per_s"]))
    if started is not None:
        ANSWER_SECONDS.labels(route).observe(time.perf_counter() - started)


def ingested(outcomes: Iterable[FileOutcome]) -> None:
    """Documents indexed or failed by the ingestion pipeline (ingest/pipeline.py)."""
    for outcome in outcomes:
        if outcome.status == "indexed":
            INGESTED.inc()
            INGESTED_CHUNKS.inc(outcome.chunks)
        elif outcome.status == "failed":
            INGEST_FAILURES.labels(failure_reason(outcome.error)).inc()


def rejected(route: str, code: str) -> None:
    REJECTED.labels(route, code).inc()


def tool_call(tool: str, outcome: str) -> None:
    TOOL_CALLS.labels(tool, outcome).inc()


def request_started() -> float | None:
    """When the current request began (for an answer's end-to-end time)."""
    value = g.get("metrics_start")
    return float(value) if value is not None else None


def counted_metrics() -> Iterator[Metric]:
    """The counters and histograms: this process's, or in multiprocess mode every process's
    (summed by prometheus_client from the files in the folder)."""
    folder = multiprocess_dir()
    if folder is not None:
        yield from MultiProcessCollector(None, path=str(folder)).collect()
    else:
        yield from REGISTRY.collect()
