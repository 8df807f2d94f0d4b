"""The MCP server (Model Context Protocol, the official `mcp` SDK): Enclave's knowledge base as
tools an assistant or an IDE can call. Two transports share it: stdio (`enclave mcp`,
server/mcp_stdio.py) and streamable HTTP at `/mcp` of `enclave serve` (server/mcp_http.py).

Every tool call runs as a request of the Flask app on behalf of the caller (a `Principal`
from server/auth.py, authenticated by the transport): the REST views and services do the
work, so the scopes, the collection filters inside the queries (server/access.py), the
validation and its error codes, the audit log and the metrics are those of /api/v1. An
ApiError becomes an MCP tool error whose content is the REST error body
`{"error": {"code", "message", "status"}}`."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import anyio
from flask import Flask, Response, g
from mcp import types
from mcp.server.lowlevel import Server
from pydantic import BaseModel

from server import metrics
from server.access import Principal, path_shower, readable_collections, require_scope
from server.ask.schemas import AskRequest, SearchArguments
from server.common import actor
from server.contract import Schemas, parse
from server.errors import ApiError
from server.state import state

log = logging.getLogger(__name__)

# The caller of a tool call and its address, authenticated by the transport for each call
# from the HTTP request the call came in (None over stdio); raises ApiError if there is none.
Authenticate = Callable[[Any], tuple[Principal, str]]


def _arguments(model: type[BaseModel], *leave_out: str) -> dict[str, Any]:
    """A tool's input schema: the JSON Schema of the REST request model it is checked against
    (one declaration of top_k's range, the modes, ...), less the fields the tool does not
    take."""
    schema = model.model_json_schema(schema_generator=Schemas)
    schema.pop("description", None)
    for name in leave_out:
        schema["properties"].pop(name)
    return schema


_DOCUMENT_ID = {"type": "string", "description": "A document id from search, ask or list_documents"}

TOOLS: list[types.Tool] = [
    types.Tool(
        name="search",
        title="Search the documents",
        description="Find passages in the organisation's documents (hybrid keyword and meaning "
        "search, no language model: fast). Returns passages with their document id, title, "
        "file, collection, page and score, best first. Use it to find where something is "
        "written, to quote, or to gather material; use `ask` for a checked answer.",
        inputSchema=_arguments(SearchArguments),
        annotations=types.ToolAnnotations(readOnlyHint=True, openWorldHint=False),
    ),
    types.Tool(
        name="ask",
        title="Ask a question",
        description="Answer a question from the organisation's documents with the on-premises "
        "model. The answer is checked against the passages: every kept sentence is supported, "
        "citations [n] point into `sources`. When the documents do not hold the answer it "
        "abstains (`abstained: true`) instead of guessing. Slower than `search` (seconds).",
        inputSchema=_arguments(AskRequest, "stream"),
        annotations=types.ToolAnnotations(readOnlyHint=True, openWorldHint=False),
    ),
    types.Tool(
        name="list_documents",
        title="List the documents",
        description="The documents you may read: id, name, title, collection, status "
        "(indexed, pending, failed), chunks, and the counts by status.",
        inputSchema={
            "type": "object",
            "properties": {
                "collection": {"type": "string", "description": "Only this collection"},
                "status": {
                    "type": "string",
                    "enum": ["indexed", "pending", "failed"],
                    "description": "Only documents with this status",
                },
            },
        },
        annotations=types.ToolAnnotations(readOnlyHint=True, openWorldHint=False),
    ),
    types.Tool(
        name="get_document",
        title="Read a document",
        description="A document's details and its text as indexed, in order, a page of "
        "passages at a time (neighbouring passages overlap by a few words). Continue with "
        "`start` = the `next_start` returned until it is null.",
        inputSchema={
            "type": "object",
            "properties": {
                "document_id": _DOCUMENT_ID,
                "start": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "First passage to return (default 0)",
                },
                "max_chars": {
                    "type": "integer",
                    "minimum": 500,
                    "maximum": 50000,
                    "description": "About how much text to return (default 8000)",
                },
            },
            "required": ["document_id"],
        },
        annotations=types.ToolAnnotations(readOnlyHint=True, openWorldHint=False),
    ),
    types.Tool(
        name="reindex_document",
        title="Index a document again",
        description="Parse and index a document again from its file (after a failure, or to "
        "refresh it). Needs the ingest scope.",
        inputSchema={
            "type": "object",
            "properties": {"document_id": _DOCUMENT_ID},
            "required": ["document_id"],
        },
        annotations=types.ToolAnnotations(readOnlyHint=False, idempotentHint=True),
    ),
]
TOOL_SCOPE = {
    "search": "ask",
    "ask": "ask",
    "list_documents": "ask",
    "get_document": "ask",
    "reindex_document": "ingest",
}
INSTRUCTIONS = (
    "Enclave answers from an organisation's own documents, on its own premises. Use `search` "
    "to find passages, `ask` for a checked answer with citations (it abstains when the "
    "documents do not say), `list_documents` and `get_document` to browse and read. You only "
    "ever see the collections your key may read."
)


def build_server(
    app: Flask,
    authenticate: Authenticate,
    tools: tuple[str, ...] = tuple(TOOL_SCOPE),
    resources: bool = True,
) -> Server[Any, Any]:
    """The MCP server of `app` offering `tools`, and the readable documents as resources
    (`enclave://documents/<id>`, their indexed text); `authenticate` names the caller of each
    call."""
    server: Server[Any, Any] = Server("enclave", instructions=INSTRUCTIONS)
    offered = [tool for tool in TOOLS if tool.name in tools]

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return offered

    # The REST views validate the arguments, with their error codes: not the SDK's schema.
    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        if name not in tools:
            return _error(ApiError(404, "unknown_tool", f"no tool named {name!r}"))
        http_request = server.request_context.request
        return await anyio.to_thread.run_sync(
            run_tool, app, lambda: authenticate(http_request), name, arguments
        )

    if resources:

        @server.list_resources()
        async def list_resources() -> list[types.Resource]:
            http_request = server.request_context.request
            documents = await anyio.to_thread.run_sync(
                run_resource, app, lambda: authenticate(http_request), None
            )
            return [
                types.Resource(
                    uri=f"{RESOURCE_PREFIX}{d['id']}",  # type: ignore[arg-type]
                    name=str(d["name"]),
                    title=d.get("title") or None,
                    description=f"Document in collection {d['collection']}",
                    mimeType="text/plain",
                )
                for d in documents
            ]

        @server.read_resource()
        async def read_resource(uri: Any) -> str:
            http_request = server.request_context.request
            text: str = await anyio.to_thread.run_sync(
                run_resource, app, lambda: authenticate(http_request), str(uri)
            )
            return text

    return server


RESOURCE_PREFIX = "enclave://documents/"


def run_resource(
    app: Flask, authenticate: Callable[[], tuple[Principal, str]], uri: str | None
) -> Any:
    """The readable indexed documents (uri None) or one document's indexed text, for the
    caller; an ApiError becomes the JSON-RPC error of the request."""
    with app.app_context():
        principal, remote = authenticate()
        with app.test_request_context("/mcp", method="POST", environ_base={"REMOTE_ADDR": remote}):
            g.principal = principal
            require_scope("ask")
            if uri is None:
                documents = _list_documents({"status": "indexed"})["documents"]
                state().audit.record(actor(), "mcp_resource", "list")
                return documents
            if not uri.startswith(RESOURCE_PREFIX):
                raise ApiError(404, "resource_not_found", f"no resource {uri!r}")
            document_id = uri[len(RESOURCE_PREFIX) :]
            try:
                page = _get_document({"document_id": document_id, "max_chars": 50000})
                texts = [p["text"] for p in page["passages"]]
                while page["next_start"] is not None:
                    page = _get_document(
                        {
                            "document_id": document_id,
                            "start": page["next_start"],
                            "max_chars": 50000,
                        }
                    )
                    texts += [p["text"] for p in page["passages"]]
            except ApiError as exc:
                state().audit.record(actor(), "mcp_resource", uri[:200], outcome=exc.code)
                raise
            state().audit.record(actor(), "mcp_resource", uri, documents=[document_id])
            return "\n\n".join(texts)


def run_tool(
    app: Flask,
    authenticate: Callable[[], tuple[Principal, str]],
    name: str,
    arguments: dict[str, Any],
) -> types.CallToolResult:
    """One tool call, in a worker thread, inside a request context of the app."""
    started = time.perf_counter()
    with app.app_context():
        try:
            principal, remote = authenticate()
        except ApiError as exc:
            metrics.tool_call(name, exc.code)
            return _error(exc)
        with app.test_request_context("/mcp", method="POST", environ_base={"REMOTE_ADDR": remote}):
            g.principal = principal
            g.metrics_start = started
            g.answer_route = "mcp"  # how answer_finisher names the route (audit, metrics)
            try:
                result = _dispatch(
                    principal, name, arguments if isinstance(arguments, dict) else {}
                )
            except ApiError as exc:
                _audit(principal, name, arguments, exc.code)
                metrics.tool_call(name, exc.code)
                if exc.status == 429:
                    metrics.rejected("mcp", exc.code)
                return _error(exc)
            except Exception:
                log.exception("MCP tool %s failed", name)
                _audit(principal, name, arguments, "internal")
                metrics.tool_call(name, "internal")
                return _error(ApiError(500, "internal", "internal error; see the server log"))
            _audit(principal, name, arguments, "ok", result)
            metrics.tool_call(name, "ok")
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=json.dumps(result, indent=1))],
                structuredContent=result,
            )


def _error(exc: ApiError) -> types.CallToolResult:
    body = {"error": {"code": exc.code, "message": exc.message, "status": exc.status}}
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(body))],
        structuredContent=body,
        isError=True,
    )


def _audit(
    principal: Principal,
    tool: str,
    arguments: Any,
    outcome: str,
    result: dict[str, Any] | None = None,
) -> None:
    """Every call: who, which tool, the outcome, and which documents it showed (never the
    query's or the documents' text)."""
    detail: dict[str, Any] = {"outcome": outcome}
    shown: set[str] = set()
    for key in ("passages", "sources"):
        shown |= {
            str(p["document_id"]) for p in (result or {}).get(key) or [] if "document_id" in p
        }
    if result and isinstance(result.get("document"), dict):
        shown.add(str(result["document"].get("id")))
    if shown:
        detail["documents"] = sorted(shown)
    if isinstance(arguments, dict) and isinstance(arguments.get("document_id"), str):
        detail["document_id"] = arguments["document_id"][:64]
    state().audit.record(actor(), "mcp_tool", tool, **detail)


def _dispatch(principal: Principal, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    scope = TOOL_SCOPE.get(name)
    if scope is None:
        raise ApiError(404, "unknown_tool", f"no tool named {name!r}")
    if not principal.allows(scope):
        state().audit.record(principal.actor, "denied", f"mcp:{name}", needed=scope)
    require_scope(scope)
    if name == "search":
        _rate_limit(principal)  # a search embeds the query too: the same per-caller limit
        return _search(arguments)
    if name == "ask":
        return _ask(principal, arguments)
    if name == "list_documents":
        return _list_documents(arguments)
    if name == "get_document":
        return _get_document(arguments)
    return _view_json(_views().reindex_document, "POST", _document_id(arguments))


def _views() -> Any:
    """The REST views the tools run (imported late: they import this package's siblings)."""
    from server.ask import routes as ask
    from server.documents import routes as documents

    return SimpleNamespace(
        ask=ask.ask,
        list_documents=documents.list_documents,
        get_document=documents.get_document,
        reindex_document=documents.reindex_document,
    )


def _view_json(
    view: Callable[..., Any], method: str, *args: Any, body: dict[str, Any] | None = None
) -> Any:
    """Run a REST view of /api/v1 in a nested request context of the same caller and return
    its JSON body (its ApiErrors propagate)."""
    from flask import current_app, request

    principal = g.principal
    environ = {"REMOTE_ADDR": request.remote_addr or "127.0.0.1"}
    with current_app.test_request_context("/mcp", method=method, json=body, environ_base=environ):
        g.principal = principal
        g.metrics_start = g.get("metrics_start") or time.perf_counter()
        g.answer_route = "mcp"
        response = current_app.make_response(view(*args))
        assert isinstance(response, Response)
        return response.get_json()


def _document_id(arguments: dict[str, Any]) -> str:
    document_id = arguments.get("document_id")
    if not isinstance(document_id, str) or not document_id:
        raise ApiError(400, "invalid_document_id", "'document_id' must be a document's id")
    return document_id


def _search(arguments: dict[str, Any]) -> dict[str, Any]:
    from server.common import require_ready

    args = parse(SearchArguments, arguments)
    query = args.query
    settings = state().settings
    top_k = settings.top_k if args.top_k is None else args.top_k
    mode = args.mode or settings.retrieval_mode
    # The caller's readable collections go inside both index queries, as for /api/v1/ask.
    collections = readable_collections(args.collections())
    require_ready()
    result = state().components.searcher.search(query, top_k, mode, collections)
    shown = path_shower()
    return {
        "query": query,
        "passages": [
            {
                "n": n,
                "document_id": hit.chunk.document_id,
                "title": hit.chunk.title,
                "path": shown(hit.chunk.path),
                "collection": hit.chunk.collection,
                "page": hit.chunk.page,
                "headings": hit.chunk.heading_path,
                "score": round(hit.score, 6),
                "text": hit.chunk.text,
            }
            for n, hit in enumerate(result.hits, start=1)
        ],
    }


def _ask(principal: Principal, arguments: dict[str, Any]) -> dict[str, Any]:
    _rate_limit(principal)
    body = {k: v for k, v in arguments.items() if k != "stream"}  # one JSON answer
    answer: dict[str, Any] = _view_json(_views().ask, "POST", body=body)
    return answer


def _rate_limit(principal: Principal) -> None:
    """The same per-caller limit as /api/v1/ask (server/auth.py, `rate_limited` routes), for
    the tools that search: `ask` and `search`."""
    if principal.via == "none":
        return
    st = state()
    wait = st.limiter.take(principal.key_id or f"user:{principal.name}")
    if wait:
        retry = st.limiter.retry_after(wait)
        raise ApiError(
            429,
            "rate_limited",
            f"more than {st.settings.rate_limit_per_minute} requests a minute; retry in {retry} s",
            {"Retry-After": retry},
        )


def _list_documents(arguments: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = _view_json(_views().list_documents, "GET")
    collection, status = arguments.get("collection"), arguments.get("status")
    documents = [
        d
        for d in body["documents"]
        if (collection is None or d.get("collection") == collection)
        and (status is None or d.get("status") == status)
    ]
    return {"documents": documents, "counts": body["counts"]}


def _get_document(arguments: dict[str, Any]) -> dict[str, Any]:
    document_id = _document_id(arguments)
    document = _view_json(_views().get_document, "GET", document_id)  # 404 if not readable
    start, max_chars = arguments.get("start", 0), arguments.get("max_chars", 8000)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ApiError(400, "invalid_start", "'start' must be an integer from 0")
    if (
        isinstance(max_chars, bool)
        or not isinstance(max_chars, int)
        or not (500 <= max_chars <= 50000)
    ):
        raise ApiError(400, "invalid_max_chars", "'max_chars' must be an integer from 500 to 50000")
    store = state().components.store
    chunks = sorted(store.get(store.ids_for_document(document_id)).values(), key=lambda c: c.index)
    passages: list[dict[str, Any]] = []
    size, n = 0, start
    for n in range(start, len(chunks)):
        if passages and size + len(chunks[n].text) > max_chars:
            break
        chunk = chunks[n]
        passages.append(
            {"n": n, "page": chunk.page, "headings": chunk.heading_path, "text": chunk.text}
        )
        size += len(chunk.text)
    else:
        n = len(chunks)
    return {
        "document": document,
        "passages": passages,
        "total_passages": len(chunks),
        "next_start": n if n < len(chunks) else None,
    }
