"""Authentication (who is calling), scopes (what the route needs), and the request limits
that depend on the caller. Runs before every request (`install_auth`).

Auth modes (setting `auth_mode`):
- `none`: no login; every caller is `anonymous` with every right. Allowed only while the server
  is bound to loopback (`check_bind`, called before serving), only for loopback clients and
  only under a loopback Host name (a DNS-rebinding page names its own host); the pages show a
  banner saying so. The `make run` default.
- `api_key`: `Authorization: Bearer enk_...` (keys from `enclave keys create`), and for the
  pages a login form with the user's local password (a signed session cookie, SameSite=Strict,
  HttpOnly; unsafe methods from another origin are refused).
- `trusted_header`: a reverse proxy that has authenticated the user names them in
  `trusted_header`; the header is believed only from `trusted_proxies`. Bearer keys also work;
  another `Authorization` scheme (Basic, which a proxy forwards) falls through to the header.

Whatever the mode, a state change (POST, PUT, PATCH, DELETE) by any caller that is not a Bearer
key (a login session, the proxy's user, the anonymous caller) must come from this server's own
origin (`Origin` / `Sec-Fetch-Site`): a browser sends such credentials along with requests
another site makes it send. This origin is `public_url` when set, or what a trusted proxy says
(`X-Forwarded-Proto` / `X-Forwarded-Host` from `trusted_proxies`), or the request's own.
Logins are slowed per address and per user name after failures (`LoginThrottle`), and a session
dies with its user's session epoch (logout, a password change, disabling).

Every route declares beside its view (`@route`, server/contract.py) the scope it needs, whether
it is public or rate limited; a view without that declaration needs `admin` (fail closed).
Public: health, the OpenAPI document, the login page, static files, /metrics (which checks its
own access)."""

from __future__ import annotations

import ipaddress
import math
import secrets
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
)
from flask.sessions import SecureCookieSessionInterface
from flask.typing import ResponseReturnValue

from config.settings import Settings, SettingsError
from server.access import Principal, current
from server.contract import contract_of, route
from server.errors import ApiError
from server.state import state
from service.identity import SCOPES, Scope, User

ANONYMOUS = Principal("anonymous", "admin", via="none")

auth = Blueprint("auth", __name__)


UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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


class _SessionInterface(SecureCookieSessionInterface):
    """The session cookie is `Secure` whenever this request came over https (directly, by
    `public_url`, or as a trusted proxy says)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or _public_origin().startswith("https:")


def install_auth(app: Flask, settings: Settings) -> None:
    check_bind(settings)
    if settings.auth_mode == "api_key":
        app.secret_key = _secret_key(settings)
    app.session_interface = _SessionInterface()
    app.extensions["enclave_login_throttle"] = LoginThrottle(settings.login_failures_allowed)
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
    if settings.auth_mode == "none":
        _loopback_host_only(settings)
    contract = contract_of(current_app, endpoint)
    if contract is None or not contract.upload:
        request.max_content_length = settings.max_request_kb * 1024
        if (request.content_length or 0) > settings.max_request_kb * 1024:
            raise ApiError(
                413, "too_large", f"the request is larger than {settings.max_request_kb} KB"
            )
    if endpoint is None or (contract is not None and contract.scope is None):
        return None  # routing errors (404, 405) and public routes
    principal = authenticate(settings)
    if principal is None:
        if contract is not None and contract.page and settings.auth_mode == "api_key":
            return redirect(f"/login?next={_local_path(request.full_path)}")
        raise ApiError(
            401,
            "unauthorized",
            "send an API key as 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    g.principal = principal
    needed: Scope = "admin" if contract is None else (contract.scope or "admin")
    if not principal.allows(needed):
        state().audit.record(
            principal.actor, "denied", request.path, method=request.method, needed=needed
        )
        raise ApiError(403, "forbidden", f"this needs a key or login with scope '{needed}'")
    if principal.via != "api_key" and request.method in UNSAFE_METHODS:
        _same_origin_only()
    if contract is not None and contract.rate_limited and principal.via != "none":
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
    kind, _, presented = header.partition(" ")
    if header and (kind.lower() == "bearer" or settings.auth_mode != "trusted_header"):
        # In trusted_header mode another scheme (Basic, forwarded by the proxy) is not ours:
        # the proxy's header names the user.
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
        # Logout, a password change or disabling the user bumps the epoch: older sessions die.
        if session.get("epoch") != identity.session_epoch(user_name):
            return None
        return _enabled(identity.user(user_name), "session")
    return None


def optional_principal() -> Principal | None:
    """The caller of a public route if it sent valid credentials, else None (never an error)."""
    try:
        return authenticate(state().settings)
    except ApiError:
        return None


def _enabled(user: User | None, via: str) -> Principal | None:
    if user is None or user.disabled:
        return None
    return Principal(user.name, user.role, user.groups, via)


def _loopback_host_only(settings: Settings) -> None:
    """Auth mode none: a page on another site can rebind its own DNS name to 127.0.0.1 and
    read this server as same-origin; its requests carry its name in Host. Only loopback
    names (and `public_url`'s host) are this server."""
    host = urlsplit(f"//{request.host}").hostname if request.host else None
    allowed = urlsplit(settings.public_url).hostname if settings.public_url else None
    if not is_loopback(host) and not (host and allowed and host == allowed.lower()):
        raise ApiError(
            421,
            "wrong_host",
            "auth_mode 'none' answers only under a loopback host name (localhost, 127.0.0.1)",
        )


def _from_trusted_proxy() -> bool:
    return request.remote_addr in state().settings.trusted_proxies


def client_address() -> str:
    """The client's address: behind a trusted proxy, the last one it added to
    X-Forwarded-For that is not itself a trusted proxy (what the client wrote before that is
    not believed); else the peer's."""
    peer = request.remote_addr or "?"
    if not _from_trusted_proxy():
        return peer
    proxies = state().settings.trusted_proxies
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed(hops):
        if hop and hop not in proxies:
            return hop[:64]
    return peer


def _public_origin() -> str:
    """This server's origin as the browser sees it: `public_url` when set; else what a
    trusted proxy says (X-Forwarded-Proto / X-Forwarded-Host); else the request's own."""
    settings = state().settings
    if settings.public_url:
        parts = urlsplit(settings.public_url)
        return f"{parts.scheme}://{parts.netloc}".lower()
    scheme, host = request.scheme, request.host
    if _from_trusted_proxy():
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        forwarded_host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        scheme = proto if proto in ("http", "https") else scheme
        host = forwarded_host or host
    return f"{scheme}://{host}".lower()


def _same_origin_only() -> None:
    """Credentials a browser adds by itself (a session cookie, what a proxy adds: Kerberos,
    Basic, a client certificate; or none at all in mode none) ride along with requests other
    sites make it send: a state change must come from this origin. A request without either
    header comes from no browser page (curl, the CLI) and is let through."""
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site")
    expected = {_public_origin(), f"{request.scheme}://{request.host}".lower()}
    if (origin is not None and origin.lower() not in expected) or (
        site and site not in ("same-origin", "none")
    ):
        raise ApiError(
            403,
            "cross_origin",
            "cross-origin requests cannot change anything here (behind a TLS proxy, set "
            "public_url)",
        )


def _local_path(path: str | None) -> str:
    """Only a path on this server may be a redirect target: refused (`/`) unless it is a
    plain absolute path. Browsers drop tabs and newlines from a URL and read `\\` as `/`,
    so `/<tab>//evil` or `/\\evil` would become `//evil` (another host): any control
    character, whitespace or backslash refuses it, as does `//` or a scheme."""
    if not path or len(path) > 2048 or not path.startswith("/"):
        return "/"
    if any(c.isspace() or not c.isprintable() or c == "\\" for c in path):
        return "/"
    if path.startswith("//"):
        return "/"
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        return "/"
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return target if target.startswith("/") and not target.startswith("//") else "/"


class LoginThrottle:
    """Failed logins, counted per client address and per user name: after `allowed` failures
    in a row each further try must wait, twice as long each time (5 s, 10 s, 20 s ... at most
    15 minutes), refused with 429 before the password is even hashed. A success clears the
    counts; a key untouched for an hour is forgotten. In one process (each web worker
    counts for itself)."""

    MAX_WAIT_S = 900.0
    FORGET_S = 3600.0

    def __init__(self, allowed: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.allowed = allowed
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}  # key -> (failures, last failure)
        self._lock = threading.Lock()

    def _wait(self, failures: int) -> float:
        over = failures - self.allowed
        return 0.0 if over < 0 else min(self.MAX_WAIT_S, 5.0 * 2.0**over)

    def retry_after(self, keys: list[str]) -> float:
        """0 if a login may be tried now; else the seconds until one may."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                failures, at = self._failures.get(key, (0, now))
                if now - at > self.FORGET_S:
                    self._failures.pop(key, None)
                    continue
                wait = max(wait, at + self._wait(failures) - now)
        return max(0.0, wait)

    def failed(self, keys: list[str]) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > 100_000:  # bounded: drop what is forgotten anyway
                self._failures = {
                    k: v for k, v in self._failures.items() if now - v[1] <= self.FORGET_S
                }
            for key in keys:
                failures, _ = self._failures.get(key, (0, now))
                self._failures[key] = (failures + 1, now)

    def succeeded(self, keys: list[str]) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


def _login_keys(name: str) -> list[str]:
    # Behind a proxy every sign-in comes from its address: the client's is the one counted.
    return [f"addr:{client_address()}", f"user:{name.lower()}"]


@route(auth, "/login", scope=None)
def login_form() -> ResponseReturnValue:
    from server.ui import secure_headers

    if state().settings.auth_mode != "api_key":
        return redirect("/")
    page = render_template("login.html", next=_local_path(request.args.get("next")), error="")
    return secure_headers(Response(page))


@route(auth, "/login", "POST", scope=None)
def login() -> ResponseReturnValue:
    from server.ui import secure_headers

    st = state()
    if st.settings.auth_mode != "api_key":
        return redirect("/")
    _same_origin_only()  # no logging a browser in to another account from another site
    name = request.form.get("user", "")[:128]
    password = request.form.get("password", "")[:1024]
    target = _local_path(request.form.get("next"))
    throttle: LoginThrottle = current_app.extensions["enclave_login_throttle"]
    keys = _login_keys(name)
    wait = throttle.retry_after(keys)
    if wait > 0:  # the form's answer, as for a wrong password: a page, not JSON
        retry = str(max(1, math.ceil(wait)))
        error = f"Too many failed sign-ins. Try again in {retry} s."
        page = render_template("login.html", next=target, error=error)
        limited = secure_headers(Response(page, status=429))
        limited.headers["Retry-After"] = retry
        return limited
    user = st.identity.check_password(name, password) if name and password else None
    if user is None:
        throttle.failed(keys)
        st.audit.record(name or "?", "login_failed", client_address())
        page = render_template("login.html", next=target, error="Wrong user name or password.")
        return secure_headers(Response(page, status=401))
    throttle.succeeded(keys)
    session.clear()
    session.permanent = True
    session["user"] = user.name
    session["epoch"] = st.identity.session_epoch(user.name)
    session["expires"] = time.time() + st.settings.session_hours * 3600
    st.audit.record(user.name, "login", client_address())
    return redirect(target)


@route(auth, "/logout", "POST", scope="ask", page=True)
def logout() -> ResponseReturnValue:
    principal = current()
    if principal.via == "session":  # every session of this user ends, not only this cookie
        state().identity.bump_session_epoch(principal.name)
        state().audit.record(principal.name, "logout", client_address())
    session.clear()
    return redirect("/login")
