"""Issue 20, ingestion and durability: links across collections (finding 1), deletes that
stick (2), uploads of the same bytes to two collections (3), the CLI's hand-off to a running
server (4), half-done moves (15), content guards in the parser process (16, last item),
re-ingesting a folder propagates deletions (17) and jobs of a killed process (18). Each goes
through the API, the inbox or the CLI, with the real embedder, Chroma and SQLite; only the
model is a fake. Finding 19 (stopping `enclave serve`): tests/integration/test_serve_stop.py."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config.settings import Settings
from ingest.inbox import InboxSync
from ingest.jobs import JobLog
from retriever.components import Components
from retriever.generation import FakeGenerator
from server.app import create_app
from tests.unit.serving import add_user, auth_settings, index_into

SALARY = "Salaries: the head of HR earns 182,000 euros a year, paid in twelve instalments."
ENG = "The build server compiles every branch nightly. Failed builds page the on-call engineer."
PLAN = "Reorganisation plan: the Lisbon office closes in March and its staff move to Porto."


@pytest.fixture
def app(components: Components, settings: Settings) -> Iterator[Flask]:
    secured = auth_settings(settings, collection_groups={"hr": ["hr-staff"], "eng": ["engineers"]})
    app = create_app(
        secured, Components(secured, embedder=components.embedder, generator=FakeGenerator())
    )
    yield app
    app.extensions["enclave"].shutdown()


def _scan(app: Flask) -> None:
    InboxSync(app.extensions["enclave"].pipeline, settle_s=0).scan()


def _ask(client: FlaskClient, headers: dict[str, str], question: str, mode: str) -> Any:
    response = client.post(
        "/api/v1/ask", json={"question": question, "mode": mode}, headers=headers
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def _settled(client: FlaskClient, doc_id: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(300):
        body = client.get(f"/api/v1/documents/{doc_id}", headers=headers).get_json()
        if body["status"] != "pending":
            return dict(body)
        time.sleep(0.05)
    raise AssertionError("still pending")


# -- finding 1: a link may not cross collections ---------------------------------------------


def test_finding_1_a_link_in_eng_to_an_hr_file_is_refused(app: Flask, client: FlaskClient) -> None:
    index_into(app, {"hr/salaries.txt": SALARY, "eng/build.txt": ENG})
    inbox = app.extensions["enclave"].settings.inbox_dir
    (inbox / "eng" / "inner.txt").symlink_to(Path("../hr/salaries.txt"))
    (inbox / "eng" / "alias.txt").symlink_to(Path("build.txt"))  # within eng: fine
    (inbox / "eng" / "sub").mkdir()
    (inbox / "eng" / "sub" / "hr").symlink_to(Path("../../hr"))  # a linked folder on the way
    (inbox / "eng" / "sub" / "hr-copy.txt").symlink_to(Path("../../hr/salaries.txt"))
    _scan(app)

    bob = add_user(app, "bob", "ask", ("engineers",))
    for mode in ("hybrid", "bm25", "dense"):
        body = _ask(client, bob, "How much does the head of HR earn?", mode)
        assert "182,000" not in str(body), mode
    listed = client.get("/api/v1/documents", headers=bob).get_json()["documents"]
    by_name = {d["name"]: d for d in listed}
    assert by_name["inner.txt"]["collection"] == "eng"
    assert by_name["inner.txt"]["status"] == "failed"
    assert "links may not cross collections" in by_name["inner.txt"]["error"]
    assert by_name["hr-copy.txt"]["status"] == "failed"
    assert by_name["alias.txt"]["status"] == "indexed"
    # The link's target is not named to a reader of eng.
    assert "salaries" not in by_name["inner.txt"]["error"]
    # HR still gets its own passage.
    ann = add_user(app, "ann", "ask", ("hr-staff",))
    assert "182,000" in str(_ask(client, ann, "How much does the head of HR earn?", "bm25"))


def test_finding_1_links_can_be_refused_altogether(
    components: Components, settings: Settings
) -> None:
    strict = settings.model_copy(update={"inbox_symlinks": "refuse"})
    app = create_app(
        strict, Components(strict, embedder=components.embedder, generator=FakeGenerator())
    )
    try:
        index_into(app, {"eng/build.txt": ENG})
        (strict.inbox_dir / "eng" / "alias.txt").symlink_to(Path("build.txt"))
        _scan(app)
        documents = app.test_client().get("/api/v1/documents").get_json()["documents"]
        alias = next(d for d in documents if d["name"] == "alias.txt")
        assert alias["status"] == "failed" and "inbox_symlinks" in alias["error"]
    finally:
        app.extensions["enclave"].shutdown()


# -- finding 2: a delete through the API sticks -----------------------------------------------


def test_finding_2_a_deleted_inbox_document_is_not_indexed_again(
    app: Flask, client: FlaskClient
) -> None:
    ids = index_into(app, {"eng/build.txt": ENG, "hr/salaries.txt": SALARY})
    doc_id = ids["eng/build.txt"]
    settings = app.extensions["enclave"].settings
    outsider = add_user(app, "ann", "ingest", ("hr-staff",))
    assert client.delete(f"/api/v1/documents/{doc_id}", headers=outsider).status_code == 404
    bob = add_user(app, "bob", "ingest", ("engineers",))
    response = client.delete(f"/api/v1/documents/{doc_id}", headers=bob)
    assert response.status_code == 200
    assert response.get_json() == {"id": doc_id, "status": "deleted", "file": "trash"}
    assert not (settings.inbox_dir / "eng" / "build.txt").exists()
    assert (settings.trash_dir / "eng" / "build.txt").read_text() == ENG

    _scan(app)
    _scan(app)
    assert client.get(f"/api/v1/documents/{doc_id}", headers=bob).status_code == 404
    record = app.extensions["enclave"].pipeline.registry.get(doc_id)
    assert record is not None and record.status == "deleted"
    assert "nightly" not in str(_ask(client, bob, "When does the build server compile?", "bm25"))

    # Moving the file back into the inbox restores it.
    (settings.trash_dir / "eng" / "build.txt").rename(settings.inbox_dir / "eng" / "build.txt")
    _scan(app)
    assert client.get(f"/api/v1/documents/{doc_id}", headers=bob).get_json()["status"] == (
        "indexed"
    )


# -- finding 3: the same bytes uploaded to two collections ------------------------------------


def test_finding_3_identical_uploads_to_two_collections_are_two_documents(
    app: Flask, client: FlaskClient
) -> None:
    carol = add_user(app, "carol", "ingest", ("hr-staff",))
    bob = add_user(app, "bob", "ingest", ("engineers",))
    minutes = b"Minutes: the works council approved the new shift plan on Tuesday."

    def upload(headers: dict[str, str], collection: str) -> str:
        response = client.post(
            "/api/v1/documents",
            data={"file": (io.BytesIO(minutes), "minutes.txt"), "collection": collection},
            headers=headers,
        )
        assert response.status_code == 202, response.get_data(as_text=True)
        return str(response.get_json()["id"])

    hr_id = upload(carol, "hr")
    assert _settled(client, hr_id, carol)["status"] == "indexed"
    eng_id = upload(bob, "eng")
    assert eng_id != hr_id
    assert _settled(client, eng_id, bob)["collection"] == "eng"
    hr_doc = client.get(f"/api/v1/documents/{hr_id}", headers=carol).get_json()
    assert hr_doc["collection"] == "hr" and hr_doc["status"] == "indexed"
    assert client.get(f"/api/v1/documents/{hr_id}", headers=bob).status_code == 404
    assert client.delete(f"/api/v1/documents/{hr_id}", headers=bob).status_code == 404
    # Bob deleting his own copy leaves carol's document and file alone.
    assert client.delete(f"/api/v1/documents/{eng_id}", headers=bob).get_json()["file"] == (
        "removed"
    )
    assert client.get(f"/api/v1/documents/{hr_id}/file", headers=carol).data == minutes
    answer = _ask(client, carol, "What did the works council approve?", "bm25")
    assert "works council" in str(answer)


# -- finding 15: a move that fails half-way ---------------------------------------------------


def test_finding_15_a_half_done_move_leaks_nothing_and_is_retried(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = index_into(app, {"eng/plan.txt": PLAN, "eng/build.txt": ENG})
    st = app.extensions["enclave"]
    inbox = st.settings.inbox_dir
    (inbox / "hr").mkdir()
    (inbox / "eng" / "plan.txt").rename(inbox / "hr" / "plan.txt")  # now an HR matter
    keyword = st.pipeline.keyword

    def unreachable(document_id: str, collection: str) -> None:
        raise OSError("keyword index unreachable")

    monkeypatch.setattr(keyword, "set_collection", unreachable)
    with pytest.raises(OSError):
        _scan(app)
    bob = add_user(app, "bob", "ask", ("engineers",))
    question = "Which office closes in March?"
    for mode in ("bm25", "hybrid"):
        assert "Lisbon" not in str(_ask(client, bob, question, mode)), mode

    monkeypatch.undo()
    _scan(app)  # the move is tried again, and completes
    record = st.pipeline.registry.get(ids["eng/plan.txt"])
    assert record is not None and record.collection == "hr" and record.status == "indexed"
    assert keyword.search("Lisbon office", 5, ["hr"])
    assert not keyword.search("Lisbon office", 5, ["eng"])
    ann = add_user(app, "ann", "ask", ("hr-staff",))
    assert "Lisbon" in str(_ask(client, ann, question, "bm25"))
    jobs = st.pipeline.jobs.list()
    assert jobs[-1]["status"] == "failed" and jobs[0]["status"] == "finished"


# -- finding 18: jobs of a killed process ------------------------------------------------------


def test_finding_18_jobs_of_a_killed_process_are_closed_at_restart(
    components: Components, settings: Settings
) -> None:
    settings.data_dir.mkdir(parents=True)
    target = str(settings.database_for(settings.registry_path))
    script = (
        "import os, sys\nfrom ingest.jobs import JobLog\n"
        "print(JobLog(sys.argv[1]).start('cli', 10), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, target], capture_output=True, text=True, timeout=120
    )
    assert killed.returncode == -9, killed.stderr
    killed_job = killed.stdout.strip()
    here = JobLog(target)  # a job of a process that is still alive (this one)
    alive_job = here.start("cli", 5)

    app = create_app(settings, components)  # a server start
    try:
        jobs = app.test_client().get("/api/v1/ingest/jobs").get_json()["jobs"]
        status = {job["id"]: job["status"] for job in jobs}
        assert status[killed_job] == "interrupted"
        assert status[alive_job] == "running"
    finally:
        app.extensions["enclave"].shutdown()
        here.close()


# -- finding 4: `enclave ingest` beside a running server --------------------------------------


def test_finding_4_hand_off_leaves_inbox_files_to_the_server(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`enclave ingest` while a server holds the data dir: a file of the inbox's hr folder is
    not uploaded into the default collection (the server indexes it into hr itself); a file
    from elsewhere goes to the collection its path implies, the default one."""
    import threading

    from werkzeug.serving import make_server

    from cli.main import main
    from config.auth import API_KEY_ENV
    from ingest.lock import DataDirLock

    settings = app.extensions["enclave"].settings
    header = add_user(app, "loader", role="admin")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    lock = DataDirLock(settings.data_dir, f"enclave serve at {url}", server_url=url)
    lock.acquire()
    pay = settings.inbox_dir / "hr" / "pay.txt"
    pay.parent.mkdir(parents=True)
    pay.write_text(SALARY)
    note = tmp_path / "elsewhere" / "note.txt"
    note.parent.mkdir()
    note.write_text("The canteen opens at eight and closes at three.")
    monkeypatch.setenv(API_KEY_ENV, header["Authorization"].removeprefix("Bearer "))
    try:
        code = main(["ingest", "--data", str(settings.data_dir), str(pay), str(note), "--json"])
    finally:
        server.shutdown()
        lock.release()
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 0, out
    assert summary["skipped"] == [str(pay)] and summary["handed_off"] == 1
    client = app.test_client()
    (handed,) = summary["documents"]
    assert _settled(client, handed["id"], header)["collection"] == "default"
    registry = app.extensions["enclave"].pipeline.registry
    assert [r.id for r in registry.list()] == [handed["id"]]  # no copy of pay.txt


# -- finding 17: ingesting a folder again ------------------------------------------------------


def test_finding_17_ingesting_a_folder_again_removes_its_deleted_files(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    embedder: Any,
) -> None:
    from cli.main import main
    from config.settings import load_settings

    for name, value in {"PARSE_WORKERS": "0", "EMBED_BACKEND": "torch", "WATCH": "off"}.items():
        monkeypatch.setenv(f"ENCLAVE_{name}", value)
    folder, data = tmp_path / "notes", tmp_path / "data"
    folder.mkdir()
    for name, text in {"a.txt": ENG, "b.txt": PLAN, "c.txt": SALARY}.items():
        (folder / name).write_text(text)

    def ingest() -> dict[str, Any]:
        code = main(["ingest", "--data", str(data), str(folder), "--json"])
        out = capsys.readouterr().out
        assert code == 0, out
        return dict(json.loads(out.strip().splitlines()[-1]))

    assert ingest()["indexed"] == 3
    (folder / "b.txt").unlink()
    summary = ingest()
    assert summary["deleted"] == 1 and summary["unchanged"] == 2

    settings = load_settings(None, data_dir=data)
    components = Components(settings, embedder=embedder, generator=FakeGenerator())
    from ingest.registry import Registry

    registry = Registry(settings.database_for(settings.registry_path))
    try:
        status = {Path(r.path).name: r.status for r in registry.list()}
        assert status == {"a.txt": "indexed", "b.txt": "deleted", "c.txt": "indexed"}
        indexed = {r.id for r in registry.list("indexed")}
        assert components.store.all_document_ids() == indexed
        assert components.keyword.all_document_ids() == indexed
    finally:
        registry.close()


# -- finding 16 (last item): the content guards run in the parser processes ---------------------


def test_finding_16_zip_and_pdf_guards_run_in_the_parser_process(
    components: Components, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the inbox with a real parser process: a zip bomb and an over-long PDF fail
    with the guards' reasons, while the guards in this (the server's) process are booby-trapped:
    they are never called here."""
    import zipfile

    import ingest.guards
    from tests.conftest import DEMO

    def not_here(*args: object) -> None:
        raise AssertionError("a content guard ran in the server process")

    monkeypatch.setattr(ingest.guards, "check_zip", not_here)
    monkeypatch.setattr(ingest.guards, "check_pdf", not_here)
    pooled = settings.model_copy(update={"parse_workers": 1, "max_pages": 1})
    app = create_app(
        pooled, Components(pooled, embedder=components.embedder, generator=FakeGenerator())
    )
    try:
        folder = pooled.inbox_dir / "eng"
        folder.mkdir(parents=True)
        with zipfile.ZipFile(folder / "bomb.docx", "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("word/document.xml", b"\0" * (20 * 1024 * 1024))
        (folder / "long.pdf").write_bytes((DEMO / "it-security-policy.pdf").read_bytes())
        (folder / "note.txt").write_text(ENG)
        _scan(app)
        documents = app.test_client().get("/api/v1/documents").get_json()["documents"]
        by_name = {d["name"]: d for d in documents}
        assert by_name["note.txt"]["status"] == "indexed"
        assert by_name["bomb.docx"]["status"] == "failed"
        assert "zip bomb" in by_name["bomb.docx"]["error"]
        assert by_name["long.pdf"]["status"] == "failed"
        assert "(max_pages)" in by_name["long.pdf"]["error"]
    finally:
        app.extensions["enclave"].shutdown()


def test_finding_1_a_refused_link_is_not_retried_at_every_scan(
    app: Flask, client: FlaskClient
) -> None:
    index_into(app, {"hr/salaries.txt": SALARY, "eng/build.txt": ENG})
    st = app.extensions["enclave"]
    (st.settings.inbox_dir / "eng" / "inner.txt").symlink_to(Path("../hr/salaries.txt"))
    (st.settings.inbox_dir / "eng" / "dangling.txt").symlink_to(Path("nowhere.txt"))
    _scan(app)
    first = st.pipeline.jobs.list()
    _scan(app)
    assert st.pipeline.jobs.list() == first  # nothing to do: no new job


def test_finding_1_a_folder_swapped_for_a_link_neither_serves_nor_trashes_the_other_file(
    app: Flask, client: FlaskClient
) -> None:
    """Review 2: an eng writer indexes `eng/sub/salaries.txt`, then swaps `eng/sub` for a link
    to HR's folder. Until a scan notices, the eng document's path leads to HR's file: `/file`
    must not hand it out, nor a delete move it out of HR's folder."""
    ids = index_into(
        app,
        {"hr/salaries.txt": SALARY, "eng/build.txt": ENG, "eng/sub/salaries.txt": "decoy"},
    )
    inbox = app.extensions["enclave"].settings.inbox_dir
    (inbox / "eng" / "sub").rename(inbox / "eng" / "old")
    (inbox / "eng" / "sub").symlink_to(Path("../hr"))  # a linked folder on the way
    swapped = ids["eng/sub/salaries.txt"]
    bob = add_user(app, "bob", "ingest", ("engineers",))
    response = client.get(f"/api/v1/documents/{swapped}/file", headers=bob)
    assert response.status_code == 410
    assert "182,000" not in response.get_data(as_text=True)
    # Within its own collection a file is served.
    own = client.get(f"/api/v1/documents/{ids['eng/build.txt']}/file", headers=bob)
    assert own.status_code == 200 and "nightly" in own.get_data(as_text=True)
    deleted = client.delete(f"/api/v1/documents/{swapped}", headers=bob)
    assert deleted.status_code == 200 and deleted.get_json()["file"] == "kept"
    assert (inbox / "hr" / "salaries.txt").read_text() == SALARY  # still HR's, in HR's folder
    assert not (app.extensions["enclave"].settings.trash_dir / "eng" / "salaries.txt").exists()


def _swap(link: Path, target: Path, keep: Path) -> None:
    """`link` (a file or folder) moved to `keep`, a link to `target` in its place."""
    link.rename(keep)
    link.symlink_to(target)


def _unswap(link: Path, keep: Path) -> None:
    link.unlink()
    keep.rename(link)


def test_finding_1_a_folder_swapped_around_the_check_does_not_serve_the_other_file(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 2, the race left in `/file`: an eng writer flips `eng/sub` between itself and a
    link to HR's folder. The check saw the real folder, the open then went through the link:
    HR's file was served. Deterministic here: the folder is the link except while the check
    looks (whichever comes first, the check or the open)."""
    ids = index_into(
        app,
        {"hr/salaries.txt": SALARY, "eng/build.txt": ENG, "eng/sub/salaries.txt": "decoy"},
    )
    st = app.extensions["enclave"]
    sub, keep = st.settings.inbox_dir / "eng" / "sub", st.settings.inbox_dir / "eng" / "old"
    check = st.pipeline.check_link
    looked: list[Path] = []

    def flipping_check(path: Path) -> Path:
        _unswap(sub, keep)  # the real folder while the check looks
        try:
            allowed: Path = check(path)
            looked.append(path)
            return allowed
        finally:
            _swap(sub, Path("../hr"), keep)  # a link to HR's folder again

    _swap(sub, Path("../hr"), keep)
    monkeypatch.setattr(st.pipeline, "check_link", flipping_check)
    bob = add_user(app, "bob", "ingest", ("engineers",))
    response = client.get(f"/api/v1/documents/{ids['eng/sub/salaries.txt']}/file", headers=bob)
    assert looked, "the check ran and allowed the path"
    assert response.status_code == 410, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "file_gone"
    assert "182,000" not in response.get_data(as_text=True)
    # Without the race the same file is served, and another eng file all along.
    monkeypatch.undo()
    _unswap(sub, keep)
    served = client.get(f"/api/v1/documents/{ids['eng/sub/salaries.txt']}/file", headers=bob)
    assert served.status_code == 200 and served.get_data(as_text=True) == "decoy"


def test_finding_1_a_file_swapped_for_a_link_after_the_check_is_not_served(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 2, the same race on the file itself: `eng/salaries.txt` is a plain file when
    checked and a link to HR's file right after. The file opened is the one checked, never
    one reached by a link made after the check."""
    ids = index_into(app, {"hr/salaries.txt": SALARY, "eng/salaries.txt": "decoy"})
    st = app.extensions["enclave"]
    eng = st.settings.inbox_dir / "eng"
    check = st.pipeline.check_link

    def check_then_swap(path: Path) -> Path:
        allowed: Path = check(path)
        _swap(eng / "salaries.txt", Path("../hr/salaries.txt"), eng / "kept.txt")
        return allowed

    monkeypatch.setattr(st.pipeline, "check_link", check_then_swap)
    bob = add_user(app, "bob", "ingest", ("engineers",))
    response = client.get(f"/api/v1/documents/{ids['eng/salaries.txt']}/file", headers=bob)
    assert (eng / "salaries.txt").is_symlink(), "the swap happened"
    assert response.status_code == 410, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "file_gone"
    assert "182,000" not in response.get_data(as_text=True)
