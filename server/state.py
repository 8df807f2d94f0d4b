"""What the app holds: the components, the ingestion pipeline and model readiness."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from flask import current_app

from ingest.pipeline import FileOutcome, IngestPipeline, build_pipeline
from retriever.components import Components

log = logging.getLogger(__name__)


class EnclaveState:
    def __init__(self, components: Components) -> None:
        self.components = components
        self.settings = components.settings
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._pipeline: IngestPipeline | None = None
        self._pipeline_lock = threading.Lock()
        # One ingestion thread: the embedded indexes take a single writer.
        self._ingest = ThreadPoolExecutor(max_workers=1, thread_name_prefix="enclave-ingest")

    @property
    def pipeline(self) -> IngestPipeline:
        with self._pipeline_lock:
            if self._pipeline is None:
                self._pipeline = build_pipeline(self.components)
            return self._pipeline

    def load(self) -> None:
        """Load models and indexes; health turns ok when this finishes."""
        try:
            self.components.warm_up()
            _ = self.pipeline
            for outcome in self.pipeline.resume_pending():
                log.info("resumed %s: %s", outcome.path, outcome.status)
            self.ready.set()
        except Exception as exc:
            log.exception("loading failed")
            self.load_error = f"{type(exc).__name__}: {exc}"

    def load_in_background(self) -> None:
        threading.Thread(target=self.load, name="enclave-load", daemon=True).start()

    def submit(self, document_id: str, path: Path) -> Future[FileOutcome]:
        record = self.pipeline.registry.get(document_id)
        assert record is not None
        return self._ingest.submit(self.pipeline.index, record)

    def shutdown(self) -> None:
        self._ingest.shutdown(wait=True)


def state() -> EnclaveState:
    return current_app.extensions["enclave"]
