"""Browser tests: Debian's Chromium driven by Playwright against the app served on loopback by
a threaded werkzeug server, the demo corpus indexed with the real embedder, the fake SLM
(these tests are about the pages, not the model). Every page's requests are logged and
checked to go to this server only."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from config.settings import Settings
from retriever.components import Components
from retriever.embedder import SentenceTransformerEmbedder
from retriever.generation import FakeGenerator, GenerationParams, Message
from retriever.slots import GenerationSlots
from server.app import create_app
from tests.conftest import DEMO

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
# `make screenshots` writes the README's pictures; a plain test run keeps them out of the tree.
SCREENSHOTS = Path(
    os.environ.get("ENCLAVE_SCREENSHOTS") or Path(tempfile.gettempdir()) / "enclave-screenshots"
)
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
DEMO_QUESTION = "How many days of annual leave does a full-time employee get?"


class GatedGenerator(FakeGenerator):
    """The fake model, which can be told to stop after a few words until the test lets it
    go on: a test sees the answer mid-stream without relying on timing."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_after: int | None = None
        self.gate = threading.Event()
        self.holding = threading.Event()

    def hold(self, words: int) -> None:
        self.hold_after = words
        self.gate.clear()
        self.holding.clear()

    def release(self) -> None:
        self.hold_after = None
        self.gate.set()

    def reached_hold(self, timeout: float = 30) -> bool:
        """Whether the model reached the held word within `timeout` seconds; when it did not,
        the failure shows where every thread of the server was (a waiting slot, a lock)."""
        if self.holding.wait(timeout):
            return True
        stacks = "\n".join(
            f"--- thread {ident}\n" + "".join(traceback.format_stack(frame))
            for ident, frame in sys._current_frames().items()
        )
        pytest.fail(
            f"the model did not reach word {self.hold_after}; calls: {len(self.history)}\n{stacks}"
        )

    def stream(self, messages: list[Message], params: GenerationParams) -> Iterator[str]:
        # Like the plain fake, quote source [1]'s first sentence, but cite it the way models
        # do ("... holidays [1].").
        first = re.search(r"\[1\][^\n]*\n([^\n.]+)\.", messages[-1]["content"])
        if not self.queue and first:
            self.queue.append(f"{first.group(1).strip()} [1].")
        for i, piece in enumerate(super().stream(messages, params)):
            if self.hold_after is not None and i == self.hold_after:
                self.holding.set()
                assert self.gate.wait(timeout=60), "the test never released the model"
            yield piece


@dataclass
class LiveApp:
    base: str
    model: GatedGenerator
    settings: Settings
    slots: GenerationSlots
    requests: list[str] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        return self.base + path

    def wait_until_idle(self, timeout: float = 30) -> None:
        """Every answer a test started has given back its generation slot: the next test
        starts with the model free (a slot still held here is the test's own failure)."""
        deadline = time.monotonic() + timeout
        while (stats := self.slots.stats())["active"] or stats["waiting"]:
            if time.monotonic() > deadline:
                pytest.fail(f"the model was still busy after the test: {stats}")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def live_app(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Iterator[LiveApp]:
    from werkzeug.serving import make_server

    data = tmp_path_factory.mktemp("browser") / "data"
    settings = Settings(data_dir=data, llm_backend="fake", watch="off", parse_workers=0)
    model = GatedGenerator()
    components = Components(settings, embedder=embedder, generator=model)
    app = create_app(settings, components)
    state = app.extensions["enclave"]
    # The demo corpus, indexed as `enclave ingest` would (from its own folder, beside data).
    corpus = data.parent / "corpus"
    shutil.copytree(DEMO, corpus, ignore=shutil.ignore_patterns("*.jsonl"))
    files = sorted(corpus.iterdir())
    jobs = state.pipeline.jobs
    job = jobs.start("cli", len(files))
    state.pipeline.ingest_file_list(files, progress=jobs.recorder(job))
    jobs.finish(job)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LiveApp(f"http://127.0.0.1:{server.server_port}", model, settings, components.slots)
    finally:
        model.release()
        server.shutdown()
        thread.join(timeout=10)
        state.shutdown()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


def _context(browser: object, live_app: LiveApp, viewport: dict[str, int], **options: object):  # type: ignore[no-untyped-def]
    context = browser.new_context(  # type: ignore[attr-defined]
        viewport=viewport, base_url=live_app.base, **options
    )
    context.on("request", lambda request: live_app.requests.append(request.url))
    context.set_default_timeout(30_000)
    return context


@pytest.fixture
def page(browser: object, live_app: LiveApp) -> Iterator[object]:
    context = _context(browser, live_app, DESKTOP)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    live_app.model.release()
    live_app.wait_until_idle()
    assert errors == [], f"script errors in the page: {errors}"


@pytest.fixture
def phone(browser: object, live_app: LiveApp) -> Iterator[object]:
    context = _context(
        browser, live_app, PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    yield page
    context.close()
    live_app.wait_until_idle()


@pytest.fixture(autouse=True)
def only_this_server(live_app: LiveApp) -> Iterator[None]:
    """Every request any page made during the test went to the app's own host and port."""
    start = len(live_app.requests)
    yield
    made = live_app.requests[start:]
    own = urlsplit(live_app.base).netloc
    elsewhere = [
        u for u in made if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).netloc != own
    ]
    assert elsewhere == [], f"requests to other hosts: {elsewhere}"


def screenshot(page: Any, name: str, full_page: bool = False) -> None:
    """Save <name>.png in SCREENSHOTS. The pages scroll inside their main column, not the
    document, so a full-page shot grows the viewport to the column's height first."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    if full_page:
        height = page.evaluate("() => document.querySelector('.page').scrollHeight + 56")
        page.set_viewport_size({"width": size["width"], "height": max(size["height"], height)})
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    if full_page:
        page.set_viewport_size(size)
