"""Sizing numbers for docs/deployment.md, measured on the scale-out stack (real processes on
loopback, as in tests/integration/test_scaleout.py).

    python benchmarks/scaleout.py vectors [--count 50000]     # Chroma server RAM per vector
    python benchmarks/scaleout.py ingest --workers 1|2 [--docs 300] [--pin]  # chunks/s, Celery
    python benchmarks/scaleout.py answers [--questions 12] [--clients 1|4]  # one model server

`ingest` drops the first --docs SciFact abstracts (one .txt each) into the inbox of `enclave
serve` (work_queue = celery) and times them until the registry holds every one indexed.
`answers` indexes the demo corpus, then asks its questions through `enclave serve --workers 2`
with generation on one llama_cpp.server. Each writes results/scaleout-<what>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from common import BEIR, machine, read_jsonl, summary_ms, write_result  # type: ignore[import-not-found]

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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.load(r)


def chroma_pid(port: int) -> int:
    """The process listening on the Chroma server's port (`chroma run` execs the server)."""
    import subprocess

    out = subprocess.run(["ss", "-ltnp", f"sport = :{port}"], capture_output=True, text=True)
    return int(out.stdout.split("pid=")[1].split(",")[0])


def bench_vectors(count: int) -> dict[str, Any]:
    import numpy as np

    from retriever.store import http_client

    with TemporaryDirectory(prefix="enclave-bench-") as folder, chroma_server(Path(folder)) as port:
        client = http_client("127.0.0.1", port)
        collection = client.get_or_create_collection(
            "bench", embedding_function=None, metadata={"hnsw:space": "cosine"}
        )
        pid = chroma_pid(port)
        empty = rss_mb(pid)
        rng = np.random.default_rng(0)
        text = "x" * 700  # a chunk's text is stored too (on disk, in SQLite)
        start = time.perf_counter()
        for first in range(0, count, 1000):
            vectors = rng.standard_normal((1000, 384)).astype("float32")
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            ids = [f"c{first + i}" for i in range(1000)]
            collection.add(
                ids=ids,
                embeddings=vectors.tolist(),
                documents=[text] * 1000,
                metadatas=[
                    {"document_id": f"d{(first + i) // 5}", "index": i} for i in range(1000)
                ],
            )
        load_s = time.perf_counter() - start
        collection.query(query_embeddings=[vectors[0].tolist()], n_results=10)
        full = rss_mb(pid)
        disk = sum(p.stat().st_size for p in Path(folder, "chroma").rglob("*") if p.is_file())
    per_gb = count / max(1e-9, (full - empty) / 1024)
    return {
        "benchmark": "scaleout-vectors",
        "vectors": count,
        "dimensions": 384,
        "rss_empty_mb": round(empty, 1),
        "rss_loaded_mb": round(full, 1),
        "vectors_per_gb_ram": int(per_gb),
        "disk_mb": round(disk / 2**20, 1),
        "insert_vectors_per_s": round(count / load_s, 1),
    }


def stack_env(redis_url: str, chroma_port: int, data: Path) -> dict[str, str]:
    return {
        "ENCLAVE_DATA": str(data),
        "ENCLAVE_WORK_QUEUE": "celery",
        "ENCLAVE_REDIS_URL": redis_url,
        "ENCLAVE_CHROMA_HOST": "127.0.0.1",
        "ENCLAVE_CHROMA_PORT": str(chroma_port),
        "ENCLAVE_WATCH": "poll",
        "ENCLAVE_POLL_INTERVAL_S": "1",
        "ENCLAVE_SETTLE_S": "0.5",
    }


def start_workers(
    stack: ExitStack, n: int, folder: Path, env: dict[str, str], pin: bool = False
) -> None:
    """`n` workers; with `pin`, worker i runs on core i only (taskset), so a worker's rate is
    a rate per core."""
    logs = [folder / f"worker-{i}.log" for i in range(n)]
    cores = sorted(os.sched_getaffinity(0))
    for i, log in enumerate(logs):
        command = enclave_command("worker")
        if pin:
            command = ["taskset", "-c", str(cores[i % len(cores)]), *command]
        stack.enter_context(process(command, log, env))
    for log in logs:
        wait_for(lambda log=log: worker_log_ready(log), log.name, 600)


def index_and_wait(base: str, inbox: Path, files: dict[str, bytes]) -> float:
    staging = inbox.parent / "staging"
    staging.mkdir(exist_ok=True)
    for name, content in files.items():
        (staging / name).write_bytes(content)
    start = time.perf_counter()
    for name in files:
        (staging / name).rename(inbox / name)

    def done() -> bool:
        counts = get(f"{base}/api/v1/documents")["counts"]
        return counts["indexed"] + counts["failed"] >= len(files) and not counts["pending"]

    wait_for(done, "indexing", 3600)
    return time.perf_counter() - start


def bench_ingest(workers: int, docs: int, pin: bool) -> dict[str, Any]:
    rows = list(read_jsonl(BEIR / "corpus.jsonl"))[:docs]
    files = {f"doc-{r['_id']}.txt": f"{r.get('title', '')}\n\n{r['text']}\n".encode() for r in rows}
    with TemporaryDirectory(prefix="enclave-bench-") as name, ExitStack() as stack:
        folder = Path(name)
        redis_url = stack.enter_context(redis_server(folder))
        chroma_port = stack.enter_context(chroma_server(folder))
        data = folder / "data"
        (data / "inbox").mkdir(parents=True)
        env = {**stack_env(redis_url, chroma_port, data), "ENCLAVE_LLM_BACKEND": "fake"}
        env["ENCLAVE_PARSE_WORKERS"] = "0"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        stack.enter_context(
            process(enclave_command("serve", "--port", str(port)), folder / "web.log", env)
        )
        wait_for(lambda: healthy(base), "the web server", 600)
        start_workers(stack, workers, folder, env, pin)
        seconds = index_and_wait(base, data / "inbox", files)
        documents = get(f"{base}/api/v1/documents")["documents"]
    chunks = sum(d["chunks"] for d in documents)
    return {
        "benchmark": "scaleout-ingest",
        "workers": workers,
        "pinned_one_core_each": pin,
        "documents": len(documents),
        "failed": sum(d["status"] == "failed" for d in documents),
        "chunks": chunks,
        "seconds": round(seconds, 1),
        "docs_per_s": round(len(documents) / seconds, 2),
        "chunks_per_s": round(chunks / seconds, 2),
    }


def bench_answers(questions: int, clients: int) -> dict[str, Any]:
    asked = [
        json.loads(line)["question"] for line in (DEMO / "questions.jsonl").read_text().splitlines()
    ][:questions]
    demo = {p.name: p.read_bytes() for p in DEMO.iterdir() if p.suffix != ".jsonl"}
    with TemporaryDirectory(prefix="enclave-bench-") as name, ExitStack() as stack:
        folder = Path(name)
        redis_url = stack.enter_context(redis_server(folder))
        chroma_port = stack.enter_context(chroma_server(folder))
        llm = stack.enter_context(live_model_server(folder / "model-server.log"))
        data = folder / "data"
        (data / "inbox").mkdir(parents=True)
        env = {**stack_env(redis_url, chroma_port, data), "ENCLAVE_LLM_BACKEND": "openai"}
        env.update({"ENCLAVE_LLM_ENDPOINT": llm, "ENCLAVE_GENERATION_QUEUE": "64"})
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        serve = enclave_command("serve", "--workers", "2", "--port", str(port))
        stack.enter_context(process(serve, folder / "web.log", env))
        wait_for(lambda: healthy(base), "the web server", 600)
        start_workers(stack, 1, folder, env)
        index_and_wait(base, data / "inbox", demo)

        def ask(question: str) -> tuple[float, int, bool]:
            request = urllib.request.Request(
                f"{base}/api/v1/ask",
                data=json.dumps({"question": question}).encode(),
                headers={"Content-Type": "application/json"},
            )
            start = time.perf_counter()
            with urllib.request.urlopen(request, timeout=600) as r:
                body = json.load(r)
            return time.perf_counter() - start, body["timings"].get("tokens", 0), body["abstained"]

        ask(asked[0])  # warm both the model server's cache and a web worker
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(ask, asked))
        seconds = time.perf_counter() - start
    generated = [r for r in results if r[1] > 0]
    return {
        "benchmark": "scaleout-answers",
        "questions": len(results),
        "clients": clients,
        "generated": len(generated),
        "seconds": round(seconds, 1),
        "answers_per_s": round(len(results) / seconds, 3),
        "generated_answers_per_s": round(len(generated) / seconds, 3),
        "latency": summary_ms([r[0] * 1000 for r in results]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("vectors").add_argument("--count", type=int, default=50000)
    p = sub.add_parser("ingest")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--docs", type=int, default=300)
    p.add_argument("--pin", action="store_true", help="one core per worker (taskset)")
    p = sub.add_parser("answers")
    p.add_argument("--questions", type=int, default=12)
    p.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    if args.what == "vectors":
        result, suffix = bench_vectors(args.count), "vectors"
    elif args.what == "ingest":
        result, suffix = (
            bench_ingest(args.workers, args.docs, args.pin),
            f"ingest-{args.workers}w{'-pinned' if args.pin else ''}",
        )
    else:
        result, suffix = bench_answers(args.questions, args.clients), f"answers-{args.clients}c"
    result["machine"] = machine()
    print(json.dumps(result, indent=2))
    write_result(f"scaleout-{suffix}", result)


if __name__ == "__main__":
    sys.exit(main())
