"""The web pages: chat, document library and admin, rendered from templates; the pages talk
to /api/v1 from plain JavaScript files under static/ (no build step, nothing from another
host: the Content-Security-Policy below lets the browser fetch from this server only)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, render_template, send_from_directory
from flask.typing import ResponseReturnValue

from server.contract import route
from server.state import state

ui = Blueprint("ui", __name__)
STATIC = Path(__file__).parent / "static"

# The pages may load and call only this server; no inline scripts or styles.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGES = {"chat": "Chat", "library": "Documents", "admin": "Admin"}


def secure_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = content_security_policy()
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def content_security_policy() -> str:
    """Same-origin only; images may also come from `answer_link_hosts` (answers may show
    images from those hosts, and from no other)."""
    hosts = state().settings.answer_link_hosts
    if not hosts:
        return CONTENT_SECURITY_POLICY
    extra = " ".join(f"https://{h}" for h in hosts)
    return CONTENT_SECURITY_POLICY.replace("img-src 'self' data:", f"img-src 'self' data: {extra}")


def _page(template: str, page: str, **context: object) -> ResponseReturnValue:
    hosts = ",".join(state().settings.answer_link_hosts)
    html = render_template(template, page=page, pages=PAGES, link_hosts=hosts, **context)
    return secure_headers(Response(html))


@route(ui, "/static/<path:filename>", scope=None)
def static(filename: str) -> ResponseReturnValue:
    """The pages' scripts, styles and icons (public: the sign-in page uses them)."""
    max_age = current_app.get_send_file_max_age(filename)
    return send_from_directory(STATIC, filename, max_age=max_age)


@route(ui, "/", scope="ask", page=True)
def chat() -> ResponseReturnValue:
    return _page("chat.html", "chat", conversation_id="")


@route(ui, "/c/<conversation_id>", scope="ask", page=True)
def conversation(conversation_id: str) -> ResponseReturnValue:
    # The script loads it (and says so if it is gone); the id is only a data attribute.
    return _page("chat.html", "chat", conversation_id=conversation_id)


@route(ui, "/library", scope="ask", page=True)
def library() -> ResponseReturnValue:
    return _page("library.html", "library")


@route(ui, "/admin", scope="admin", page=True)
def admin() -> ResponseReturnValue:
    return _page("admin.html", "admin")
