"""Ingestion and a question with the real embedder and SLM, inside a network namespace that
has only loopback (`unshare -rn`): nothing Enclave needs is fetched from anywhere. Then the
same through MCP: the SDK's stdio client starts `enclave mcp` (metrics on, as always)."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO, ROOT

pytestmark = pytest.mark.integration

QUESTION = "How many days of paid annual leave do full-time employees get?"
# Inside the namespace: loopback up, then proof that nothing else is reachable.
PROBE = (
    "import socket,sys\n"
    "try:\n"
    "    socket.create_connection(('192.0.2.1', 80), timeout=3)\n"
    "except OSError as e:\n"
    "    print('offline:', e)\n"
    "else:\n"
    "    sys.exit('the namespace reaches the network')\n"
)
# The SDK's client over stdio: `enclave mcp` (auth mode none: the local admin) searches and
# answers; one JSON line with the paths it found.
MCP_CLIENT = """
import json, os, sys, anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

async def main():
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "cli", "mcp", "--data", sys.argv[1]],
        env=dict(os.environ))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        search = await session.call_tool("search", {"query": sys.argv[2]})
        ask = await session.call_tool("ask", {"question": sys.argv[2]})
    assert not search.isError and not ask.isError, (search, ask)
    print(json.dumps({"search": search.structuredContent["passages"][0]["path"],
                      "ask": [s["path"] for s in ask.structuredContent["sources"]],
                      "answer": ask.structuredContent["answer"]}))

anyio.run(main)
"""


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _namespaces_work(), reason="unprivileged network namespaces unavailable")
def test_ingest_and_ask_with_no_network(tmp_path: Path) -> None:
    data = tmp_path / "data"
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(DEMO / "hr-leave-policy.docx", docs)
    py = shlex.quote(sys.executable)
    script = " && ".join(
        [
            "(ip link set lo up 2>/dev/null || true)",
            f"{py} -c {shlex.quote(PROBE)}",
            f"{py} -m cli ingest {shlex.quote(str(docs))} --data {shlex.quote(str(data))} --json",
            f"{py} -m cli ask {shlex.quote(QUESTION)} --data {shlex.quote(str(data))} --json",
            f"{py} -c {shlex.quote(MCP_CLIENT)} {shlex.quote(str(data))} {shlex.quote(QUESTION)}",
        ]
    )
    result = subprocess.run(
        ["unshare", "-rn", "sh", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "offline:" in result.stdout
    lines = result.stdout.strip().splitlines()
    answer = json.loads(lines[-2])
    assert answer["sources"] and "hr-leave-policy.docx" in answer["sources"][0]["path"]
    assert answer["answer"]
    mcp = json.loads(lines[-1])
    assert mcp["search"].endswith("hr-leave-policy.docx")
    assert mcp["ask"] and mcp["ask"][0].endswith("hr-leave-policy.docx") and mcp["answer"]
