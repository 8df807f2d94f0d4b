"""The drop folder: sync, bad files, watchers and crash recovery, on real files with the real
embedder and Chroma."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from config.settings import Settings
from ingest.inbox import InboxSync, InboxWatcher
from ingest.pipeline import IngestPipeline, build_pipeline
from retriever.components import Components
from retriever.embedder import SentenceTransformerEmbedder
from tests.conftest import DEMO, ROOT, write
from tests.integration.live import enclave, live_server

pytestmark = pytest.mark.integration

TOPICS = [
    "routers",
    "leave",
    "badges",
    "invoices",
    "backups",
    "laptops",
    "parking",
    "VPN",
    "canteen",
    "printers",
    "fibre",
    "alarms",
    "payroll",
    "travel",
    "contracts",
    "phones",
    "servers",
    "training",
    "visitors",
    "shifts",
]


class CountingEmbedder:
    """The real embedder, counting what it is asked to embed."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.dimension = inner.dimension
        self.max_tokens = inner.max_tokens
        self.texts: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return self.inner.embed(texts)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


def _doc(i: int, extra: str = "") -> str:
    topic = TOPICS[i % len(TOPICS)]
    return (
        f"# Note {i} about {topic}\n\nPolicy {1000 + i} covers {topic}. "
        f"The owner of {topic} is team {i}. {extra}\n"
    )


@pytest.fixture
def inbox_pipeline(
    settings: Settings, embedder: SentenceTransformerEmbedder
) -> Iterator[tuple[IngestPipeline, CountingEmbedder]]:
    counting = CountingEmbedder(embedder)
    pipeline = build_pipeline(Components(settings, embedder=counting))
    yield pipeline, counting
    pipeline.close()


def _assert_consistent(pipeline: IngestPipeline) -> None:
    """Every indexed document has exactly its chunks in both indexes; nothing else is there."""
    indexed = {r.id: r for r in pipeline.registry.list("indexed")}
    assert pipeline.store.all_document_ids() == set(indexed)
    assert pipeline.keyword.all_document_ids() == set(indexed)
    for doc_id, record in indexed.items():
        dense = pipeline.store.ids_for_document(doc_id)
        keyword = pipeline.keyword.ids_for_document(doc_id)
        assert len(dense) == len(set(dense)) == record.chunks
        assert sorted(dense) == sorted(keyword)


def test_add_change_rename_delete(inbox_pipeline: tuple[IngestPipeline, CountingEmbedder]) -> None:
    pipeline, counting = inbox_pipeline
    inbox = pipeline.inbox
    files = [write(inbox / ("hr" if i < 3 else "ops") / f"note-{i}.md", _doc(i)) for i in range(10)]
    write(inbox / "ops" / "~$lock.docx", "office lock file")
    write(inbox / "ops" / "copy.part", "partial download")
    sync = InboxSync(pipeline, settle_s=0)
    assert sync.scan().count("indexed") == 10
    _assert_consistent(pipeline)
    assert {r.collection for r in pipeline.registry.list("indexed")} == {"hr", "ops"}

    files[0].write_text(_doc(0, "Changed: the owner is now team 99."))
    files[1].write_text(_doc(1, "Changed again."))
    renamed = files[2].with_name("renamed-note-2.md")
    moved_to = inbox / "ops" / renamed.name
    files[2].rename(moved_to)  # new name, and from collection hr to ops
    files[3].unlink()
    counting.texts.clear()
    report = sync.scan()
    assert report.count("indexed") == 2
    assert report.count("renamed") == 1
    assert report.count("deleted") == 1
    # The moved file was not re-embedded, only the two changed ones were.
    assert all("Note 2 " not in t for t in counting.texts)
    assert any("team 99" in t for t in counting.texts)
    moved = pipeline.registry.get_by_path(str(moved_to))
    assert moved is not None and moved.status == "indexed" and moved.collection == "ops"
    hits = pipeline.store.get(pipeline.store.ids_for_document(moved.id))
    assert {c.path for c in hits.values()} == {str(moved_to)}
    assert {c.collection for c in hits.values()} == {"ops"}
    assert len(pipeline.registry.list("indexed")) == 9
    _assert_consistent(pipeline)
    assert sync.scan().outcomes == []  # nothing left to do
    # Each scan with work is a job, with per-file outcomes and rates.
    latest, first = pipeline.jobs.list()[:2]
    assert latest["kind"] == "inbox" and latest["status"] == "finished"
    assert latest["counts"] == {"indexed": 2, "renamed": 1, "deleted": 1}
    assert first["counts"] == {"indexed": 10} and first["done"] == first["total"] == 10
    files = pipeline.jobs.get(latest["id"])["files"]  # type: ignore[index]
    assert {f["status"] for f in files} == {"indexed", "renamed", "deleted"}


def _encrypted_pdf(path: Path) -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(str(DEMO / "it-security-policy.pdf")).pages[:1]:
        writer.add_page(page)
    writer.encrypt("secret")
    with path.open("wb") as fh:
        writer.write(fh)


def _zip_bomb_docx(path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document>" + "A" * 50_000_000)
    path.write_bytes(buffer.getvalue())


def test_bad_files_fail_with_distinct_reasons(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        llm_backend="fake",
        watch="off",
        parse_workers=1,
        parse_timeout_s=20,
        quarantine="move",
    )
    components = Components(settings, embedder=embedder)
    pipeline = build_pipeline(components)
    try:
        inbox = pipeline.inbox
        for i in range(20):
            write(inbox / f"good-{i}.md", _doc(i))
        (inbox / "corrupt.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\n" * 3)
        _encrypted_pdf(inbox / "encrypted.pdf")
        _zip_bomb_docx(inbox / "bomb.docx")
        outside = write(tmp_path / "outside" / "secret.md", "# Secret\n\nnot for the index\n")
        (inbox / "link.md").symlink_to(outside)
        # A file the parser cannot finish in time: a large text, with a short time limit
        # once the worker has warmed up (its first parse of a format imports the parser).
        (inbox / "huge.txt").write_text(("word " * 20 + "\n\n") * 200_000)
        pool = pipeline.parser_pool
        assert pool is not None
        pool.load(DEMO / "facilities-guide.txt")
        pool.load(write(tmp_path / "warm.md", "# Warm\n\nup\n"))
        pool.timeout_s = 3
        report = InboxSync(pipeline, settle_s=0).scan()

        failed = {
            Path(o.path).name.split("-")[0]: o.error
            for o in report.outcomes
            if o.status == "failed"
        }
        assert report.count("indexed") == 20, report.to_dict()
        assert len(failed) == 5, failed
        reasons = " | ".join(str(e) for e in failed.values())
        for expected in ("damaged", "encrypted", "zip bomb", "outside the inbox", "longer than"):
            assert expected in reasons, reasons
        assert len(set(failed.values())) == len(failed)  # distinct reasons
        # Quarantined with the reason beside each file; nothing bad reached the indexes.
        quarantined = sorted(p.name for p in settings.quarantine_dir.rglob("*.error.json"))
        assert len(quarantined) == 5
        assert all(r.status != "indexed" or "good-" in r.path for r in pipeline.registry.list())
        _assert_consistent(pipeline)
    finally:
        pipeline.close()


@pytest.mark.parametrize("mode", ["events", "poll"])
def test_watcher_follows_the_folder(
    mode: str, inbox_pipeline: tuple[IngestPipeline, CountingEmbedder]
) -> None:
    pipeline, _ = inbox_pipeline
    watcher = InboxWatcher(InboxSync(pipeline, settle_s=0.3), mode, poll_interval_s=0.3)  # type: ignore[arg-type]
    watcher.start()
    try:
        doc = write(pipeline.inbox / "team" / "new.md", _doc(5))

        def status() -> str | None:
            record = pipeline.registry.get_by_path(str(doc))
            return record.status if record else None

        deadline = time.time() + 60
        while status() != "indexed":
            assert time.time() < deadline, f"not indexed ({mode})"
            time.sleep(0.2)
        doc.unlink()
        while status() != "deleted":
            assert time.time() < deadline, f"not deleted ({mode})"
            time.sleep(0.2)
        _assert_consistent(pipeline)
    finally:
        watcher.stop()


def _count(registry: Path, status: str) -> int:
    with sqlite3.connect(registry) as db:
        return int(
            db.execute("SELECT count(*) FROM documents WHERE status = ?", (status,)).fetchone()[0]
        )


def _wait_for_pending(registry: Path, process: subprocess.Popen[bytes]) -> None:
    """Until the ingest run has registered its work (documents pending)."""
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        try:
            if registry.exists() and _count(registry, "pending") > 0:
                return
        except sqlite3.OperationalError:
            pass  # the schema is being created
        time.sleep(0.05)


def test_sigkill_during_ingestion_never_duplicates_or_loses(tmp_path: Path) -> None:
    """Kill `enclave ingest` at random moments, restart it, and check the indexes."""
    docs = tmp_path / "docs"
    for i in range(16):
        write(docs / f"doc-{i}.md", _doc(i, " ".join(f"detail {i}-{j}." for j in range(150))))
    data = tmp_path / "data"
    # Small write batches: many points where a kill lands between two commits.
    env = {**os.environ, "ENCLAVE_PARSE_WORKERS": "0", "ENCLAVE_INGEST_BATCH_CHUNKS": "8"}
    command = [sys.executable, "-m", "cli", "ingest", str(docs), "--data", str(data)]
    rng = random.Random(7)
    landed_mid_work = 0
    for _ in range(10):
        # --force: every run re-indexes everything, so every kill interrupts real work.
        process = subprocess.Popen(
            [*command, "--force"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for_pending(data / "registry.sqlite3", process)
        time.sleep(rng.uniform(0.0, 3.0))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        landed_mid_work += _count(data / "registry.sqlite3", "pending") > 0
    # The kills did land in the middle of the work, not only before or after it.
    assert landed_mid_work >= 3
    final = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]

    settings = Settings(data_dir=data, parse_workers=0, watch="off")
    components = Components(settings)
    pipeline = build_pipeline(components)
    try:
        # Orphans a kill can leave (chunks written, registry not yet updated) are removed at
        # the next start, as `enclave serve` does.
        pipeline.remove_orphans()
        assert len(pipeline.registry.list("indexed")) == 16
        assert pipeline.registry.counts()["pending"] == 0
        _assert_consistent(pipeline)
    finally:
        pipeline.close()


def _http_json(url: str, body: dict[str, object] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_live_server_keeps_answering_while_bad_files_are_ingested(tmp_path: Path) -> None:
    data = tmp_path / "data"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "hr-leave-policy.docx").write_bytes((DEMO / "hr-leave-policy.docx").read_bytes())
    assert enclave("ingest", str(docs), "--data", str(data)).returncode == 0
    env = {
        "ENCLAVE_WATCH": "poll",
        "ENCLAVE_POLL_INTERVAL_S": "1",
        "ENCLAVE_SETTLE_S": "0",
        "ENCLAVE_PARSE_TIMEOUT_S": "10",
        "ENCLAVE_QUARANTINE": "move",
    }
    question = {"question": "How many days of paid annual leave do full-time employees get?"}
    with live_server(data, env=env) as base:
        inbox = data / "inbox"
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / "corrupt.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\n" * 3)
        _encrypted_pdf(inbox / "encrypted.pdf")
        _zip_bomb_docx(inbox / "bomb.docx")
        # Parsing this takes longer than parse_timeout_s: the worker is killed and replaced.
        (inbox / "huge.txt").write_text(("word " * 20 + "\n\n") * 200_000)
        write(inbox / "canteen.md", "# Canteen\n\nThe rooftop canteen serves soup on Fridays.\n")
        dropped = {"corrupt.pdf", "encrypted.pdf", "bomb.docx", "huge.txt", "canteen.md"}

        # One client asks without pause while the server ingests; the main thread watches
        # the registry. Some answer must overlap a moment when a dropped file was pending.
        answers: list[tuple[float, float, int, dict[str, Any]]] = []
        stop = threading.Event()

        def ask_continuously() -> None:
            while not stop.is_set():
                began = time.time()
                code, body = _http_json(f"{base}/api/v1/ask", question)
                answers.append((began, time.time(), code, body))

        asker = threading.Thread(target=ask_continuously)
        asker.start()
        busy_at: list[float] = []
        deadline = time.time() + 300
        try:
            while True:
                _, listing = _http_json(f"{base}/api/v1/documents")
                status = {
                    Path(d["path"]).name: d["status"]
                    for d in listing["documents"]
                    if Path(d["path"]).name in dropped
                }
                if "pending" in status.values():
                    busy_at.append(time.time())
                elif len(status) == len(dropped):
                    break
                assert time.time() < deadline, f"ingestion did not finish: {status}"
                time.sleep(0.2)
        finally:
            stop.set()
            asker.join()
        assert busy_at, "no dropped file was ever seen pending"
        for _, _, code, body in answers:
            assert code == 200 and body["answer"] and body["sources"], body
        assert any(began <= t <= ended for began, ended, _, _ in answers for t in busy_at)
        reasons = {Path(d["path"]).name: d["error"] for d in listing["documents"]}
        assert status == {name: "failed" for name in dropped - {"canteen.md"}} | {
            "canteen.md": "indexed"
        }, reasons
        errors = [d["error"] for d in listing["documents"] if d["status"] == "failed"]
        assert len(set(errors)) == 4 and all(errors)  # a distinct reason for each
        code, canteen = _http_json(
            f"{base}/api/v1/ask", {"question": "When does the rooftop canteen serve soup?"}
        )
        assert code == 200 and canteen["sources"][0]["path"].endswith("canteen.md"), canteen
        code, health = _http_json(f"{base}/api/v1/health")
        assert code == 200 and health["status"] == "ok"
