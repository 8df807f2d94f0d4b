"""Identities, keys, auth modes, scopes, limits and per-user conversations."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config.settings import Settings, SettingsError, load_settings
from retriever.components import Components
from retriever.generation import FakeGenerator
from server.access import HIDDEN_ANSWER
from server.app import create_app
from server.auth import check_bind
from service.identity import IdentityError, IdentityStore
from service.permissions import ACCESS_FILE
from tests.unit.serving import add_user, auth_settings, bearer, index_into

HR = "Parental leave lasts 16 weeks at full pay. Requests go to the HR portal."
ENG = "The build server compiles every branch nightly. Failed builds page the on-call engineer."


@pytest.fixture
def app(components: Components, settings: Settings) -> Iterator[Flask]:
    secured = auth_settings(settings, collection_groups={"hr": ["hr-staff"], "eng": ["engineers"]})
    components.settings = secured
    app = create_app(
        secured, Components(secured, embedder=components.embedder, generator=FakeGenerator())
    )
    yield app
    app.extensions["enclave"].shutdown()


@pytest.fixture
def docs(app: Flask) -> dict[str, str]:
    return index_into(app, {"hr/leave.txt": HR, "eng/build.txt": ENG})


# -- the store -------------------------------------------------------------------------------


def test_keys_are_random_shown_once_stored_as_hash_and_revocable(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "identity.sqlite3")
    store.add_user("ann", "ingest")
    key, secret = store.create_key("ann", "ask", expires_at=time.time() + 60)
    _other_key, other = store.create_key("ann", "ask")
    assert secret != other and secret.startswith(f"enk_{key.id}_")
    assert len(secret.rsplit("_", 1)[-1]) >= 43 or len(secret) - len(f"enk_{key.id}_") >= 43
    store.close()
    raw = (tmp_path / "identity.sqlite3").read_bytes()
    assert secret.encode() not in raw and secret[len(f"enk_{key.id}_") :].encode() not in raw
    store = IdentityStore(tmp_path / "identity.sqlite3")
    assert store.authenticate_key(secret) is not None
    assert store.authenticate_key(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert store.authenticate_key(f"enk_{key.id}_") is None
    assert store.authenticate_key("nonsense") is None
    assert "secret" not in str(store.keys()[0].to_dict())
    store.revoke_key(key.id)
    assert store.authenticate_key(secret) is None
    assert store.authenticate_key(other) is not None
    _expired, expired_secret = store.create_key("ann", "ask", expires_at=time.time() - 1)
    assert store.authenticate_key(expired_secret) is None
    with pytest.raises(IdentityError, match="cannot have scope 'admin'"):
        store.create_key("ann", "admin")
    store.close()


def test_passwords_are_scrypt_hashes(tmp_path: Path) -> None:
    store = IdentityStore(tmp_path / "identity.sqlite3")
    store.add_user("ann", password="correct horse")
    assert store.check_password("ann", "correct horse") is not None
    assert store.check_password("ann", "wrong horse!") is None
    assert store.check_password("nobody", "correct horse") is None
    store.set_disabled("ann")
    assert store.check_password("ann", "correct horse") is None
    store.close()
    assert b"correct horse" not in (tmp_path / "identity.sqlite3").read_bytes()
    with pytest.raises(IdentityError):
        IdentityStore(tmp_path / "identity.sqlite3").add_user("../etc")


# -- modes and scopes --------------------------------------------------------------------------


def test_auth_none_only_on_loopback(settings: Settings, client_none: FlaskClient) -> None:
    check_bind(settings.model_copy(update={"host": "127.0.0.1"}))
    check_bind(settings.model_copy(update={"host": "::1"}))
    with pytest.raises(SettingsError, match="only allowed on loopback"):
        check_bind(settings.model_copy(update={"host": "0.0.0.0"}))
    check_bind(settings.model_copy(update={"host": "0.0.0.0", "auth_mode": "api_key"}))
    assert client_none.get("/api/v1/documents").status_code == 200
    remote = client_none.get("/api/v1/documents", environ_base={"REMOTE_ADDR": "10.0.0.5"})
    assert remote.status_code == 403
    assert "Open access" in client_none.get("/").get_data(as_text=True)


@pytest.fixture
def client_none(components: Components) -> Iterator[FlaskClient]:
    app = create_app(components.settings, components)
    yield app.test_client()
    app.extensions["enclave"].shutdown()


def test_keys_and_scopes(app: Flask, client: FlaskClient, docs: dict[str, str]) -> None:
    ask = add_user(app, "ann", "ask", ("hr-staff",))
    ingest = add_user(app, "ian", "ingest", ("hr-staff",))
    admin = add_user(app, "ada", "admin")
    assert client.get("/api/v1/health").status_code == 200  # public
    assert client.get("/api/v1/openapi.json").status_code == 200
    none = client.get("/api/v1/documents")
    assert none.status_code == 401 and none.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/api/v1/documents", headers=bearer("enk_x_y")).status_code == 401
    assert client.get("/api/v1/documents", headers={"Authorization": "Basic x"}).status_code == 401
    assert client.get("/api/v1/documents", headers=ask).status_code == 200
    hr_id = docs["hr/leave.txt"]
    assert client.delete(f"/api/v1/documents/{hr_id}", headers=ask).status_code == 403
    upload = {"file": (io.BytesIO(b"Some text about things."), "x.txt"), "collection": "hr"}
    assert client.post("/api/v1/documents", data=upload, headers=ask).status_code == 403
    assert client.get("/api/v1/ingest/jobs", headers=ingest).status_code == 403
    assert client.get("/api/v1/feedback", headers=ask).status_code == 403
    assert client.get("/api/v1/ingest/jobs", headers=admin).status_code == 200
    assert client.post(f"/api/v1/documents/{hr_id}/reindex", headers=ingest).status_code == 202
    # An ingest key may add to a collection it reads, not to another.
    upload = {"file": (io.BytesIO(b"Some text about things."), "x.txt"), "collection": "eng"}
    assert client.post("/api/v1/documents", data=upload, headers=ingest).status_code == 403
    # Pages: a login redirect without a session.
    page = client.get("/library")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")
    denied = app.extensions["enclave"].audit.tail(action="denied")
    assert denied and denied[-1].actor.startswith("ann")


def test_revoked_key_and_disabled_user_lose_access_at_once(app: Flask, client: FlaskClient) -> None:
    headers = add_user(app, "ann", "ask")
    identity = app.extensions["enclave"].identity
    assert client.get("/api/v1/documents", headers=headers).status_code == 200
    identity.set_disabled("ann")
    assert client.get("/api/v1/documents", headers=headers).status_code == 401
    identity.set_disabled("ann", False)
    key_id = headers["Authorization"].split("_")[1]
    identity.revoke_key(key_id)
    assert client.get("/api/v1/documents", headers=headers).status_code == 401


def test_a_key_has_no_more_than_its_users_role_now(app: Flask, client: FlaskClient) -> None:
    headers = add_user(app, "ada", "admin")
    assert client.get("/api/v1/feedback", headers=headers).status_code == 200
    app.extensions["enclave"].identity.set_role("ada", "ask")
    assert client.get("/api/v1/feedback", headers=headers).status_code == 403


def test_ui_login_with_a_password(app: Flask, client: FlaskClient) -> None:
    identity = app.extensions["enclave"].identity
    identity.add_user("ann", "ask", password="correct horse")
    assert client.get("/login").status_code == 200
    bad = client.post("/login", data={"user": "ann", "password": "nope nope"})
    assert bad.status_code == 401 and "Wrong user name or password" in bad.get_data(as_text=True)
    good = client.post("/login", data={"user": "ann", "password": "correct horse", "next": "//x"})
    assert good.status_code == 302 and good.headers["Location"] == "/"
    cookie = good.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Signed in as" in client.get("/").get_data(as_text=True)
    assert client.get("/api/v1/conversations").status_code == 200
    # A state change from another site's page is refused even with the cookie.
    other = client.post("/api/v1/conversations", json={}, headers={"Origin": "http://evil.test"})
    assert other.status_code == 403
    assert client.post("/api/v1/conversations", json={}).status_code == 201
    assert client.get("/admin").status_code == 403  # role ask
    client.post("/logout")
    assert client.get("/api/v1/conversations").status_code == 401
    actions = [e.action for e in app.extensions["enclave"].audit.tail()]
    assert "login_failed" in actions and "login" in actions


def test_trusted_header_only_from_the_proxy(components: Components, settings: Settings) -> None:
    secured = settings.model_copy(
        update={"auth_mode": "trusted_header", "trusted_proxies": ["10.0.0.1"]}
    )
    app = create_app(
        secured, Components(secured, embedder=components.embedder, generator=FakeGenerator())
    )
    client = app.test_client()
    app.extensions["enclave"].identity.add_user("ann")
    user = {"X-Forwarded-User": "ann"}
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    assert client.get("/api/v1/documents", headers=user, environ_base=proxy).status_code == 200
    assert client.get("/api/v1/documents", headers=user).status_code == 401
    unknown = {"X-Forwarded-User": "mallory"}
    assert client.get("/api/v1/documents", headers=unknown, environ_base=proxy).status_code == 401
    app.extensions["enclave"].shutdown()


# -- permissions -----------------------------------------------------------------------------


def test_collections_filter_retrieval_and_documents(
    app: Flask, client: FlaskClient, docs: dict[str, str]
) -> None:
    hr = add_user(app, "ann", "ask", ("hr-staff",))
    eng = add_user(app, "bob", "ask", ("engineers",))
    body = client.post(
        "/api/v1/ask", json={"question": "How long is parental leave?"}, headers=hr
    ).get_json()
    assert "16 weeks" in body["answer"]
    body = client.post(
        "/api/v1/ask", json={"question": "How long is parental leave?"}, headers=eng
    ).get_json()
    assert "16 weeks" not in str(body) and all(
        s["document_id"] != docs["hr/leave.txt"] for s in body["sources"]
    )
    # Asking for a collection one cannot read finds nothing rather than widening the search.
    body = client.post(
        "/api/v1/ask",
        json={"question": "How long is parental leave?", "collection": "hr"},
        headers=eng,
    ).get_json()
    assert body["sources"] == [] and body["abstained"]
    listed = client.get("/api/v1/documents", headers=eng).get_json()
    assert [d["collection"] for d in listed["documents"]] == ["eng"]
    assert listed["counts"]["indexed"] == 1
    hr_id = docs["hr/leave.txt"]
    for path in (f"/api/v1/documents/{hr_id}", f"/api/v1/documents/{hr_id}/file"):
        assert client.get(path, headers=eng).status_code == 404
        assert client.get(path, headers=hr).status_code == 200


def test_a_changed_mapping_applies_to_the_next_request(
    app: Flask, client: FlaskClient, docs: dict[str, str]
) -> None:
    eng = add_user(app, "bob", "ask", ("engineers",))
    hr_id = docs["hr/leave.txt"]
    assert client.get(f"/api/v1/documents/{hr_id}", headers=eng).status_code == 404
    access = app.extensions["enclave"].settings.inbox_dir / "hr" / ACCESS_FILE
    access.write_text("# who reads hr\nhr-staff, engineers\n")
    assert client.get(f"/api/v1/documents/{hr_id}", headers=eng).status_code == 200
    access.write_text("hr-staff\n")
    assert client.get(f"/api/v1/documents/{hr_id}", headers=eng).status_code == 404
    access.unlink()
    identity = app.extensions["enclave"].identity
    identity.add_group("hr-staff")
    identity.add_member("hr-staff", "bob")
    assert client.get(f"/api/v1/documents/{hr_id}", headers=eng).status_code == 200


def test_conversations_are_private_and_history_follows_the_rule(
    app: Flask, client: FlaskClient, docs: dict[str, str]
) -> None:
    ann = add_user(app, "ann", "ask", ("hr-staff",))
    bob = add_user(app, "bob", "ask", ("engineers",))
    conv = client.post("/api/v1/conversations", json={}, headers=ann).get_json()["id"]
    answer = client.post(
        "/api/v1/ask",
        json={"question": "How long is parental leave?", "conversation_id": conv},
        headers=ann,
    ).get_json()
    assert "16 weeks" in answer["answer"]
    assert client.get(f"/api/v1/conversations/{conv}", headers=bob).status_code == 404
    assert client.get("/api/v1/conversations", headers=bob).get_json()["conversations"] == []
    feedback = {"message_id": answer["message_id"], "rating": "up"}
    assert client.post("/api/v1/feedback", json=feedback, headers=bob).status_code == 404
    asked = {"question": "And for part-time staff?", "conversation_id": conv}
    assert client.post("/api/v1/ask", json=asked, headers=bob).status_code == 404
    # Ann leaves HR: her stored answer no longer shows what it quoted.
    app.extensions["enclave"].identity.remove_member("hr-staff", "ann")
    history = client.get(f"/api/v1/conversations/{conv}", headers=ann).get_json()
    assert "16 weeks" not in str(history)
    assert history["messages"][-1]["content"] == HIDDEN_ANSWER
    # Review 2: rating that answer echoed its text back in the feedback response.
    rated = client.post("/api/v1/feedback", json=feedback, headers=ann)
    assert rated.status_code == 201
    assert "16 weeks" not in rated.get_data(as_text=True)
    assert rated.get_json()["answer"] == HIDDEN_ANSWER


def test_audit_records_who_asked_and_which_documents(
    app: Flask, client: FlaskClient, docs: dict[str, str]
) -> None:
    ann = add_user(app, "ann", "ask", ("hr-staff",))
    client.post("/api/v1/ask", json={"question": "How long is parental leave?"}, headers=ann)
    entry = app.extensions["enclave"].audit.tail(action="ask")[-1]
    assert entry.actor.startswith("ann (key ")
    assert entry.detail["documents"] == [docs["hr/leave.txt"]]
    assert "16 weeks" not in str(entry.to_dict())


# -- limits ----------------------------------------------------------------------------------


def test_rate_limit_per_key(components: Components, settings: Settings) -> None:
    secured = auth_settings(settings, rate_limit_per_minute=2)
    app = create_app(
        secured, Components(secured, embedder=components.embedder, generator=FakeGenerator())
    )
    client = app.test_client()
    ann, bob = add_user(app, "ann"), add_user(app, "bob")
    ask = {"question": "How long is parental leave?"}
    assert [client.post("/api/v1/ask", json=ask, headers=ann).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]
    limited = client.post("/api/v1/ask", json=ask, headers=ann)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert client.post("/api/v1/ask", json=ask, headers=bob).status_code == 200
    app.extensions["enclave"].shutdown()


def test_request_size_and_question_limits(app: Flask, client: FlaskClient) -> None:
    ann = add_user(app, "ann")
    big = {"question": "x" * (300 * 1024)}
    assert client.post("/api/v1/ask", json=big, headers=ann).status_code == 413
    long = {"question": "why " * 600}
    response = client.post("/api/v1/ask", json=long, headers=ann)
    assert response.status_code == 400 and response.get_json()["error"]["code"] == (
        "question_too_long"
    )
    chat = {"messages": [{"role": "user", "content": "leave?"}], "max_tokens": 10**6}
    assert client.post("/v1/chat/completions", json=chat, headers=ann).status_code == 200


def test_uploads_are_stored_under_server_chosen_paths(app: Flask, client: FlaskClient) -> None:
    ada = add_user(app, "ada", "admin")
    data = {"file": (io.BytesIO(b"Some text about the canteen menu."), "../../evil name.txt")}
    body = client.post("/api/v1/documents", data=data, headers=ada).get_json()
    stored = Path(client.get(f"/api/v1/documents/{body['id']}", headers=ada).get_json()["path"])
    uploads = app.extensions["enclave"].settings.uploads_dir.resolve()
    assert stored.parent == uploads and re.fullmatch(r"[0-9a-f]{16}-evil_name\.txt", stored.name)
    shown = client.get(f"/api/v1/documents/{body['id']}", headers=ada).get_json()
    assert shown["name"] == "evil_name.txt"
    mismatch = {"file": (io.BytesIO(b"%PDF-1.4 not really"), "notes.txt")}
    assert client.post("/api/v1/documents", data=mismatch, headers=ada).status_code == 415


def test_settings_map_collections_from_toml_and_env(tmp_path: Path) -> None:
    config = tmp_path / "enclave.toml"
    config.write_text('auth_mode = "api_key"\n[collection_groups]\nhr = ["hr-staff", "admins"]\n')
    s = load_settings(config, environ={})
    assert s.collection_groups == {"hr": ["hr-staff", "admins"]}
    s = load_settings(environ={"ENCLAVE_COLLECTION_GROUPS": "hr=hr-staff,admins;eng=engineers"})
    assert s.collection_groups == {"hr": ["hr-staff", "admins"], "eng": ["engineers"]}
    with pytest.raises(SettingsError, match="collection_groups"):
        load_settings(environ={"ENCLAVE_COLLECTION_GROUPS": "hr"})


def test_cli_hand_off_sends_the_key_from_the_environment(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`enclave ingest` beside a running server uploads through its API: refused without a
    key, accepted with a key in ENCLAVE_API_KEY."""
    import threading

    from werkzeug.serving import make_server

    from cli.handoff import upload_files
    from config.auth import API_KEY_ENV

    header = add_user(app, "loader", role="admin")  # the default collection is unmapped: admins
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    note = tmp_path / "note.txt"
    note.write_text("The canteen opens at eight.")
    try:
        monkeypatch.delenv(API_KEY_ENV, raising=False)
        assert upload_files(url, [note]) == 1
        assert "refused" in capsys.readouterr().out
        monkeypatch.setenv(API_KEY_ENV, header["Authorization"].removeprefix("Bearer "))
        assert upload_files(url, [note], json_summary=True) == 0
        assert '"handed_off": 1' in capsys.readouterr().out
    finally:
        server.shutdown()


def test_a_reader_sees_paths_relative_to_the_inbox_an_admin_the_whole_path(
    app: Flask, client: FlaskClient, docs: dict[str, str]
) -> None:
    """The server's folders are nothing a reader needs: answers (whole and streamed), the
    document list and one document show a reader the path under the inbox."""
    hr = add_user(app, "ann", "ask", ("hr-staff",))
    admin = add_user(app, "root", "admin")
    inbox = str(app.extensions["enclave"].settings.inbox_dir.resolve())
    question = {"question": "How long is parental leave?"}
    body = client.post("/api/v1/ask", json=question, headers=hr).get_json()
    assert [s["path"] for s in body["sources"]] == ["hr/leave.txt"]
    streamed = client.post("/api/v1/ask", json={**question, "stream": True}, headers=hr)
    text = streamed.get_data(as_text=True)
    assert '"path": "hr/leave.txt"' in text and inbox not in text
    listed = client.get("/api/v1/documents", headers=hr).get_json()["documents"]
    assert [d["path"] for d in listed] == ["hr/leave.txt"]
    one = client.get(f"/api/v1/documents/{docs['hr/leave.txt']}", headers=hr).get_json()
    assert one["path"] == "hr/leave.txt"
    body = client.post("/api/v1/ask", json=question, headers=admin).get_json()
    assert any(s["path"] == f"{inbox}/hr/leave.txt" for s in body["sources"])
