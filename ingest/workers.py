"""Parsing in worker processes with a time and a memory limit per file, so a file that hangs
or explodes the parser costs one worker, never the server."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import resource
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ingest.guards import Limits, check_content
from ingest.loaders import LoadedDocument, LoadError, load_document, use_bundled_spacy_model
from ingest.ocr import OcrOptions
from retriever.child_process import PipedChild

MB = 1024 * 1024
STARTUP_TIMEOUT_S = 300.0  # a worker's imports and warm-up, on a busy machine


def _address_space() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _warm_up() -> None:
    """Parse a small text and Markdown file, so the parser modules and NLP models a first file
    would load are loaded now: that start-up cost is not charged to a file's time limit."""
    with tempfile.TemporaryDirectory(prefix="enclave-warm-") as folder:
        for name, text in _WARM_UP_FILES.items():
            path = Path(folder) / name
            path.write_text(text, encoding="utf-8")
            # A warm-up problem shows up again, with its reason, on the real files.
            with contextlib.suppress(Exception):
                load_document(path)


PARSER_NICENESS = 5
_WARM_UP_FILES = {
    "warm-up.txt": "Warm up\n\nThe parser reads this sentence once at start.\n",
    "warm-up.md": "# Warm up\n\n- The parser reads this list once at start.\n",
}


def _serve(
    conn: Connection, memory_mb: int, limits: Limits | None = None, ocr: OcrOptions | None = None
) -> None:
    """Worker loop: warm up and say ("ready", None); then receive a path, check its content
    (zip, PDF and image guards, here under the limits) and parse it, sending
    ("progress", (pages done, pages)) while reading a PDF or image, then ("ok", document) or
    ("error", reason)."""
    # Ctrl-C in a terminal reaches the whole process group: the server stops its parsers
    # itself, and must not find them killed under a file it is waiting for.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    use_bundled_spacy_model()
    _warm_up()
    # The limit is on top of what the worker already maps (libraries, models).
    limit = _address_space() + memory_mb * MB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # Parsing is background work: the embedder and the model answering questions come first.
    os.nice(PARSER_NICENESS)
    conn.send(("ready", None))
    while True:
        try:
            path = conn.recv()
        except EOFError:
            return

        def progress(done: int, total: int) -> None:
            conn.send(("progress", (done, total)))

        try:
            if limits is not None:
                check_content(Path(path), limits)
            conn.send(("ok", load_document(Path(path), ocr, progress)))
        except LoadError as exc:
            conn.send(("error", str(exc)))
        except MemoryError:
            conn.send(("error", f"parsing needed more than {memory_mb} MB (parse_memory_mb)"))
        except Exception as exc:
            conn.send(("error", f"the parser failed: {type(exc).__name__}: {exc}"))


class _Worker(PipedChild):
    def __init__(
        self,
        context: Any,
        memory_mb: int,
        limits: Limits | None,
        ocr: OcrOptions | None = None,
    ) -> None:
        super().__init__(context, _serve, (memory_mb, limits, ocr), "enclave-parser")
        self.ready = False

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the worker has warmed up (its first message); False if it failed to."""
        if not self.ready:
            try:
                self.ready = self.conn.poll(timeout_s) and self.conn.recv()[0] == "ready"
            except (EOFError, OSError):
                return False
        return self.ready

    def stop(self) -> None:
        self.kill()


class ParserPool:
    """`load(path)` parses in one of `workers` processes; a worker that times out or dies is
    replaced, and the file gets a LoadError saying why. With `limits`, the workers run the
    content guards (`check_content`) before parsing."""

    def __init__(
        self,
        workers: int = 1,
        timeout_s: float = 120.0,
        memory_mb: int = 2048,
        limits: Limits | None = None,
        ocr: OcrOptions | None = None,
    ) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.limits = limits
        self.ocr = ocr
        # Set when the process stops: a worker that dies (a SIGTERM to the whole group) is
        # not replaced, and no file is started.
        self.stopping = threading.Event()
        # forkserver: workers fork from a clean single-threaded process with the loaders
        # already imported, never from the threaded server.
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["ingest.loaders"])
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        for _ in range(workers):
            self._add()

    def _add(self) -> None:
        worker = _Worker(self._context, self.memory_mb, self.limits, self.ocr)
        with self._lock:
            self._all.append(worker)
        self._idle.put(worker)

    def _replace(self, worker: _Worker) -> None:
        worker.stop()
        with self._lock:
            self._all.remove(worker)
        if self.stopping.is_set():
            raise LoadError("not parsed: the process is stopping")
        self._add()

    def wait_ready(self) -> bool:
        """Block until every worker has warmed up; True if all did. Call it before the first
        `load` (not beside one): a benchmark measures throughput, not the workers' imports."""
        with self._lock:
            workers = list(self._all)
        return all([worker.wait_ready(STARTUP_TIMEOUT_S) for worker in workers])

    def _next_idle(self) -> _Worker:
        while True:
            if self.stopping.is_set():
                raise LoadError("not parsed: the process is stopping")
            try:
                return self._idle.get(timeout=1.0)
            except queue.Empty:
                continue

    def load(
        self, path: Path, progress: Callable[[int, int], None] | None = None
    ) -> LoadedDocument:
        worker = self._next_idle()
        # A new worker's start-up is not the file's fault: the time limit starts once it is up.
        if not worker.wait_ready(STARTUP_TIMEOUT_S):
            code = worker.process.exitcode
            self._replace(worker)
            raise LoadError(
                f"a parser process could not start (exit code {code}); see the server log"
            )
        try:
            worker.conn.send(str(path))
            # Page progress messages come before the result; the time limit is the file's.
            deadline = time.monotonic() + self.timeout_s
            while True:
                if not worker.conn.poll(max(deadline - time.monotonic(), 0.0)):
                    self._replace(worker)
                    raise LoadError(
                        f"parsing {path.name} took longer than {self.timeout_s:g} s "
                        "(parse_timeout_s); the file may be malformed or have too many "
                        "scanned pages for the limit"
                    )
                status, payload = worker.conn.recv()
                if status != "progress":
                    break
                if progress is not None:
                    progress(*payload)
        except (EOFError, OSError, BrokenPipeError):
            code = worker.process.exitcode
            self._replace(worker)
            raise LoadError(
                f"the parser process died on {path.name} (exit code {code}); the file may be "
                f"malformed or need more than {self.memory_mb} MB (parse_memory_mb)"
            ) from None
        self._idle.put(worker)
        if status == "error":
            raise LoadError(str(payload))
        assert isinstance(payload, LoadedDocument)
        return payload

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.stop()
