"""MCP over streamable HTTP at `/mcp`, inside the Flask app (so waitress and gunicorn serve it
like any route).

The route is an ordinary Flask view: server/auth.py authenticates the caller first (Bearer
API key, login session or trusted header; 401 without one) and the body limit applies. The
view hands the request to the SDK's `StreamableHTTPSessionManager` in stateless, JSON-response
mode (each POST is complete in itself: any web process of `serve --workers N` can answer it),
through a small ASGI bridge: one asyncio event loop per process, in a daemon thread, started
on first use (after gunicorn's fork). The caller travels in the ASGI scope to the tool calls
(server/mcp_tools.py). GET (a server-to-client stream) and DELETE (end a session) have no
meaning without sessions: 405."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, MutableMapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from flask.typing import ResponseReturnValue
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from server.access import Principal, current
from server.contract import route
from server.errors import ApiError
from server.mcp_tools import build_server

mcp_http = Blueprint("mcp", __name__)
PRINCIPAL_KEY = "enclave.principal"


# each tool checks its own scope too (server/mcp_tools.py)
@route(mcp_http, "/mcp", scope="ask", methods=("GET", "POST", "DELETE"))
def endpoint() -> ResponseReturnValue:
    if request.method != "POST":
        raise ApiError(
            405,
            "method_not_allowed",
            "this MCP server is stateless: send each JSON-RPC message as a POST",
            {"Allow": "POST"},
        )
    bridge = current_app.extensions["enclave_mcp"]
    assert isinstance(bridge, McpBridge)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": request.scheme,
        "path": "/mcp",
        "raw_path": b"/mcp",
        "root_path": "",
        "query_string": request.query_string,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers],
        "client": (request.remote_addr or "", 0),
        "server": (request.host.rsplit(":", 1)[0], 0),
        PRINCIPAL_KEY: (current(), request.remote_addr or ""),
    }
    status, headers, body = bridge.handle(scope, request.get_data())
    return Response(body, status=status, headers=headers)


class McpBridge:
    """The session manager of one process, run on an event loop of its own."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.timeout_s = app.extensions["enclave"].settings.llm_timeout_s + 60
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._manager: StreamableHTTPSessionManager | None = None
        self._task: asyncio.Task[None] | None = None

    def _server(self) -> Server[Any, Any]:
        return build_server(self.app, _caller)

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None:
                return self._loop
            settings = self.app.extensions["enclave"].settings
            security = None
            if settings.auth_mode == "none":
                # No key to steal, so the risk is a web page reaching the loopback server
                # through DNS rebinding: only loopback host names (the SDK's own default).
                security = TransportSecuritySettings(
                    enable_dns_rebinding_protection=True,
                    allowed_hosts=[
                        "127.0.0.1:*",
                        "localhost:*",
                        "[::1]:*",
                        "127.0.0.1",
                        "localhost",
                    ],
                    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
                )
            manager = StreamableHTTPSessionManager(
                self._server(), json_response=True, stateless=True, security_settings=security
            )
            loop = asyncio.new_event_loop()
            started = threading.Event()

            async def run() -> None:
                async with manager.run():
                    started.set()
                    await asyncio.Event().wait()  # until the process ends

            def thread() -> None:
                asyncio.set_event_loop(loop)
                self._task = loop.create_task(run())
                loop.run_forever()

            threading.Thread(target=thread, name="enclave-mcp", daemon=True).start()
            if not started.wait(timeout=30):
                raise RuntimeError("the MCP session manager did not start")
            self._loop, self._manager = loop, manager
            return loop

    def handle(
        self, scope: dict[str, Any], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        loop = self._start()
        assert self._manager is not None
        future = asyncio.run_coroutine_threadsafe(self._call(scope, body), loop)
        return future.result(timeout=self.timeout_s)

    async def _call(
        self, scope: dict[str, Any], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._manager is not None
        sent: list[MutableMapping[str, Any]] = []
        finished = asyncio.Event()
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()  # the client is there until the response is complete
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        try:
            handled: Awaitable[None] = self._manager.handle_request(scope, receive, send)
            await handled
        finally:
            finished.set()
        status, headers, chunks = 500, [], []
        for message in sent:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"content-length", b"transfer-encoding")
                ]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
        return status, headers, b"".join(chunks)


def _caller(http_request: Any) -> tuple[Principal, str]:
    """The caller of the HTTP request this tool call came in (authenticated by auth.py)."""
    caller = http_request.scope.get(PRINCIPAL_KEY) if http_request is not None else None
    if caller is None:  # pragma: no cover - every request through the view carries one
        raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer <key>'")
    principal, remote = caller
    return principal, remote


def install_mcp(app: Flask) -> None:
    app.extensions["enclave_mcp"] = McpBridge(app)
    app.register_blueprint(mcp_http)
