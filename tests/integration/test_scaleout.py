"""Scale-out on one machine, every part its own process on loopback: redis-server (broker and
shared generation slots), PostgreSQL (registry, job log, keyword index, conversations, audit),
`chroma run`, two `enclave worker` Celery workers, `enclave serve --workers 2` (gunicorn) and a
llama_cpp.server model server. 200 files go into the inbox; one
worker is SIGKILLed mid-way; every file must end up indexed exactly once (registry, Chroma ids,
keyword ids, job log) and the killed worker's task done by the other. Then a question through
the API gets a cited answer.

Run alone: `pytest -m scaleout` (`make test-scaleout`)."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retriever.database import Connection
from retriever.store import http_client
from tests import postgres
from tests.conftest import DEMO
from tests.integration.live import free_port
from tests.integration.live import model_server as live_model_server
from tests.integration.stack import (
    chroma_server,
    enclave_command,
    healthy,
    process,
    redis_server,
    wait_for,
    worker_log_ready,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.scaleout,
    pytest.mark.skipif(postgres.missing() is not None, reason=str(postgres.missing())),
]

FILES = 200
DEMO_FILE = "hr-leave-policy.docx"  # one real document, for the question at the end
QUESTION = next(
    json.loads(line)
    for line in (DEMO / "questions.jsonl").read_text().splitlines()
    if json.loads(line)["source"] == DEMO_FILE
)
TASK_LINE = re.compile(r"Task enclave\.index_documents\[([0-9a-f-]+)\] (received|succeeded)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Redis, a Chroma server and a model server; yields the environment that points
    Enclave at them."""
    folder = tmp_path_factory.mktemp("scaleout-stack")
    with (
        redis_server(folder) as redis_url,
        postgres.temporary_cluster() as cluster,
        postgres.temporary_database(cluster) as database_url,
        chroma_server(folder) as chroma_port,
        live_model_server(folder / "model-server.log") as llm,
    ):
        yield {
            "ENCLAVE_WORK_QUEUE": "celery",
            "ENCLAVE_REDIS_URL": redis_url,
            "ENCLAVE_DATABASE_URL": database_url,
            "ENCLAVE_CHROMA_HOST": "127.0.0.1",
            "ENCLAVE_CHROMA_PORT": str(chroma_port),
            "ENCLAVE_LLM_BACKEND": "openai",
            "ENCLAVE_LLM_ENDPOINT": llm,
            # A lost worker's task is delivered again after this long (default: an hour).
            "ENCLAVE_CELERY_VISIBILITY_TIMEOUT_S": "20",
            "ENCLAVE_PARSE_WORKERS": "0",  # 2 cores: parse in the worker process itself
            "ENCLAVE_WATCH": "poll",
            "ENCLAVE_POLL_INTERVAL_S": "1",
            "ENCLAVE_SETTLE_S": "0.5",
        }


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def tasks(log: Path) -> tuple[set[str], set[str]]:
    """Task ids a worker received and finished, from its log."""
    received, succeeded = set(), set()
    for task_id, event in TASK_LINE.findall(log.read_text(errors="replace")):
        (received if event == "received" else succeeded).add(task_id)
    return received, succeeded


def drop_files(inbox: Path) -> None:
    """199 small notes (each its own content) and one demo document; written aside, then
    moved in, as a copy tool would."""
    staging = inbox.parent / "staging"
    staging.mkdir()
    for n in range(FILES - 1):
        team = ("network", "billing", "field", "support")[n % 4]
        (staging / f"note-{n:03d}.txt").write_text(
            f"Operations note {n}\n\nThe {team} team logged change request CR-{4000 + n} on "
            f"day {n % 28 + 1}; its rollback window is {n % 7 + 2} hours and its owner is "
            f"engineer number {n * 7 % 101}.\n"
        )
    (staging / DEMO_FILE).write_bytes((DEMO / DEMO_FILE).read_bytes())
    for file in sorted(staging.iterdir()):
        file.rename(inbox / file.name)


def test_two_workers_index_every_file_once_through_a_sigkill(
    stack: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    env = {**stack, "ENCLAVE_DATA": str(data)}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = {name: tmp_path / f"{name}.log" for name in ("web", "worker-a", "worker-b")}
    serve = enclave_command("serve", "--workers", "2", "--port", str(port))
    with (
        process(serve, logs["web"], env) as web,
        process(enclave_command("worker"), logs["worker-a"], env) as worker_a,
        process(enclave_command("worker"), logs["worker-b"], env) as worker_b,
    ):
        for name, proc in (("worker-a", worker_a), ("worker-b", worker_b)):
            wait_for(
                lambda log=logs[name], proc=proc: worker_log_ready(log) or proc.poll() is not None,
                name,
                300,
            )
            assert proc.poll() is None, logs[name].read_text()
        wait_for(lambda: healthy(base) or web.poll() is not None, "the web server", 300)
        assert web.poll() is None, logs["web"].read_text()

        drop_files(inbox)

        # SIGKILL worker A once it has done some work, while it holds a task.
        def a_is_busy() -> bool:
            received, succeeded = tasks(logs["worker-a"])
            return len(succeeded) >= 3 and bool(received - succeeded)

        wait_for(a_is_busy, "worker A to be mid-task", 300, logs["worker-a"].read_text)
        os.kill(worker_a.pid, signal.SIGKILL)
        worker_a.wait()
        received, succeeded = tasks(logs["worker-a"])
        in_flight = received - succeeded
        assert in_flight, "worker A was killed between tasks"

        def all_indexed() -> bool:
            counts = get(f"{base}/api/v1/documents")["counts"]
            return counts["indexed"] + counts["failed"] >= FILES and not counts["pending"]

        wait_for(all_indexed, "every file indexed", 600, logs["worker-b"].read_text)

        # The killed worker's task is delivered again (after the visibility timeout) and done
        # by the other, even if A had written its documents before it died (then B only
        # finds them indexed).
        wait_for(
            lambda: in_flight <= tasks(logs["worker-b"])[1],
            "worker B to finish worker A's task",
            120,
            lambda: logs["worker-b"].read_text()[-3000:],
        )

        documents = get(f"{base}/api/v1/documents")["documents"]
        assert len(documents) == FILES
        assert {d["status"] for d in documents} == {"indexed"}, [
            (d["path"], d["error"]) for d in documents if d["status"] != "indexed"
        ]
        expected = {d["id"]: d["chunks"] for d in documents}
        assert all(expected.values())

        # Chroma: each document's chunks, once (ids are unique; no stale extras).
        client = http_client("127.0.0.1", int(stack["ENCLAVE_CHROMA_PORT"]))
        collection = client.get_collection("enclave_chunks")
        metadatas = collection.get(include=["metadatas"])["metadatas"] or []
        assert Counter(str(m["document_id"]) for m in metadatas) == expected

        # Keyword index: the same chunks, no chunk id twice.
        database = Connection(stack["ENCLAVE_DATABASE_URL"])
        assert not list(data.glob("*.sqlite3"))  # every SQL store is in PostgreSQL
        rows = database.execute("SELECT chunk_id, document_id FROM chunks").fetchall()
        assert len({r[0] for r in rows}) == len(rows)
        assert Counter(r[1] for r in rows) == expected
        assert {r[0] for r in rows} == set(collection.get(include=[])["ids"])

        # The job log: one outcome per document, although a task ran twice.
        logged = database.execute(
            "SELECT document_id, count(*) FROM job_files WHERE status = 'indexed' "
            "GROUP BY document_id"
        ).fetchall()
        assert dict(logged) == dict.fromkeys(expected, 1)

        # A question through the API (a gunicorn worker, the model server): a cited answer.
        request = urllib.request.Request(
            f"{base}/api/v1/ask",
            data=json.dumps({"question": QUESTION["question"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as r:
            body = json.load(r)
        assert body["sources"][0]["path"].endswith(DEMO_FILE)
        assert body["timings"]["tokens"] > 0  # written by the model server
        assert body["citations"], body["answer"]
        health = get(f"{base}/api/v1/health")
        assert health["generation"]["active"] == 0  # the shared slot was given back
