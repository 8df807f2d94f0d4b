"""MCP at /mcp in the app (real Chroma and embedder, fake model), as JSON-RPC over the Flask
test client: the tools, their scopes and collection filters, REST's error codes as tool
errors, the audit log. The SDK's own clients over stdio and HTTP: tests/integration/test_mcp.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from retriever.embedder import SentenceTransformerEmbedder
from tests.unit.serving import add_user, api_key_app, index_into

LEAVE = "Parental leave lasts 16 weeks at full pay. Requests go to the HR portal."
SECRET = "The launch code of project Borealis is ZEBRA-4242; the launch is in March."
LONG = " ".join(f"Section {i} of the travel policy says trains beat planes." for i in range(300))


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Iterator[tuple[Flask, dict[str, str], dict[str, dict[str, str]]]]:
    data: Path = tmp_path_factory.mktemp("mcp") / "data"
    app = api_key_app(data, embedder, collection_groups={"hr": ["staff"], "secret": ["board"]})
    ids = index_into(
        app, {"hr/leave.txt": LEAVE, "secret/launch.txt": SECRET, "hr/travel.txt": LONG}
    )
    keys = {
        "staff": add_user(app, "sam", "ask", groups=("staff",)),
        "board": add_user(app, "bea", "ingest", groups=("board",)),
        "admin": add_user(app, "ada", "admin"),
    }
    yield app, ids, keys
    app.extensions["enclave"].shutdown()


def rpc(
    client: FlaskClient, headers: dict[str, str], method: str, params: dict[str, Any]
) -> tuple[int, Any]:
    response = client.post(
        "/mcp",
        data=json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}),
        headers={
            **headers,
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        },
    )
    body = response.get_json(silent=True)
    return response.status_code, body


def call(client: FlaskClient, headers: dict[str, str], tool: str, **arguments: Any) -> Any:
    status, body = rpc(client, headers, "tools/call", {"name": tool, "arguments": arguments})
    assert status == 200, body
    result = body["result"]
    # The text content is the structured content, for clients that read only text.
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    return result


def test_initialize_and_list_tools(world: tuple[Flask, Any, Any]) -> None:
    app, _, keys = world
    client = app.test_client()
    status, body = rpc(
        client,
        keys["staff"],
        "initialize",
        {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    )
    assert status == 200
    assert body["result"]["serverInfo"]["name"] == "enclave"
    status, body = rpc(client, keys["staff"], "tools/list", {})
    tools = {t["name"]: t for t in body["result"]["tools"]}
    assert set(tools) == {"search", "ask", "list_documents", "get_document", "reindex_document"}
    assert all(len(t["description"]) > 60 for t in tools.values())
    assert tools["search"]["inputSchema"]["required"] == ["query"]


def test_search_finds_the_passage_with_its_source(world: tuple[Flask, Any, Any]) -> None:
    app, ids, keys = world
    result = call(app.test_client(), keys["staff"], "search", query="parental leave weeks")
    assert not result["isError"]
    first = result["structuredContent"]["passages"][0]
    assert first["document_id"] == ids["hr/leave.txt"]
    assert first["collection"] == "hr" and "16 weeks" in first["text"]
    assert first["title"] and first["score"] > 0 and "page" in first


def test_ask_answers_with_citations_and_sources(world: tuple[Flask, Any, Any]) -> None:
    app, ids, keys = world
    result = call(app.test_client(), keys["staff"], "ask", question="How long is parental leave?")
    answer = result["structuredContent"]
    assert not result["isError"] and not answer["abstained"]
    assert answer["sources"][0]["document_id"] == ids["hr/leave.txt"]
    assert answer["citations"]
    # Audited as the REST answer is, naming the route it came through.
    entry = app.extensions["enclave"].audit.tail(1, action="ask")[-1]
    assert entry.actor.startswith("sam") and entry.target == "mcp"


def test_a_collection_the_caller_cannot_read_is_never_shown(
    world: tuple[Flask, Any, Any],
) -> None:
    app, ids, keys = world
    client = app.test_client()
    staff = keys["staff"]
    bodies = [
        json.dumps(call(client, staff, "search", query="launch code Borealis ZEBRA")),
        json.dumps(call(client, staff, "search", query="launch code", collection="secret")),
        json.dumps(call(client, staff, "ask", question="What is the launch code of Borealis?")),
        json.dumps(call(client, staff, "list_documents")),
    ]
    assert not any("ZEBRA-4242" in b for b in bodies)
    hidden = call(client, staff, "get_document", document_id=ids["secret/launch.txt"])
    assert hidden["isError"]
    assert hidden["structuredContent"]["error"]["code"] == "document_not_found"
    # The board reads it: the test can see the canary when it is there.
    found = call(client, keys["board"], "search", query="launch code Borealis ZEBRA")
    assert "ZEBRA-4242" in json.dumps(found)


def test_rest_error_codes_become_tool_errors(world: tuple[Flask, Any, Any]) -> None:
    app, ids, keys = world
    client = app.test_client()
    cases = [
        ("search", {"query": "leave", "top_k": 0}, "invalid_top_k"),
        ("search", {"query": "   "}, "empty_question"),
        ("search", {}, "missing_query"),
        ("ask", {"question": "leave?", "mode": "psychic"}, "invalid_mode"),
        ("ask", {}, "missing_question"),
        ("get_document", {"document_id": "nope"}, "document_not_found"),
        ("get_document", {"document_id": ids["hr/leave.txt"], "start": -1}, "invalid_start"),
        ("reindex_document", {"document_id": ids["hr/leave.txt"]}, "forbidden"),  # ask scope
        ("nonexistent", {}, "unknown_tool"),
    ]
    for tool, arguments, code in cases:
        result = call(client, keys["staff"], tool, **arguments)
        assert result["isError"], (tool, arguments)
        assert result["structuredContent"]["error"]["code"] == code, (tool, result)
    denied = app.extensions["enclave"].audit.tail(5, action="denied")
    assert any(e.target == "mcp:reindex_document" for e in denied)


def test_a_key_with_the_scope_may_reindex(world: tuple[Flask, Any, Any]) -> None:
    app, ids, keys = world
    result = call(
        app.test_client(), keys["admin"], "reindex_document", document_id=ids["hr/leave.txt"]
    )
    assert not result["isError"]
    assert result["structuredContent"] == {"id": ids["hr/leave.txt"], "status": "pending"}
    registry = app.extensions["enclave"].pipeline.registry
    for _ in range(300):  # indexed again before the next test reads it
        if registry.get(ids["hr/leave.txt"]).status == "indexed":
            break
        time.sleep(0.05)
    assert registry.get(ids["hr/leave.txt"]).status == "indexed"


def test_get_document_pages_through_the_text(world: tuple[Flask, Any, Any]) -> None:
    app, ids, keys = world
    client = app.test_client()
    doc_id, start, texts = ids["hr/travel.txt"], 0, []
    while start is not None:
        page = call(client, keys["staff"], "get_document", document_id=doc_id, start=start)
        body = page["structuredContent"]
        assert body["document"]["id"] == doc_id and body["passages"]
        assert sum(len(p["text"]) for p in body["passages"]) <= 8000 or len(body["passages"]) == 1
        texts += [p["text"] for p in body["passages"]]
        start = body["next_start"]
    assert len(texts) == body["total_passages"] > 1
    assert "Section 0 " in texts[0] and "Section 299 " in texts[-1]


def test_every_call_is_audited(world: tuple[Flask, Any, Any]) -> None:
    app, ids, keys = world
    audit = app.extensions["enclave"].audit
    found = call(app.test_client(), keys["staff"], "search", query="parental leave")
    call(app.test_client(), keys["staff"], "get_document", document_id="missing")
    ok, failed = audit.tail(2, action="mcp_tool")
    assert ok.target == "search" and ok.detail["outcome"] == "ok"
    shown = {p["document_id"] for p in found["structuredContent"]["passages"]}
    assert ids["hr/leave.txt"] in shown and ok.detail["documents"] == sorted(shown)
    assert failed.target == "get_document" and failed.detail["outcome"] == "document_not_found"
    assert "parental" not in json.dumps(ok.to_dict())  # never the query's text
    call(app.test_client(), keys["staff"], "get_document", document_id=ids["hr/leave.txt"])
    read = audit.tail(1, action="mcp_tool")[-1]
    assert read.detail["documents"] == [ids["hr/leave.txt"]]


def test_outsiders_are_refused(world: tuple[Flask, Any, Any]) -> None:
    app, _, keys = world
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer enk_not-a-key"}):
        status, body = rpc(client, headers, "tools/call", {"name": "search", "arguments": {}})
        assert status == 401 and body["error"]["code"] == "unauthorized"
    assert client.get("/mcp", headers=keys["staff"]).status_code == 405


def test_documents_are_resources_for_those_who_may_read_them(
    world: tuple[Flask, Any, Any],
) -> None:
    app, ids, keys = world
    client = app.test_client()
    status, body = rpc(client, keys["staff"], "resources/list", {})
    assert status == 200
    uris = {r["uri"] for r in body["result"]["resources"]}
    assert uris == {f"enclave://documents/{ids[n]}" for n in ("hr/leave.txt", "hr/travel.txt")}
    leave = f"enclave://documents/{ids['hr/leave.txt']}"
    status, body = rpc(client, keys["staff"], "resources/read", {"uri": leave})
    assert "16 weeks" in body["result"]["contents"][0]["text"]
    travel = f"enclave://documents/{ids['hr/travel.txt']}"
    status, body = rpc(client, keys["staff"], "resources/read", {"uri": travel})
    text = body["result"]["contents"][0]["text"]
    assert "Section 0 " in text and "Section 299 " in text  # every page of passages
    secret = f"enclave://documents/{ids['secret/launch.txt']}"
    status, body = rpc(client, keys["staff"], "resources/read", {"uri": secret})
    assert "error" in body and "ZEBRA" not in json.dumps(body)
    assert "no document with id" in body["error"]["message"]
    entry = app.extensions["enclave"].audit.tail(1, action="mcp_resource")[-1]
    assert entry.detail["outcome"] == "document_not_found"


def test_auth_none_answers_loopback_host_names_only(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    """With no keys, a web page reaching the loopback server by DNS rebinding is the risk:
    a request naming another host is refused."""
    from config.settings import Settings
    from retriever.components import Components
    from retriever.generation import FakeGenerator
    from server.app import create_app

    s = Settings(data_dir=tmp_path / "data", llm_backend="fake", watch="off", parse_workers=0)
    app = create_app(s, Components(s, embedder=embedder, generator=FakeGenerator()))
    client = app.test_client()
    status, body = rpc(client, {"Host": "127.0.0.1:8000"}, "tools/list", {})
    assert status == 200 and body["result"]["tools"]
    status, _ = rpc(client, {"Host": "attacker.example:8000"}, "tools/list", {})
    assert status in (400, 403, 421)
    remote = client.post("/mcp", json={}, environ_base={"REMOTE_ADDR": "192.0.2.9"})
    assert remote.status_code == 403
    app.extensions["enclave"].shutdown()


def test_search_counts_against_the_callers_rate_limit(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    """Review 2: `ask` (REST and MCP) was limited per caller, `search` not: an ask key could
    keep the embedder busy with as many searches as it could send."""
    app = api_key_app(
        tmp_path / "data", embedder, rate_limit_per_minute=2, unmapped_collections="everyone"
    )
    try:
        staff = add_user(app, "sam", "ask")
        client = app.test_client()
        results = [call(client, staff, "search", query="parental leave") for _ in range(3)]
        assert [r["isError"] for r in results] == [False, False, True]
        assert results[2]["structuredContent"]["error"]["code"] == "rate_limited"
    finally:
        app.extensions["enclave"].shutdown()
