"""The web and auth findings of the security review (issue 20, findings 6-13 and 16), each
attacked through the API as the review did: the whole app, real Chroma, the real embedder and
identity store, a fake model only.

Which test covers which finding is in each test's name (`test_f6_...`) and in
docs/security.md."""

from __future__ import annotations

import io
import os
import select
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import waitress
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from cli.serve import waitress_options
from config.settings import Settings
from retriever.components import Components
from retriever.generation import FakeGenerator
from server.app import create_app
from tests.unit.serving import add_user, auth_settings, bearer

EVIL = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
PROXY = {"REMOTE_ADDR": "10.0.0.1"}


def _app(components: Components, settings: Settings) -> Flask:
    return create_app(
        settings, Components(settings, embedder=components.embedder, generator=FakeGenerator())
    )


@pytest.fixture
def none_app(components: Components, settings: Settings) -> Iterator[Flask]:
    app = _app(components, settings)  # the default: auth_mode none
    yield app
    app.extensions["enclave"].shutdown()


@pytest.fixture
def key_app(components: Components, settings: Settings) -> Iterator[Flask]:
    app = _app(components, auth_settings(settings))
    yield app
    app.extensions["enclave"].shutdown()


@pytest.fixture
def proxy_app(components: Components, settings: Settings) -> Iterator[Flask]:
    secured = settings.model_copy(
        update={"auth_mode": "trusted_header", "trusted_proxies": ["10.0.0.1"]}
    )
    app = _app(components, secured)
    app.extensions["enclave"].identity.add_user("ann", "admin")
    yield app
    app.extensions["enclave"].shutdown()


def _file(text: str = "The canteen opens at eight.", name: str = "menu.txt") -> dict[str, Any]:
    return {"file": (io.BytesIO(text.encode()), name)}


def _login(client: FlaskClient, user: str, password: str, **kw: Any) -> TestResponse:
    return client.post("/login", data={"user": user, "password": password}, **kw)


# -- 6: auth_mode none answers only loopback Host names, and no cross-site write ----------------


def test_f6_mode_none_refuses_a_foreign_host_name(none_app: Flask) -> None:
    client = none_app.test_client()
    # DNS rebinding: the attacker's page, its name pointed at 127.0.0.1, reads the API.
    rebound = client.get("/api/v1/documents", base_url="http://attacker.example:8000")
    assert rebound.status_code == 421
    assert rebound.get_json()["error"]["code"] == "wrong_host"
    assert "documents" not in rebound.get_json()
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000", "localhost"):
        assert client.get("/api/v1/documents", base_url=f"http://{host}").status_code == 200
    page = client.get("/", base_url="http://attacker.example")
    assert page.status_code == 421


def test_f6_mode_none_refuses_cross_site_writes(none_app: Flask) -> None:
    client = none_app.test_client()
    origin_only = {"Origin": "https://evil.example"}
    assert client.post("/api/v1/documents", data=_file(), headers=origin_only).status_code == 403
    site_only = {"Sec-Fetch-Site": "cross-site"}
    refused = client.post("/api/v1/documents", data=_file(), headers=site_only)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "cross_origin"
    assert client.post("/api/v1/conversations", json={}, headers=EVIL).status_code == 403
    assert none_app.extensions["enclave"].pipeline.registry.list() == []  # nothing stored
    # The pages themselves (same origin) and clients that are no browser (curl, the CLI).
    same = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/v1/conversations", json={}, headers=same).status_code == 201
    assert client.post("/api/v1/documents", data=_file()).status_code == 202


# -- 7 and 13: trusted_header ---------------------------------------------------------------------


def test_f7_trusted_header_refuses_cross_site_writes(proxy_app: Flask) -> None:
    client = proxy_app.test_client()
    user = {"X-Forwarded-User": "ann"}
    upload = client.post(
        "/api/v1/documents", data=_file(), headers={**user, **EVIL}, environ_base=PROXY
    )
    assert upload.status_code == 403 and upload.get_json()["error"]["code"] == "cross_origin"
    retry = client.post(
        "/api/v1/ingest/retry-failed",
        headers={**user, "Sec-Fetch-Site": "cross-site"},
        environ_base=PROXY,
    )
    assert retry.status_code == 403
    # Reading stays allowed; a same-origin write and a Bearer key's write go through.
    listing = client.get("/api/v1/documents", headers={**user, **EVIL}, environ_base=PROXY)
    assert listing.status_code == 200
    same = {**user, "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert (
        client.post("/api/v1/documents", data=_file(), headers=same, environ_base=PROXY).status_code
        == 202
    )
    _, secret = proxy_app.extensions["enclave"].identity.create_key("ann", "admin")
    keyed = client.post(
        "/api/v1/documents", data=_file("Another text."), headers={**bearer(secret), **EVIL}
    )
    assert keyed.status_code == 202


def test_f13_trusted_header_falls_through_basic_authorization(proxy_app: Flask) -> None:
    client = proxy_app.test_client()
    basic = {"Authorization": "Basic YW5uOnNlY3JldA==", "X-Forwarded-User": "ann"}
    assert client.get("/api/v1/documents", headers=basic, environ_base=PROXY).status_code == 200
    # Not from the proxy, or with no user header: still nobody.
    assert client.get("/api/v1/documents", headers=basic).status_code == 401
    only_basic = {"Authorization": "Basic YW5uOnNlY3JldA=="}
    assert (
        client.get("/api/v1/documents", headers=only_basic, environ_base=PROXY).status_code == 401
    )
    # A wrong Bearer key is still refused, whatever the header says.
    wrong = {"Authorization": "Bearer enk_x_y", "X-Forwarded-User": "ann"}
    assert client.get("/api/v1/documents", headers=wrong, environ_base=PROXY).status_code == 401


# -- 8: /login is throttled by address and by user name -------------------------------------------


def test_f8_login_backs_off_after_failures(key_app: Flask) -> None:
    key_app.extensions["enclave"].identity.add_user("ann", "ask", password="correct horse")
    key_app.extensions["enclave"].identity.add_user("bob", "ask", password="battery staple")
    client = key_app.test_client()
    allowed = key_app.extensions["enclave"].settings.login_failures_allowed
    for _ in range(allowed):
        assert _login(client, "ann", "wrong guess").status_code == 401
    limited = _login(client, "ann", "wrong guess")
    assert limited.status_code == 429
    assert "Too many failed sign-ins" in limited.get_data(as_text=True)
    assert 1 <= int(limited.headers["Retry-After"]) <= 5
    # Even the right password waits: the limit comes before the password is checked.
    assert _login(client, "ann", "correct horse").status_code == 429
    # By user name: another address guessing ann's password waits too ...
    elsewhere = {"REMOTE_ADDR": "10.9.9.9"}
    assert _login(client, "ann", "correct horse", environ_base=elsewhere).status_code == 429
    # ... and by address: this address guessing another user's password waits too.
    assert _login(client, "bob", "battery staple").status_code == 429
    # Someone else, elsewhere, signs in.
    assert _login(client, "bob", "battery staple", environ_base=elsewhere).status_code == 302
    failed = [e for e in key_app.extensions["enclave"].audit.tail() if e.action == "login_failed"]
    assert len(failed) == allowed  # refused tries cost no scrypt and no audit row


def test_f8_behind_a_proxy_one_attacker_does_not_lock_everyone_out(
    components: Components, settings: Settings
) -> None:
    """Review 2: behind the reverse proxy every sign-in comes from the proxy's address, so
    the per-address backoff let one anonymous client lock every user out of the pages. The
    client's address is the one the trusted proxy adds to X-Forwarded-For; from anyone else
    that header is not believed."""
    app = _app(components, auth_settings(settings, trusted_proxies=["10.0.0.1"]))
    app.extensions["enclave"].identity.add_user("ann", "ask", password="correct horse")
    client = app.test_client()
    allowed = app.extensions["enclave"].settings.login_failures_allowed
    attacker = {"X-Forwarded-For": "203.0.113.9"}
    for n in range(allowed + 2):
        _login(client, f"guess{n}", "wrong", headers=attacker, environ_base=PROXY)
    assert _login(client, "guess", "wrong", headers=attacker, environ_base=PROXY).status_code == 429
    # Ann, another client behind the same proxy, still signs in.
    ann = {"X-Forwarded-For": "198.51.100.7"}
    signed_in = _login(client, "ann", "correct horse", headers=ann, environ_base=PROXY)
    assert signed_in.status_code == 302
    # A client that is no proxy cannot pick a fresh address per try.
    direct = {"REMOTE_ADDR": "10.7.7.7"}
    for n in range(allowed):
        spoofed = {"X-Forwarded-For": f"192.0.2.{n}"}
        _login(client, f"other{n}", "wrong", headers=spoofed, environ_base=direct)
    spoofed = {"X-Forwarded-For": "192.0.2.200"}
    assert _login(client, "x", "wrong", headers=spoofed, environ_base=direct).status_code == 429


def test_f8_the_wait_doubles_and_a_success_clears_it() -> None:
    from server.auth import LoginThrottle

    now = [0.0]
    throttle = LoginThrottle(2, clock=lambda: now[0])
    keys = ["addr:1", "user:ann"]
    throttle.failed(keys)
    throttle.failed(keys)
    waits = []
    for _ in range(4):
        waits.append(throttle.retry_after(keys))
        now[0] += waits[-1]
        assert throttle.retry_after(keys) == 0
        throttle.failed(keys)
    assert waits == [5.0, 10.0, 20.0, 40.0]
    throttle.succeeded(keys)
    assert throttle.retry_after(keys) == 0


# -- 9: behind a TLS reverse proxy ----------------------------------------------------------------


def test_f9_public_url_lets_pages_post_and_marks_the_cookie_secure(
    components: Components, settings: Settings
) -> None:
    app = _app(components, auth_settings(settings, public_url="https://rag.example.com"))
    app.extensions["enclave"].identity.add_user("ann", "ask", password="correct horse")
    client = app.test_client()
    # The proxy speaks http to the server; the browser's origin is https://rag.example.com.
    good = _login(client, "ann", "correct horse", headers={"Origin": "https://rag.example.com"})
    assert good.status_code == 302 and "Secure" in good.headers["Set-Cookie"]
    page = {"Origin": "https://rag.example.com", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/v1/conversations", json={}, headers=page).status_code == 201
    other = {"Origin": "https://evil.example"}
    assert client.post("/api/v1/conversations", json={}, headers=other).status_code == 403
    app.extensions["enclave"].shutdown()


def test_f9_forwarded_proto_and_host_only_from_trusted_proxies(
    components: Components, settings: Settings
) -> None:
    app = _app(components, auth_settings(settings, trusted_proxies=["10.0.0.1"]))
    app.extensions["enclave"].identity.add_user("ann", "ask", password="correct horse")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "rag.example.com"}
    page = {**forwarded, "Origin": "https://rag.example.com"}
    client = app.test_client()
    good = _login(client, "ann", "correct horse", headers=page, environ_base=PROXY)
    assert good.status_code == 302 and "Secure" in good.headers["Set-Cookie"]
    ok = client.post("/api/v1/conversations", json={}, headers=page, environ_base=PROXY)
    assert ok.status_code == 201
    # The same headers from anyone else are not believed.
    direct = client.post("/api/v1/conversations", json={}, headers=page)
    assert direct.status_code == 403
    plain = app.test_client()
    cookie = _login(plain, "ann", "correct horse").headers["Set-Cookie"]
    assert "Secure" not in cookie  # http, directly
    app.extensions["enclave"].shutdown()


def test_f9_public_url_must_be_a_url() -> None:
    with pytest.raises(ValueError, match="public_url"):
        Settings(public_url="rag.example.com")
    assert Settings(public_url="https://rag.example.com/").public_url == "https://rag.example.com"


# -- 10: no open redirect after login --------------------------------------------------------------

HOSTILE_NEXT = [
    "/\t//evil.example/phish",
    "/\n/evil.example",
    "//evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "https://evil.example/",
    "/ //evil.example",
    "/\x00//evil.example",
    "javascript:alert(1)",
]


def test_f10_login_never_redirects_to_another_host(key_app: Flask) -> None:
    key_app.extensions["enclave"].identity.add_user("ann", "ask", password="correct horse")
    client = key_app.test_client()
    form = client.get("/login?next=/%09///evil.example/phish").get_data(as_text=True)
    assert "evil.example" not in form
    for target in HOSTILE_NEXT:
        response = client.post(
            "/login", data={"user": "ann", "password": "correct horse", "next": target}
        )
        assert response.status_code == 302, target
        assert response.headers["Location"] == "/", target
    kept = client.post(
        "/login", data={"user": "ann", "password": "correct horse", "next": "/library?q=a"}
    )
    assert kept.headers["Location"] == "/library?q=a"


# -- 11: a session ends with logout, a password change, disabling ---------------------------------


def test_f11_old_session_cookies_die(key_app: Flask) -> None:
    identity = key_app.extensions["enclave"].identity
    identity.add_user("ann", "ask", password="correct horse")
    client = key_app.test_client()

    def signed_in() -> str:
        assert _login(client, "ann", "correct horse").status_code == 302
        cookie = client.get_cookie("enclave_session")
        assert cookie is not None
        assert client.get("/api/v1/conversations").status_code == 200
        return cookie.value

    def replay(value: str) -> int:
        client.set_cookie("enclave_session", value)
        return client.get("/api/v1/conversations").status_code

    stolen = signed_in()
    assert client.post("/logout").status_code == 302
    assert replay(stolen) == 401  # a copy kept before the logout is dead
    stolen = signed_in()
    identity.set_password("ann", "new password!")
    assert replay(stolen) == 401
    identity.set_password("ann", "correct horse")
    stolen = signed_in()
    identity.set_disabled("ann")
    identity.set_disabled("ann", False)
    assert replay(stolen) == 401
    assert replay(signed_in()) == 200  # a new login works


# -- 12: the data directory is the server user's alone ---------------------------------------------


def test_f12_data_directory_is_private(components: Components, settings: Settings) -> None:
    old_umask = os.umask(0o022)  # an ordinary shell's umask
    try:
        data = settings.data_dir
        (data / "uploads").mkdir(parents=True)
        (data / "uploads").chmod(0o755)
        legacy = data / "conversations.sqlite3"
        legacy.write_bytes(b"")
        legacy.chmod(0o644)
        app = _app(components, settings)
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE(legacy.stat().st_mode) == 0o600
        assert stat.S_IMODE((data / "uploads").stat().st_mode) == 0o700
        client = app.test_client()
        uploaded = client.post("/api/v1/documents", data=_file())
        assert uploaded.status_code == 202
        open_to_others = [
            str(p)
            for p in data.rglob("*")
            if not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) & 0o077
        ]
        assert open_to_others == []
        app.extensions["enclave"].shutdown()
    finally:
        os.umask(old_umask)


# -- 16: what the public sees, upload paths, bounded conversations --------------------------------


def test_f16_health_details_need_admin(key_app: Flask) -> None:
    client = key_app.test_client()
    public = client.get("/api/v1/health")
    assert public.status_code == 200 and public.get_json() == {"status": "ok"}
    ask = add_user(key_app, "ann", "ask")
    asked = client.get("/api/v1/health", headers=ask).get_json()
    assert asked["status"] == "ok" and "generation" in asked
    assert not {"chunks", "documents", "model", "error"} & set(asked)
    admin = client.get("/api/v1/health", headers=add_user(key_app, "ada", "admin")).get_json()
    assert {"chunks", "documents", "model", "generation"} <= set(admin)
    key_app.extensions["enclave"].load_error = "could not load /srv/models/secret.gguf"
    failed = client.get("/api/v1/health")
    assert failed.status_code == 503 and failed.get_json() == {"status": "error"}
    root = add_user(key_app, "root", "admin")
    admin_view = client.get("/api/v1/health", headers=root)
    assert "secret.gguf" in admin_view.get_json()["error"]
    # Review 2: the routes that need the models said it to every caller in their 503.
    question = {"question": "When does the canteen open?"}
    chat = {"messages": [{"role": "user", "content": "When does the canteen open?"}]}
    for url, body in (("/api/v1/ask", question), ("/v1/chat/completions", chat)):
        refused = client.post(url, json=body, headers=ask)
        assert refused.status_code == 503, url
        assert "secret.gguf" not in refused.get_data(as_text=True), url
        told = client.post(url, json=body, headers=root)
        assert told.status_code == 503 and "secret.gguf" in told.get_data(as_text=True), url


def test_f16_upload_response_has_no_server_path(key_app: Flask) -> None:
    client = key_app.test_client()
    admin = add_user(key_app, "ada", "admin")
    response = client.post("/api/v1/documents", data=_file(), headers=admin)
    assert response.status_code == 202
    data_dir = str(key_app.extensions["enclave"].settings.data_dir.resolve())
    assert "path" not in response.get_json() and data_dir not in response.get_data(as_text=True)
    assert response.get_json()["name"] == "menu.txt"


def test_f16_conversations_per_user_are_capped(components: Components, settings: Settings) -> None:
    app = _app(components, settings.model_copy(update={"max_conversations_per_user": 3}))
    client = app.test_client()
    made = []
    for i in range(5):
        made.append(client.post("/api/v1/conversations", json={"title": f"c{i}"}).get_json()["id"])
        time.sleep(0.01)
    listed = [c["id"] for c in client.get("/api/v1/conversations").get_json()["conversations"]]
    assert sorted(listed) == sorted(made[2:])
    assert client.get(f"/api/v1/conversations/{made[0]}").status_code == 404
    app.extensions["enclave"].shutdown()


def test_f12_secure_data_dir_leaves_the_inbox_alone(tmp_path: Path) -> None:
    from server.app import secure_data_dir

    old_umask = os.umask(0o022)
    try:
        inbox = tmp_path / "data" / "inbox"
        inbox.mkdir(parents=True)
        dropped = inbox / "notes.txt"
        dropped.write_text("x")
        dropped.chmod(0o644)
        secure_data_dir(Settings(data_dir=tmp_path / "data"))
        assert stat.S_IMODE(dropped.stat().st_mode) == 0o644  # the operator's file
        assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    finally:
        os.umask(old_umask)


# -- 5: escalation has its own bounded slots, the question's deadline, and stops with its client --

GIVES_UP = "I could not find that in the documents."


@pytest.fixture
def escalating(components: Components, settings: Settings) -> Iterator[tuple[Flask, Any]]:
    """An app (mode none) whose local model gives up and escalates to a stub larger model
    that answers only when told to (`stub.go`)."""
    from tests.openai_stub import stub_model_server
    from tests.unit.serving import upload

    go = threading.Event()
    with stub_model_server() as stub:

        def reply(messages: Any) -> str:
            assert go.wait(30), "the test never let the larger model answer"
            return "Parental leave lasts 16 weeks at full pay [1]."

        stub.reply = reply
        stub.go = go  # type: ignore[attr-defined]
        tuned = settings.model_copy(
            update={
                "generation_slots": 1,
                "generation_queue": 0,
                "escalation_policy": "always",
                "escalation_endpoint": stub.url,
                "escalation_slots": 1,
                "escalation_queue": 1,
            }
        )
        app = _app(components, tuned)
        upload(app.test_client())
        yield app, stub
        go.set()
        app.extensions["enclave"].shutdown()


def _local_gives_up(app: Flask, times: int) -> None:
    fake = app.extensions["enclave"].components.generator
    assert isinstance(fake, FakeGenerator)
    fake.enqueue(*([GIVES_UP] * times))


def _wait_for(condition: Any, what: str) -> None:
    for _ in range(300):
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_f5_escalation_is_bounded_by_its_own_slots_and_the_deadline(
    escalating: tuple[Flask, Any],
) -> None:
    app, stub = escalating
    question = {"question": "How long is parental leave?"}
    escalation = app.extensions["enclave"].components.escalation
    _local_gives_up(app, 3)
    results: dict[str, TestResponse] = {}

    def ask(name: str, **extra: Any) -> threading.Thread:
        def run() -> None:
            results[name] = app.test_client().post("/api/v1/ask", json={**question, **extra})

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    first = ask("first")
    _wait_for(lambda: len(stub.requests) == 1, "the first escalation")
    second = ask("second", timeout_s=1.5)  # queued behind the first, with a short deadline
    _wait_for(lambda: escalation.slots.stats()["waiting"] == 1, "the queued escalation")
    client = app.test_client()
    busy = client.post("/api/v1/ask", json=question)  # slot and queue full
    assert busy.status_code == 429, busy.get_data(as_text=True)
    assert busy.get_json()["error"]["code"] == "busy" and int(busy.headers["Retry-After"]) >= 1
    started = time.perf_counter()
    health = client.get("/api/v1/health")
    assert health.status_code == 200 and time.perf_counter() - started < 2
    assert health.get_json()["generation"]["active"] == 0  # the local model is free
    second.join(10)
    assert results["second"].status_code == 504  # its deadline passed in the queue
    stub.go.set()
    first.join(10)
    answered = results["first"].get_json()
    # The local model found nothing, so the answer it gave failed the check: "unsupported".
    assert results["first"].status_code == 200 and answered["escalated"]["reason"] == "unsupported"
    assert len(stub.requests) == 1  # the refused and timed-out questions never went out
    assert escalation.slots.stats() == {"slots": 1, "queue": 1, "active": 0, "waiting": 0}


def test_r4_only_an_admin_learns_the_escalation_models_address(
    components: Components, settings: Settings
) -> None:
    """The address of the larger model maps the network behind the server: a reader is told
    which model answered and why, an administrator also where it runs."""
    from tests.openai_stub import stub_model_server

    with stub_model_server() as stub:
        stub.reply = lambda messages: "Parental leave lasts 16 weeks at full pay [1]."
        tuned = auth_settings(
            settings,
            escalation_policy="always",
            escalation_endpoint=stub.url,
            collection_groups={"default": ["staff"]},
        )
        app = _app(components, tuned)
        try:
            admin = add_user(app, "root", "admin")
            reader = add_user(app, "ann", "ask", ("staff",))
            client = app.test_client()
            data = {"file": (io.BytesIO(b"Parental leave lasts 16 weeks at full pay."), "l.txt")}
            added = client.post("/api/v1/documents", data=data, headers=admin)
            assert added.status_code == 202, added.get_data(as_text=True)
            document = f"/api/v1/documents/{added.get_json()['id']}"
            _wait_for(
                lambda: client.get(document, headers=admin).get_json()["status"] == "indexed",
                "the document to be indexed",
            )
            _local_gives_up(app, 3)
            question = {"question": "How long is parental leave?"}
            seen = client.post("/api/v1/ask", json=question, headers=reader)
            assert seen.status_code == 200, seen.get_data(as_text=True)
            assert seen.get_json()["escalated"]["reason"] == "unsupported"
            assert stub.url not in seen.get_data(as_text=True)
            streamed = client.post("/api/v1/ask", json={**question, "stream": True}, headers=reader)
            assert '"escalated"' in streamed.get_data(as_text=True)
            assert stub.url not in streamed.get_data(as_text=True)
            by_admin = client.post("/api/v1/ask", json=question, headers=admin).get_json()
            assert by_admin["escalated"]["endpoint"] == stub.url
        finally:
            app.extensions["enclave"].shutdown()


def test_f5_a_client_that_goes_away_frees_the_escalation(escalating: tuple[Flask, Any]) -> None:
    app, stub = escalating
    escalation = app.extensions["enclave"].components.escalation
    _local_gives_up(app, 1)
    question = {"question": "How long is parental leave?", "stream": True}
    response = app.test_client().post("/api/v1/ask", json=question, buffered=False)
    assert response.status_code == 200
    chunks = iter(response.response)
    seen = ""
    while "keep-alive" not in seen:  # the larger model has not written a word yet
        seen += next(chunks).decode()
    assert len(stub.requests) == 1 and escalation.slots.stats()["active"] == 1
    started = time.perf_counter()
    response.close()  # the client went away: its thread is free at once ...
    assert time.perf_counter() - started < 1
    assert "event: done" not in seen
    # ... and the call to the larger model ends at its next word, which frees the slot.
    stub.go.set()
    _wait_for(lambda: escalation.slots.stats()["active"] == 0, "the escalation slot")


# -- the third review ------------------------------------------------------------------------


def _http_head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", *headers, "", ""]
    return "\r\n".join(lines).encode()


def test_r3_waitress_refuses_a_body_over_the_limit_before_reading_it(
    components: Components, settings: Settings
) -> None:
    # Waitress reads a whole body (into a temporary file) before the app, and so auth, runs:
    # at its default limit (1 GB) anyone reaching the port could fill the disk, unsigned in.
    limited = auth_settings(settings, max_upload_mb=1, max_request_kb=64)
    app = _app(components, limited)
    # poll, not select: the test process may hold descriptors past select's 1024 by now.
    options = {**waitress_options(limited, 4), "port": 0, "asyncore_use_poll": True}
    server = waitress.create_server(app, **options)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    address = ("127.0.0.1", server.effective_port)  # type: ignore[union-attr]
    try:
        with socket.create_connection(address, timeout=5) as conn:
            conn.sendall(_http_head("/api/v1/documents", "Content-Length: 1073741000"))
            assert conn.recv(64).startswith(b"HTTP/1.1 413")  # from the headers alone
        with socket.create_connection(address, timeout=5) as conn:
            conn.sendall(_http_head("/api/v1/documents", "Transfer-Encoding: chunked"))
            piece, sent = b"x" * 65536, 0
            answered = select.poll()
            answered.register(conn, select.POLLIN)
            while sent < 8 * 1024 * 1024 and not answered.poll(50):
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            assert conn.recv(64).startswith(b"HTTP/1.1 413")
            assert sent < 2 * 1024 * 1024  # refused once past the limit, not at the end
        with socket.create_connection(address, timeout=5) as conn:  # the app's own answer
            conn.sendall(_http_head("/api/v1/ask", "Content-Length: 2") + b"{}")
            assert conn.recv(64).startswith(b"HTTP/1.1 401")
    finally:
        server.close()
        app.extensions["enclave"].shutdown()


def test_r3_the_model_servers_address_and_reply_are_for_admins(
    key_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failing model server's error named its address and quoted 300 characters of its
    # reply (and a crashed model process its files) to every asker, in the 502/503 of ask
    # and chat completions and in their streams' error events; health keeps such details
    # for admins (F16).
    from retriever.generation import GenerationError, ModelUnavailable

    client = key_app.test_client()
    admin = add_user(key_app, "root", "admin")
    upload = client.post("/api/v1/documents", data=_file(), headers=admin)
    assert upload.status_code == 202
    _wait_for(
        lambda: key_app.extensions["enclave"].pipeline.registry.counts().get("indexed") == 1,
        "the document",
    )
    access = key_app.extensions["enclave"].settings.inbox_dir / "default" / ".enclave-access"
    access.parent.mkdir(parents=True, exist_ok=True)
    access.write_text("staff\n")
    ask = add_user(key_app, "ann", "ask", ("staff",))  # reads the document
    secret = "http://10.9.8.7:8081/v1 answered 500: upstream token=s3cr3t"
    question = "When does the canteen open?"
    calls = (
        ("/api/v1/ask", {"question": question}),
        ("/api/v1/ask", {"question": question, "stream": True}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": question}]}),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": question}], "stream": True},
        ),
    )
    model = key_app.extensions["enclave"].components.generator
    for error in (GenerationError(secret), ModelUnavailable(f"the model process {secret}")):

        def failing(*_: object, error: Exception = error) -> Iterator[str]:
            raise error
            yield ""

        monkeypatch.setattr(model, "stream", failing)
        for url, body in calls:
            body = {**body, "answer_mode": "generative"} if "question" in body else body
            told = client.post(url, json=body, headers=ask).get_data(as_text=True)
            assert "error" in told and "10.9.8.7" not in told and "s3cr3t" not in told, url
            assert "see the server log" in told or "again" in told, told
            shown = client.post(url, json=body, headers=admin).get_data(as_text=True)
            assert "10.9.8.7" in shown, (url, shown)
