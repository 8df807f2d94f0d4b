"""Server-sent events: formatting, and a response body that stops its source when closed."""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterator
from typing import Any

from flask import Response

log = logging.getLogger(__name__)

# A comment line: clients ignore it; writing it notices a client that has gone.
KEEP_ALIVE = ": keep-alive\n\n"


def sse(data: Any, event: str | None = None) -> str:
    """One event; `data` is sent as JSON unless it is already a string."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n"


class EventStream:
    """A WSGI response body: `chunks`, written from `source`.

    The WSGI server closes the body when the response is done or the client has gone (waitress
    notices when a write fails); closing it closes `source` too, which stops the model and
    frees its generation slot. Without this, an abandoned answer would run to its end."""

    def __init__(
        self, chunks: Generator[str, None, None], source: Generator[Any, None, None]
    ) -> None:
        self._chunks = chunks
        self._source = source
        self._finished = False

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        try:
            return next(self._chunks)
        except StopIteration:
            self._finished = True
            raise

    def close(self) -> None:
        if not self._finished:
            log.info("event stream closed before its end (client gone): generation stopped")
        try:
            self._chunks.close()
        finally:
            # Even when closing the body failed (storing a stopped answer, say), the model
            # stops and its generation slot is freed now, not whenever the garbage collector
            # gets to the generator.
            self._source.close()


def event_stream_response(body: EventStream) -> Response:
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # a proxy in front must not buffer it
    return response
