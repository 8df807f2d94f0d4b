"""`enclave serve`, `enclave mcp` and `enclave worker`: the long-running processes."""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

import click

from cli.common import enclave_command
from config.settings import Settings


def prepare_metrics_dir(settings: Settings) -> None:
    """prometheus_client's multiprocess mode for `serve --workers N`: every process writes its
    metrics under the data dir (emptied of a previous run's), and /metrics sums them. Set
    before server.metrics (and prometheus_client) is imported, as its metrics are made then."""
    import shutil

    folder = settings.data_dir / "prometheus"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:  # imported already: values made from now on use the folder
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


def _log_to_stderr() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per Chroma server call


@enclave_command(
    "serve",
    "run the web app and API",
    overrides={"host": "host", "port": "port", "workers": "web_workers"},
)
@click.option("--host")
@click.option("--port", type=int)
@click.option(
    "--threads",
    type=int,
    help="HTTP worker threads (default: enough for every generation slot and queue place, "
    "plus 4, so a full queue is answered 429 rather than left waiting)",
)
@click.option(
    "--workers",
    type=int,
    help="web server processes (setting web_workers; above 1: gunicorn, which needs "
    'work_queue = "celery")',
)
def serve(settings: Settings, threads: int | None) -> int:
    from ingest.work_queue import WorkQueueError, check_settings

    if settings.web_workers > 1:
        if settings.work_queue != "celery":  # refused before anything is prepared
            raise WorkQueueError(
                'serve --workers above 1 needs work_queue = "celery": every process would '
                "otherwise index into the same indexes"
            )
        prepare_metrics_dir(settings)
    from waitress import serve as waitress_serve

    from ingest.lock import DataDirLock
    from server.app import create_app
    from server.auth import check_bind

    check_bind(settings)  # before taking the data directory: auth none on loopback only

    _log_to_stderr()
    check_settings(settings)
    given = threads
    threads = given or settings.generation_slots + settings.generation_queue + 4
    if not given and settings.escalation_policy != "never":
        threads += settings.escalation_slots + settings.escalation_queue
    url = f"http://{settings.host}:{settings.port}"
    owner = f"enclave serve at {url}"
    if settings.web_workers > 1:
        from server.gunicorn_app import serve_gunicorn

        with DataDirLock(settings.data_dir, owner, server_url=url):
            return serve_gunicorn(settings, threads)
    # SIGTERM stops the server as Ctrl-C (SIGINT) does: waitress returns from its loop.
    signal.signal(signal.SIGTERM, _interrupt)
    with DataDirLock(settings.data_dir, owner, server_url=url):
        app = create_app(settings, load="background")
        print(
            f"Enclave serving on http://{settings.host}:{settings.port} "
            f"(data: {settings.data_dir.resolve()})",
            flush=True,
        )
        try:
            waitress_serve(app, **waitress_options(settings, threads))
        finally:
            _stop(app.extensions["enclave"])
    return 0


def waitress_options(settings: Settings, threads: int) -> dict[str, Any]:
    """How `serve` runs waitress. Waitress reads a request's whole body (into a temporary
    file past 512 KB) before the app sees it, so before anyone is authenticated: its own
    limit (1 GB by default) let any client that reaches the port fill the disk. It refuses
    more than the app would take (`max_upload_mb`, or `max_request_kb` if larger) with 413,
    as soon as the Content-Length, or the chunks sent so far, say so."""
    largest = max(settings.max_upload_mb * 1024 * 1024, settings.max_request_kb * 1024)
    return {
        "host": settings.host,
        "port": settings.port,
        "threads": threads,
        "ident": "enclave",
        "max_request_body_size": largest + 1,  # waitress refuses a body of this size or more
    }


STOP_GRACE_S = 10.0  # after Ctrl-C or SIGTERM, the longest wait for indexing in flight


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop(state: Any) -> None:
    """Stop `serve` promptly and cleanly: indexing stops at its next file or batch, and every
    store is closed. A second Ctrl-C or SIGTERM, or indexing still busy after STOP_GRACE_S
    (one embedding batch), exits at once: the documents in flight stay pending and are
    finished at the next start, as after a crash."""

    def now(signum: int, frame: object) -> None:
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, now)
    signal.signal(signal.SIGTERM, now)
    print("Enclave stopping", flush=True)
    if not state.stop(STOP_GRACE_S):
        print(
            f"indexing still busy after {STOP_GRACE_S:g} s: exiting now; the documents in "
            "flight are finished at the next start",
            flush=True,
        )
        logging.shutdown()
        os._exit(0)
    print("Enclave stopped", flush=True)


@enclave_command("mcp", "serve MCP over stdio for an assistant or IDE (key in ENCLAVE_API_KEY)")
def mcp(settings: Settings) -> int:
    """MCP over stdio (server/mcp_stdio.py)."""
    from server.mcp_stdio import serve_stdio

    return serve_stdio(settings)


@enclave_command("worker", "run a Celery indexing worker")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(settings: Settings, loglevel: str) -> int:
    """A Celery worker: one task at a time (solo pool) in this process, which holds the
    embedder; files are parsed in its parser processes (parse_workers). Run one per core."""
    from ingest.pipeline import build_pipeline
    from ingest.work_queue import WorkQueueError, worker_app, worker_name
    from retriever.components import Components

    _log_to_stderr()
    if settings.work_queue != "celery":
        raise WorkQueueError('enclave worker needs work_queue = "celery" (and redis_url)')
    components = Components(settings)
    pipeline = build_pipeline(components)  # loads the embedder and starts the parsers now
    components.embedder.embed(["warm up"])
    app = worker_app(settings, pipeline)
    try:
        app.worker_main(["worker", "--pool=solo", f"--loglevel={loglevel}", "-n", worker_name()])
    finally:
        pipeline.close()
    return 0
