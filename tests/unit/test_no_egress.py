"""Nothing leaves the machine: ingestion, questions (both APIs) and start-up open no
connection except to loopback, and telemetry is switched off in code."""

from __future__ import annotations

import io
import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

import retriever.privacy
from config.settings import Settings
from retriever.components import Components
from retriever.embedder import SentenceTransformerEmbedder
from retriever.generation import FakeGenerator
from retriever.store import ChromaStore
from server.app import create_app
from tests.unit.serving import LEAVE, QUESTION, upload


def _loopback(address: Any) -> bool:
    if isinstance(address, str):  # a Unix socket path
        return True
    host = str(address[0])
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
def outbound(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every attempt to connect to, or resolve, anything but loopback: recorded and refused."""
    attempts: list[str] = []
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
    getaddrinfo = socket.getaddrinfo

    def guard(address: Any) -> None:
        if not _loopback(address):
            attempts.append(repr(address))
            raise OSError(f"test: outbound connection to {address!r} refused")

    def guarded_connect(self: socket.socket, address: Any) -> None:
        guard(address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        guard(address)
        return connect_ex(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, "localhost") and not _loopback((host,)):
            attempts.append(f"resolve {host!r}")
            raise socket.gaierror(f"test: name lookup of {host!r} refused")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts


def test_the_guard_sees_an_outbound_connection(outbound: list[str]) -> None:
    with socket.socket() as s, pytest.raises(OSError, match="refused"):
        s.connect(("192.0.2.1", 80))  # TEST-NET-1: never reached
    assert outbound == ["('192.0.2.1', 80)"]


def test_telemetry_is_off_in_code(tmp_path: Path) -> None:
    # Hugging Face, chromadb, unstructured: their switches, set before they are imported.
    for name, value in retriever.privacy._OFFLINE_ENV.items():
        assert os.environ.get(name) == value, name
    store = ChromaStore(tmp_path / "chroma")
    assert store.client.get_settings().anonymized_telemetry is False


def test_ingest_and_questions_open_no_outbound_connection(
    outbound: list[str],
    settings: Settings,
    embedder: SentenceTransformerEmbedder,
) -> None:
    # Everything made inside the guard: a new Chroma client, indexes, the app.
    app: Flask = create_app(
        settings, Components(settings, embedder=embedder, generator=FakeGenerator())
    )
    client = app.test_client()
    try:
        upload(client, text=LEAVE)
        pdf = {"file": (io.BytesIO(b"%PDF-1.4 broken"), "broken.pdf")}
        client.post("/api/v1/documents", data=pdf)
        assert (
            "16 weeks"
            in client.post("/api/v1/ask", json={"question": QUESTION}).get_json()["answer"]
        )
        streamed = client.post("/api/v1/ask", json={"question": QUESTION, "stream": True})
        assert "done" in streamed.get_data(as_text=True)
        chat = {"messages": [{"role": "user", "content": QUESTION}]}
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
        assert client.get("/").status_code == 200
    finally:
        app.extensions["enclave"].shutdown()
    assert outbound == []
