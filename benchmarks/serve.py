"""A live `enclave serve` with the real SLM under 1, 4 and 16 concurrent clients asking the
demo questions: answers/s, latency, errors, 429s and the server's peak memory.

    python benchmarks/serve.py [--clients 1,4,16] [--seconds 60]

The demo corpus is indexed once into the benchmarks' cache; the server runs with the default
settings (one generation slot, eight queue places). Each client (a thread with its own httpx
client) asks the next demo question, waits for the answer (120 s at most), and after a 429
waits the Retry-After it was given before asking again. The server's resident memory (its
process and its children: parser workers) is sampled from /proc every 0.2 s. Writes
results/serve.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
from common import CACHE, ROOT, machine, print_table, read_jsonl, write_result  # type: ignore[import-not-found]

from retriever.metrics import percentile

QUESTIONS = ROOT / "corpora" / "demo" / "questions.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants, in MiB."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{current}/task/{current}/children") as fh:
                pending += [int(c) for c in fh.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


class MemoryWatch(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopped = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            self.peak = max(self.peak, rss_mb(self.pid))


def client(
    base: str, questions: Any, until: float, results: list[dict[str, Any]], lock: threading.Lock
) -> None:
    with httpx.Client(base_url=base, timeout=120) as http:
        while time.time() < until:
            with lock:
                question = next(questions)
            start = time.perf_counter()
            try:
                response = http.post("/api/v1/ask", json={"question": question})
                status = response.status_code
                retry = float(response.headers.get("Retry-After", 0) or 0)
            except httpx.TimeoutException:
                status, retry = -1, 0.0
            except httpx.HTTPError:
                status, retry = -2, 0.0
            elapsed = time.perf_counter() - start
            with lock:
                results.append({"status": status, "seconds": elapsed})
            if status == 429:
                time.sleep(min(retry, max(0.0, until - time.time())))


def load_level(base: str, clients: int, seconds: float, pid: int) -> dict[str, Any]:
    questions = itertools.cycle([str(q["question"]) for q in read_jsonl(QUESTIONS)])
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    watch = MemoryWatch(pid)
    watch.start()
    start = time.time()
    until = start + seconds
    threads = [
        threading.Thread(target=client, args=(base, questions, until, results, lock))
        for _ in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - start
    watch.stopped.set()
    watch.join()
    ok = [r["seconds"] for r in results if r["status"] == 200]
    return {
        "clients": clients,
        "answers": len(ok),
        "answers_per_s": round(len(ok) / wall, 3),
        "p50_s": round(percentile(ok, 0.5), 2) if ok else None,
        "p95_s": round(percentile(ok, 0.95), 2) if ok else None,
        "http_429": sum(r["status"] == 429 for r in results),
        "http_5xx": sum(500 <= r["status"] < 600 for r in results),
        "other_errors": sum(
            r["status"] < 0 or (400 <= r["status"] < 500 and r["status"] != 429) for r in results
        ),
        "timeouts": sum(r["status"] == -1 for r in results),
        "peak_rss_mb": round(watch.peak, 1),
        "wall_s": round(wall, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    data = CACHE / "serve"
    env = {**os.environ, "ENCLAVE_EMBED_CACHE_DIR": str(CACHE / "models")}
    cli = [sys.executable, "-m", "cli"]
    if not (data / "registry.sqlite3").exists():
        subprocess.run(
            [*cli, "ingest", "corpora/demo", "--data", str(data)],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
    port = free_port()
    log = open(CACHE / "serve.log", "w")  # noqa: SIM115  (closed below)
    started = time.time()
    server = subprocess.Popen(
        [*cli, "serve", "--data", str(data), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []
    try:
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=5).json()["status"] == "ok":
                    break
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if server.poll() is not None or time.time() - started > 300:
                raise SystemExit(f"server did not start; see {CACHE / 'serve.log'}")
            time.sleep(0.5)
        ready_s = time.time() - started
        idle_rss = rss_mb(server.pid)
        first = time.perf_counter()
        httpx.post(f"{base}/api/v1/ask", json={"question": "What is the AS number?"}, timeout=120)
        first_s = time.perf_counter() - first
        for clients in [int(c) for c in args.clients.split(",")]:
            rows.append(load_level(base, clients, args.seconds, server.pid))
            print_table(rows[-1:])
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    print_table(rows)
    result = {
        "benchmark": "serve",
        "seconds_per_level": args.seconds,
        "generation_slots": 1,
        "generation_queue": 8,
        "server_ready_s": round(ready_s, 1),
        "first_question_s": round(first_s, 2),
        "idle_rss_mb": round(idle_rss, 1),
        "rows": rows,
        "machine": machine(),
    }
    write_result("serve", result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
