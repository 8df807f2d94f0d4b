"""Helpers for tests of the answer routes: an app with one indexed document, SSE parsing and a
generator that holds its slot until told to go on."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from config.settings import Settings
from ingest.pipeline import absolute
from retriever.components import Components
from retriever.generation import FakeGenerator, GenerationParams, Message

LEAVE = (
    "Parental leave lasts 16 weeks at full pay. It can be split into two blocks. "
    "Requests go to the HR portal at least eight weeks ahead."
)
QUESTION = "How long is parental leave?"


def fake_model(components: Components) -> FakeGenerator:
    fake = components.generator
    assert isinstance(fake, FakeGenerator)
    return fake


def upload(client: FlaskClient, name: str = "leave.txt", text: str = LEAVE) -> str:
    """Index a document through the API (so it is registered) and wait until it is indexed."""
    data = {"file": (io.BytesIO(text.encode()), name)}
    response = client.post("/api/v1/documents", data=data)
    assert response.status_code == 202, response.get_data(as_text=True)
    doc_id = str(response.get_json()["id"])
    for _ in range(300):
        status = client.get(f"/api/v1/documents/{doc_id}").get_json()["status"]
        if status != "pending":
            break
        time.sleep(0.05)
    assert status == "indexed"
    return doc_id


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """(event name, data) for each event; comment lines are skipped, as clients do."""
    events = []
    for block in text.split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        if data:
            events.append((name, "\n".join(data)))
    return events


def sse_json(text: str) -> list[tuple[str | None, Any]]:
    return [(name, json.loads(data)) for name, data in parse_sse(text)]


class BlockingGenerator(FakeGenerator):
    """Starts like the fake, then waits for `go` before writing: it holds its slot meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.go = threading.Event()

    def stream(self, messages: list[Message], params: GenerationParams) -> Iterator[str]:
        self.started.set()
        assert self.go.wait(timeout=30), "the test never let the generator go on"
        yield from super().stream(messages, params)


# -- authentication: an app with auth on, users and their keys ------------------------------


def api_key_app(data_dir: Path, embedder: Any, **overrides: Any) -> Flask:
    """A whole app with auth mode api_key over `data_dir`, the real embedder and a fake model,
    no rate limit unless `overrides` sets one (and any other settings changes)."""
    from server.app import create_app

    defaults: dict[str, Any] = {"rate_limit_per_minute": 0}
    s = Settings(
        data_dir=data_dir,
        llm_backend="fake",
        watch="off",
        parse_workers=0,
        auth_mode="api_key",
        **{**defaults, **overrides},
    )
    return create_app(s, Components(s, embedder=embedder, generator=FakeGenerator()))


def auth_settings(settings: Settings, **overrides: Any) -> Settings:
    """`settings` with auth mode api_key (and any other changes)."""
    return settings.model_copy(update={"auth_mode": "api_key", **overrides})


def add_user(
    app: Flask, name: str, role: str = "ask", groups: tuple[str, ...] = (), scope: str | None = None
) -> dict[str, str]:
    """A user in the app's identity store, in these groups (made if missing); returns the
    Authorization header of a new key with `scope` (default: the role)."""
    identity = app.extensions["enclave"].identity
    identity.add_user(name, role)  # type: ignore[arg-type]
    for group in groups:
        if group not in identity.groups():
            identity.add_group(group)
        identity.add_member(group, name)
    _, secret = identity.create_key(name, scope or role)  # type: ignore[arg-type]
    return bearer(secret)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def index_into(app: Flask, files: dict[str, str]) -> dict[str, str]:
    """Write `{"collection/name.txt": text}` into the inbox and index them as the inbox would;
    returns relative path -> document id."""
    st = app.extensions["enclave"]
    paths = []
    for relative, text in files.items():
        path = st.settings.inbox_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    st.pipeline.ingest_file_list(paths)
    ids = {}
    for relative, path in zip(files, paths, strict=True):
        record = st.pipeline.registry.get_by_path(str(absolute(path)))
        assert record is not None and record.status == "indexed", record
        ids[relative] = record.id
    return ids
