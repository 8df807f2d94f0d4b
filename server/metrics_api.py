"""`GET /metrics` and the request hooks that count every request (server/metrics.py holds the
counters, histograms and their one-line hooks). Access: an admin (key, login, or the loopback
caller of auth mode none), or a scraper that sends the `metrics_token` setting as
`Authorization: Bearer <token>`; anyone else 401/403."""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from server.auth import authenticate
from server.contract import route
from server.errors import ApiError
from server.metrics import REQUEST_SECONDS, REQUESTS, counted_metrics, rejected, request_started
from server.state import state

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


# Label values come from this list, never from the client: every value a client could choose
# (an invented HTTP method) would be a new series, kept for the process's life.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _method() -> str:
    return request.method if request.method in _METHODS else "other"


def _count(response: Response) -> Response:
    route = _route()
    REQUESTS.labels(route, _method(), str(response.status_code)).inc()
    started = request_started()
    if started is not None:
        REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
    if response.status_code == 429:
        body = response.get_json(silent=True) if response.is_json else None
        error = body.get("error") if isinstance(body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        rejected(route, str(code or "rate_limited"))
    return response


@route(metrics, "/metrics", scope=None)  # its own access check: an admin or the token
def scrape() -> ResponseReturnValue:
    _check_access()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Scrape(state()))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _check_access() -> None:
    """An admin, or the `metrics_token`. The route is public to auth (server/auth.py) so that
    the token, which is not an API key, can be checked here; everyone else is refused."""
    settings = state().settings
    header = request.headers.get("Authorization", "")
    kind, _, presented = header.partition(" ")
    token = settings.metrics_token.encode()
    # As bytes: compare_digest refuses (raises on) str with characters beyond ASCII.
    if (
        token
        and kind.lower() == "bearer"
        and hmac.compare_digest(presented.strip().encode(), token)
    ):
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
