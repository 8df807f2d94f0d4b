"""`enclave mcp`: the MCP server over stdio, for a desktop assistant or an IDE that starts it
as a subprocess on the same machine.

The caller is the owner of the key in `ENCLAVE_API_KEY`, checked on every call as a Bearer key
of the REST API would be (a revoked key stops working at once); under `auth_mode = "none"` the
local admin. The process reads the data directory beside a running `enclave serve` (as
`enclave ask` does) and never writes its indexes: it follows no inbox and offers no tool
that re-indexes. The models load in the background; a call waits for them.

Standard output is the protocol's channel: the process's own file descriptor 1 is pointed at
standard error, so nothing a library prints can corrupt it."""

from __future__ import annotations

import logging
import os
import sys
import threading
from io import TextIOWrapper
from typing import Any

import anyio
from flask import Flask

from config.auth import API_KEY_ENV
from config.settings import Settings
from server.access import Principal
from server.errors import ApiError

READ_ONLY_TOOLS = ("search", "ask", "list_documents", "get_document")
log = logging.getLogger(__name__)


def stdio_app(settings: Settings) -> Flask:
    """The app the tools run in, models loading in the background (no inbox watcher)."""
    from server.app import create_app

    app = create_app(settings, load="never")
    st = app.extensions["enclave"]

    def load() -> None:
        try:
            st.components.warm_up()
            st.ready.set()
        except Exception as exc:
            log.exception("loading failed")
            st.load_error = f"{type(exc).__name__}: {exc}"

    threading.Thread(target=load, name="enclave-load", daemon=True).start()
    return app


def stdio_caller(app: Flask) -> Any:
    from server.auth import authenticate

    st = app.extensions["enclave"]

    def principal_now() -> Principal:
        key = os.environ.get(API_KEY_ENV, "").strip()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        with app.test_request_context(
            "/mcp", headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"}
        ):
            principal = authenticate(st.settings)
        if principal is None:
            raise ApiError(
                401,
                "unauthorized",
                f"set {API_KEY_ENV} to an API key ('enclave keys create') in the MCP client's "
                "configuration",
            )
        return principal

    def caller(_request: Any) -> tuple[Principal, str]:
        principal = principal_now()
        # The first call waits for the models rather than failing while they load.
        st.ready.wait(timeout=st.settings.llm_timeout_s + 120)
        return principal, "127.0.0.1"

    caller.check = principal_now  # type: ignore[attr-defined]
    return caller


def serve_stdio(settings: Settings) -> int:
    from mcp.server.stdio import stdio_server

    from server.mcp_tools import build_server

    protocol = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything else written to stdout (C libraries too) goes to stderr
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    app = stdio_app(settings)
    caller = stdio_caller(app)
    if settings.auth_mode != "none":
        try:
            with app.app_context():
                caller.check()
        except ApiError as exc:
            print(f"enclave mcp: {exc.message}", file=sys.stderr)
            return 2
    server = build_server(app, caller, READ_ONLY_TOOLS)

    async def run() -> None:
        stdout = anyio.wrap_file(TextIOWrapper(protocol, encoding="utf-8", write_through=True))
        async with stdio_server(stdout=stdout) as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(run)
    return 0
