"""MCP with the SDK's own client, against the real `enclave` command: over HTTP at /mcp of a live
`enclave serve`, and over stdio with `enclave mcp` as a subprocess (beside the server, as an
IDE would start it). Two demo documents in two collections, auth mode api_key, the fake model
at the model boundary (as the other live-server tests); the real embedder and Chroma."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from service.identity import IdentityStore
from tests.conftest import DEMO, ROOT
from tests.integration.live import live_server

pytestmark = pytest.mark.integration
T = TypeVar("T")

RUNBOOK = "network-operations-runbook.md"
FACILITIES = "facilities-guide.txt"
OPS_QUESTION = "Which Skywatch alarm code means loss of signal on a fibre trunk?"
FACILITIES_QUESTION = "What is the address of Kestrel House?"
ENV = {
    "ENCLAVE_LLM_BACKEND": "fake",
    "ENCLAVE_AUTH_MODE": "api_key",
    "ENCLAVE_COLLECTION_GROUPS": "ops=ops-team;facilities=facilities-team",
    "ENCLAVE_RATE_LIMIT_PER_MINUTE": "0",
}
TOOLS = {"search", "ask", "list_documents", "get_document"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """A live server over a data dir with the runbook in collection `ops` and the facilities
    guide in `facilities`; keys: `ops` (group ops-team, scope ask), `admin`."""
    data = tmp_path_factory.mktemp("mcp-live") / "data"
    for collection, name in (("ops", RUNBOOK), ("facilities", FACILITIES)):
        (data / "inbox" / collection).mkdir(parents=True)
        shutil.copy(DEMO / name, data / "inbox" / collection / name)
    identity = IdentityStore(Settings(data_dir=data).identity_path)
    identity.add_user("olga", "ask")
    identity.add_group("ops-team")
    identity.add_member("ops-team", "olga")
    identity.add_user("root", "admin")
    keys = {
        "ops": identity.create_key("olga", "ask")[1],
        "admin": identity.create_key("root", "admin")[1],
    }
    identity.close()
    with live_server(data, env=ENV) as base:
        request = urllib.request.Request(
            f"{base}/api/v1/documents", headers={"Authorization": f"Bearer {keys['admin']}"}
        )
        for _ in range(240):  # the inbox is reconciled after the server is ready
            with urllib.request.urlopen(request, timeout=10) as r:
                counts = json.load(r)["counts"]
            if counts.get("indexed") == 2:
                break
            time.sleep(0.5)
        assert counts.get("indexed") == 2, counts
        yield base, data, keys


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    """`anyio.run(main)` on a thread of its own: an earlier test (Playwright's sync API) may
    have left an event loop running on this one, and asyncio refuses to nest loops."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, main).result()


async def _session_calls(session: ClientSession) -> dict[str, Any]:
    """What the tests check, from one client session of either transport."""
    await session.initialize()
    tools = await session.list_tools()
    out: dict[str, Any] = {"tools": {t.name for t in tools.tools}}
    for name, arguments in (
        ("search", {"query": OPS_QUESTION}),
        ("ask", {"question": OPS_QUESTION}),
        ("search", {"query": FACILITIES_QUESTION, "top_k": 20}),
        ("ask", {"question": FACILITIES_QUESTION}),
        ("list_documents", {}),
        ("reindex_document", {"document_id": "x"}),
    ):
        result = await session.call_tool(name, arguments)
        key = f"{name}:{arguments.get('query') or arguments.get('question') or ''}"
        out[key] = (result.isError, result.structuredContent)
    resources = (await session.list_resources()).resources
    out["resources"] = [r.name for r in resources]
    contents = (await session.read_resource(resources[0].uri)).contents
    out["resource_text"] = getattr(contents[0], "text", "")
    return out


def _check(out: dict[str, Any]) -> None:
    is_error, search = out[f"search:{OPS_QUESTION}"]
    assert not is_error and search["passages"][0]["path"].endswith(RUNBOOK)
    is_error, answer = out[f"ask:{OPS_QUESTION}"]
    assert not is_error and not answer["abstained"]
    assert answer["sources"][0]["path"].endswith(RUNBOOK)
    # A user of the ops group never sees a passage of the facilities collection.
    everything = json.dumps({k: v for k, v in out.items() if k != "tools"})
    assert FACILITIES not in everything and "Havenkade" not in everything
    documents = out["list_documents:"][1]["documents"]
    assert [d["name"] for d in documents] == [RUNBOOK]
    assert out["resources"] == [RUNBOOK] and "ALM-4471" in out["resource_text"]


def test_http_transport_with_the_sdk_client(served: tuple[str, Path, dict[str, str]]) -> None:
    base, _, keys = served

    async def run() -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {keys['ops']}"}
        async with (
            streamablehttp_client(f"{base}/mcp", headers=headers) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            return await _session_calls(session)

    out = run_async(run)
    assert out["tools"] == TOOLS | {"reindex_document"}
    _check(out)
    # A key without the ingest scope gets a tool error, not data.
    is_error, body = out["reindex_document:"]
    assert is_error and body["error"]["code"] == "forbidden"


def test_http_transport_refuses_outsiders(served: tuple[str, Path, dict[str, str]]) -> None:
    base, _, _ = served

    async def run() -> None:
        async with (
            streamablehttp_client(f"{base}/mcp") as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()

    with pytest.raises(BaseException) as raised:  # the SDK wraps it in exception groups
        run_async(run)
    assert "401" in repr(raised.value) or "Unauthorized" in repr(raised.value)
    for headers in ({}, {"Authorization": "Bearer enk_forged"}):
        request = urllib.request.Request(f"{base}/metrics", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401


def test_stdio_transport_with_the_sdk_client(served: tuple[str, Path, dict[str, str]]) -> None:
    _, data, keys = served
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "cli", "mcp", "--data", str(data)],
        env={**os.environ, **ENV, "ENCLAVE_API_KEY": keys["ops"]},
        cwd=str(ROOT),
    )

    async def run() -> dict[str, Any]:
        async with (
            stdio_client(params) as (read, write),
            ClientSession(read, write) as session,
        ):
            return await _session_calls(session)

    out = run_async(run)
    assert out["tools"] == TOOLS  # nothing that writes the indexes over stdio
    _check(out)
    is_error, body = out["reindex_document:"]
    assert is_error and body["error"]["code"] == "unknown_tool"


def test_stdio_refuses_a_wrong_key(served: tuple[str, Path, dict[str, str]]) -> None:
    import subprocess

    _, data, _ = served
    result = subprocess.run(
        [sys.executable, "-m", "cli", "mcp", "--data", str(data)],
        env={**os.environ, **ENV, "ENCLAVE_API_KEY": "enk_forged"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        input="",
        timeout=300,
    )
    assert result.returncode == 2 and "ENCLAVE_API_KEY" in result.stderr


def test_metrics_of_the_live_server(served: tuple[str, Path, dict[str, str]]) -> None:
    base, _, keys = served
    request = urllib.request.Request(
        f"{base}/metrics", headers={"Authorization": f"Bearer {keys['admin']}"}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        text = r.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("enclave_documents", (("status", "indexed"),))] == 2
    assert samples[("enclave_ingested_documents_total", ())] == 2
    assert samples[("enclave_ready", ())] == 1
