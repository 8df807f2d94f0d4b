"""The Chroma server client: the token travels as a bearer header, telemetry stays off."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from config.settings import Settings
from retriever.components import Components
from retriever.store import http_client


@pytest.fixture
def stub() -> Iterator[tuple[int, list[dict[str, str]]]]:
    """An HTTP server that records each request's headers and answers 503."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            self.send_response(503)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()


def test_the_token_is_sent_as_a_bearer_header(stub: tuple[int, list[dict[str, str]]]) -> None:
    port, seen = stub
    with pytest.raises(Exception):  # noqa: B017 - the stub answers nothing useful
        http_client("127.0.0.1", port, token="s3cret")
    assert seen and seen[0].get("Authorization") == "Bearer s3cret"


def test_no_token_no_header(stub: tuple[int, list[dict[str, str]]]) -> None:
    port, seen = stub
    with pytest.raises(Exception):  # noqa: B017
        http_client("127.0.0.1", port)
    assert seen and "Authorization" not in seen[0]


def test_components_use_the_server_only_when_a_host_is_set(tmp_path: object) -> None:
    assert Components(Settings(data_dir=tmp_path)).chroma_client is None  # type: ignore[arg-type]
