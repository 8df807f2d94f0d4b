"""Ingestion and a question with the real embedder and SLM, inside a network namespace that
has only loopback (`unshare -rn`): nothing Enclave needs is fetched from anywhere."""

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
            f"{py} -m server.cli ingest {shlex.quote(str(docs))} --data {shlex.quote(str(data))}"
            " --json",
            f"{py} -m server.cli ask {shlex.quote(QUESTION)} --data {shlex.quote(str(data))}"
            " --json",
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
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["sources"] and "hr-leave-policy.docx" in answer["sources"][0]["path"]
    assert answer["answer"]
