"""Prometheus metrics: `GET /metrics` in the Prometheus text format.

Counters and histograms are updated where things happen, through the one-line hooks below
(`observe_answer`, `ingested`, `tool_call`, and the request hooks `install_metrics` adds);
gauges that describe the present (documents by status, generation slots in use and queued,
ingestion queue, model process restarts) are read from the app when scraped.

Several web processes (`serve --workers N`): `enclave serve` points prometheus_client's
multiprocess mode at `<data_dir>/prometheus` (emptied at start) before this module is imported
(`server/cli.py`, `prepare_metrics_dir`); each process writes its values there and a scrape
sums them over every process.

Access: an admin (key, login, or the loopback caller of auth mode none), or a scraper that
sends the `metrics_token` setting as `Authorization: Bearer <token>`; anyone else 401/403."""

from __future__ import annotations

import hmac
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, g, request
from flask.typing import ResponseReturnValue
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from server.errors import ApiError

if TYPE_CHECKING:
    from ingest.pipeline import FileOutcome
    from retriever.answer import Answer

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


# -- the request hooks and the scrape ---------------------------------------------------------

metrics = Blueprint("metrics", __name__)


def install_metrics(app: Flask) -> None:
    # First of the before-request functions: auth may refuse the request, and that is counted
    # (and timed) too.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_count)
    app.register_blueprint(metrics)


def _start() -> None:
    g.metrics_start = time.perf_counter()


def _route() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def _count(response: Response) -> Response:
    route = _route()
    REQUESTS.labels(route, request.method, str(response.status_code)).inc()
    started = request_started()
    if started is not None:
        REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
    if response.status_code == 429:
        body = response.get_json(silent=True) if response.is_json else None
        error = body.get("error") if isinstance(body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        rejected(route, str(code or "rate_limited"))
    return response


@metrics.get("/metrics")
def scrape() -> ResponseReturnValue:
    _check_access()
    from server.state import state

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(state()))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _check_access() -> None:
    """An admin, or the `metrics_token`. The route is public to auth (server/auth.py) so that
    the token, which is not an API key, can be checked here; everyone else is refused."""
    from server.auth import authenticate
    from server.state import state

    settings = state().settings
    header = request.headers.get("Authorization", "")
    kind, _, presented = header.partition(" ")
    token = settings.metrics_token
    if token and kind.lower() == "bearer" and hmac.compare_digest(presented.strip(), token):
        return
    principal = authenticate(settings)  # auth none: loopback only, else 403
    if principal is None:
        raise ApiError(
            401,
            "unauthorized",
            "send an admin API key or the metrics_token as 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    if not principal.allows("admin"):
        state().audit.record(principal.actor, "denied", request.path, method="GET", needed="admin")
        raise ApiError(403, "forbidden", "this needs a key or login with scope 'admin'")


class _Scrape:
    """What one scrape shows: the counters and histograms (of every process in multiprocess
    mode), then the gauges read from the app now."""

    def __init__(self, st: Any) -> None:
        self.st = st

    def collect(self) -> Iterator[Metric]:
        yield from counted_metrics()
        yield from live_metrics(self.st)


def counted_metrics() -> Iterator[Metric]:
    """The counters and histograms: this process's, or in multiprocess mode every process's
    (summed by prometheus_client from the files in the folder)."""
    folder = multiprocess_dir()
    if folder is not None:
        yield from MultiProcessCollector(None, path=str(folder)).collect()
    else:
        yield from REGISTRY.collect()


def live_metrics(st: Any) -> Iterator[Metric]:
    """Gauges of the present, from the same data as /api/v1/health."""
    documents = GaugeMetricFamily("enclave_documents", "Documents by status", labels=["status"])
    for status, count in sorted(st.pipeline.registry.counts().items()):
        documents.add_metric([status], count)
    yield documents
    yield GaugeMetricFamily(
        "enclave_ingest_queue", "Ingestion tasks waiting or running", value=st.ingest_queue
    )
    ready = st.ready.is_set()
    yield GaugeMetricFamily("enclave_ready", "1 once the models are loaded", value=int(ready))
    if not ready:
        return
    components = st.components
    slots = components.slots.stats()
    yield GaugeMetricFamily(
        "enclave_generation_slots", "Answers the model may write at once", value=slots["slots"]
    )
    yield GaugeMetricFamily(
        "enclave_generation_slots_in_use", "Answers being written now", value=slots["active"]
    )
    yield GaugeMetricFamily(
        "enclave_generation_queue_length", "Answers waiting for a slot", value=slots["waiting"]
    )
    restarts = model_restarts(components)
    if restarts is not None:
        yield CounterMetricFamily(
            "enclave_model_restarts", "Restarts of the supervised model process", value=restarts
        )


def model_restarts(components: Any) -> int | None:
    """The hook for a supervised model process: a generator (or its `stats()`, as shown by
    /api/v1/health) that reports `restarts` is exported as enclave_model_restarts_total;
    an in-process model has none to report."""
    generator = components.__dict__.get("generator")  # never load the model for a scrape
    if generator is None:
        return None
    restarts = getattr(generator, "restarts", None)
    if restarts is None and callable(getattr(generator, "stats", None)):
        stats = generator.stats()
        restarts = stats.get("restarts") if isinstance(stats, dict) else None
    return int(restarts) if isinstance(restarts, int | float) else None
