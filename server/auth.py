"""Authentication (who is calling), scopes (what the route needs), and the request limits
that depend on the caller. Runs before every request (`install_auth`).

Auth modes (setting `auth_mode`):
- `none`: no login; every caller is `anonymous` with every right. Allowed only while the server
  is bound to loopback (`check_bind`, called before serving) and only for loopback clients;
  the pages show a banner saying so. The `make run` default.
- `api_key`: `Authorization: Bearer enk_...` (keys from `enclave keys create`), and for the
  pages a login form with the user's local password (a signed session cookie, SameSite=Strict,
  HttpOnly; unsafe methods from another origin are refused).
- `trusted_header`: a reverse proxy that has authenticated the user names them in
  `trusted_header`; the header is believed only from `trusted_proxies`. Bearer keys also work.

Every route names the scope it needs in `REQUIRED_SCOPE`; a route missing from it needs
`admin` (fail closed). Public: health, the OpenAPI document, the login page, static files."""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from datetime import timedelta
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, g, redirect, render_template, request, session
from flask.typing import ResponseReturnValue

from retriever.settings import Settings, SettingsError
from server.access import Principal, current
from server.errors import ApiError
from server.identity import SCOPES, Scope, User
from server.state import state

# metrics.scrape checks its own access: an admin or the metrics_token (server/metrics.py).
PUBLIC = frozenset(
    {"api.health", "api.openapi", "auth.login", "auth.login_form", "ui.static", "metrics.scrape"}
)
REQUIRED_SCOPE: dict[str, Scope] = {
    "api.ask": "ask",
    "api.list_documents": "ask",
    "api.get_document": "ask",
    "api.document_file": "ask",
    "api.upload_document": "ingest",
    "api.reindex_document": "ingest",
    "api.delete_document": "ingest",
    "ingest_api.retry_failed": "ingest",
    "ingest_api.list_jobs": "admin",
    "ingest_api.get_job": "admin",
    "conversations_api.list_conversations": "ask",
    "conversations_api.create_conversation": "ask",
    "conversations_api.get_conversation": "ask",
    "conversations_api.rename_conversation": "ask",
    "conversations_api.delete_conversation": "ask",
    "conversations_api.give_feedback": "ask",
    "conversations_api.list_feedback": "admin",
    "openai.list_models": "ask",
    "openai.get_model": "ask",
    "openai.chat_completions": "ask",
    "ui.chat": "ask",
    "ui.conversation": "ask",
    "ui.library": "ask",
    "ui.admin": "admin",
    "auth.logout": "ask",
    "mcp.endpoint": "ask",  # each tool checks its own scope (server/mcp_tools.py)
}
# Routes that cost model time or disk: counted against the caller's rate limit.
RATE_LIMITED = frozenset({"api.ask", "openai.chat_completions", "api.upload_document"})
UPLOAD_ENDPOINTS = frozenset({"api.upload_document"})
ANONYMOUS = Principal("anonymous", "admin", via="none")

auth = Blueprint("auth", __name__)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Auth mode `none` only on loopback: anyone who reaches the port could read everything."""
    if settings.auth_mode == "none" and not is_loopback(settings.host):
        raise SettingsError(
            f"auth_mode 'none' serves every document to anyone who reaches the port; it is "
            f"only allowed on loopback, not host {settings.host!r}. Set auth_mode = 'api_key' "
            "(or 'trusted_header') to serve on another address."
        )


def _secret_key(settings: Settings) -> bytes:
    """The session-signing key, made once per data directory (readable by its owner only)."""
    path = settings.data_dir / "session.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(secrets.token_bytes(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_bytes()


def install_auth(app: Flask, settings: Settings) -> None:
    check_bind(settings)
    if settings.auth_mode == "api_key":
        app.secret_key = _secret_key(settings)
    app.config.update(
        SESSION_COOKIE_NAME="enclave_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
    )
    app.before_request(_before_request)
    app.context_processor(lambda: {"auth_mode": settings.auth_mode, "principal": current()})
    app.register_blueprint(auth)


def _before_request() -> ResponseReturnValue | None:
    endpoint = request.endpoint
    settings = state().settings
    if endpoint not in UPLOAD_ENDPOINTS:
        request.max_content_length = settings.max_request_kb * 1024
        if (request.content_length or 0) > settings.max_request_kb * 1024:
            raise ApiError(
                413, "too_large", f"the request is larger than {settings.max_request_kb} KB"
            )
    if endpoint is None or endpoint in PUBLIC:
        return None  # routing errors (404, 405) and public routes
    principal = authenticate(settings)
    page = endpoint.startswith("ui.") or endpoint == "auth.logout"
    if principal is None:
        if page and settings.auth_mode == "api_key":
            return redirect(f"/login?next={_local_path(request.full_path)}")
        raise ApiError(
            401,
            "unauthorized",
            "send an API key as 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    g.principal = principal
    needed = REQUIRED_SCOPE.get(endpoint, "admin")
    if not principal.allows(needed):
        state().audit.record(
            principal.actor, "denied", request.path, method=request.method, needed=needed
        )
        raise ApiError(403, "forbidden", f"this needs a key or login with scope '{needed}'")
    if principal.via == "session" and request.method not in ("GET", "HEAD", "OPTIONS"):
        _same_origin_only()
    if endpoint in RATE_LIMITED and principal.via != "none":
        wait = state().limiter.take(principal.key_id or f"user:{principal.name}")
        if wait:
            retry = state().limiter.retry_after(wait)
            raise ApiError(
                429,
                "rate_limited",
                f"more than {settings.rate_limit_per_minute} requests a minute; retry in {retry} s",
                {"Retry-After": retry},
            )
    return None


def authenticate(settings: Settings) -> Principal | None:
    """The caller, or None if it is not authenticated. Groups and roles are read from the
    store on every request: a change applies to the next one."""
    if settings.auth_mode == "none":
        if not is_loopback(request.remote_addr):
            raise ApiError(403, "forbidden", "auth_mode 'none' answers loopback clients only")
        return ANONYMOUS
    identity = state().identity
    header = request.headers.get("Authorization", "")
    if header:
        kind, _, presented = header.partition(" ")
        if kind.lower() != "bearer" or not presented.strip():
            return None
        key = identity.authenticate_key(presented.strip())
        if key is None:
            return None
        user = identity.user(key.user)
        if user is None or user.disabled:
            return None
        # A key never has more than its user's role now (the role may have been lowered).
        scope = min(key.scope, user.role, key=SCOPES.index)
        return Principal(user.name, scope, user.groups, "api_key", key.id)
    if settings.auth_mode == "trusted_header":
        name = request.headers.get(settings.trusted_header, "").strip()
        if name and request.remote_addr in settings.trusted_proxies:
            return _enabled(identity.user(name), "trusted_header")
        return None
    user_name = session.get("user")
    if isinstance(user_name, str) and session.get("expires", 0) > time.time():
        return _enabled(identity.user(user_name), "session")
    return None


def _enabled(user: User | None, via: str) -> Principal | None:
    if user is None or user.disabled:
        return None
    return Principal(user.name, user.role, user.groups, via)


def _same_origin_only() -> None:
    """A cookie rides along with requests other sites make the browser send: a state change
    by a logged-in page must come from this origin."""
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site")
    expected = f"{request.scheme}://{request.host}"
    if (origin and not hmac.compare_digest(origin, expected)) or (
        site and site not in ("same-origin", "none")
    ):
        raise ApiError(403, "cross_origin", "cross-origin requests cannot use the login session")


def _local_path(path: str | None) -> str:
    """Only a path on this server may be a redirect target (never //host or a URL)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    parts = urlsplit(path)
    return parts.path + (f"?{parts.query}" if parts.query else "")


@auth.get("/login")
def login_form() -> ResponseReturnValue:
    from server.ui import secure_headers

    if state().settings.auth_mode != "api_key":
        return redirect("/")
    page = render_template("login.html", next=_local_path(request.args.get("next")), error="")
    return secure_headers(Response(page))


@auth.post("/login")
def login() -> ResponseReturnValue:
    from server.ui import secure_headers

    st = state()
    if st.settings.auth_mode != "api_key":
        return redirect("/")
    name = request.form.get("user", "")[:128]
    password = request.form.get("password", "")[:1024]
    target = _local_path(request.form.get("next"))
    user = st.identity.check_password(name, password) if name and password else None
    if user is None:
        st.audit.record(name or "?", "login_failed", request.remote_addr or "")
        page = render_template("login.html", next=target, error="Wrong user name or password.")
        return secure_headers(Response(page, status=401))
    session.clear()
    session.permanent = True
    session["user"] = user.name
    session["expires"] = time.time() + st.settings.session_hours * 3600
    st.audit.record(user.name, "login", request.remote_addr or "")
    return redirect(target)


@auth.post("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect("/login")
