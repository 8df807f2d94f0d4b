"""Flask application factory."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from flask import Flask

from config.settings import Settings
from retriever.components import Components
from server.api import api
from server.auth import install_auth
from server.conversations_api import conversations_api
from server.embedder_api import embedder_api
from server.errors import register_error_handlers
from server.ingest_api import ingest_api
from server.mcp_http import install_mcp
from server.metrics_api import install_metrics
from server.openai_api import openai_api, openai_error_response
from server.state import EnclaveState
from server.ui import ui


def create_app(
    settings: Settings,
    components: Components | None = None,
    load: str = "now",
) -> Flask:
    """Build the app. `load`: "now" loads models before returning, "background" in a thread
    (health answers 503 until done), "never" leaves that to the caller."""
    secure_data_dir(settings)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_mb * 1024 * 1024
    install_auth(app, settings)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    st = EnclaveState(components or Components(settings))
    app.extensions["enclave"] = st
    # /v1/ is the OpenAI-compatible API: its clients expect OpenAI's error shape.
    register_error_handlers(app, {"/v1/": openai_error_response})
    app.register_blueprint(api)
    app.register_blueprint(ingest_api)
    app.register_blueprint(conversations_api)
    app.register_blueprint(embedder_api)
    app.register_blueprint(openai_api)
    app.register_blueprint(ui)
    install_mcp(app)  # MCP over streamable HTTP at /mcp
    install_metrics(app)  # GET /metrics, request counts and times

    if load == "now":
        st.load()
    elif load == "background":
        st.load_in_background()
    return app


log = logging.getLogger(__name__)
# The inbox is the operator's drop folder: its files' modes are theirs (the data directory's
# own 0700 already closes it to others). Everything else in the data directory is the server's.
OPERATOR_FOLDERS = ("inbox",)


def secure_data_dir(settings: Settings) -> None:
    """The data directory holds every document, password hash and conversation: readable by
    the server's user alone. New files are made 0600 and folders 0700 (umask 077), and what
    an older version left readable to others is closed at start."""
    os.umask(0o077)
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    _private(data)
    for entry in data.iterdir():
        if entry.is_symlink():
            continue
        if entry.is_file():
            _private(entry)
        elif entry.is_dir() and entry.name not in OPERATOR_FOLDERS:
            for folder, dirs, files in os.walk(entry):
                _private(Path(folder))
                for name in files:
                    _private(Path(folder) / name)
                dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]


def _private(path: Path) -> None:
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o077:
            return
        path.chmod(0o700 if stat.S_ISDIR(info.st_mode) else 0o600)
    except OSError as exc:  # not ours (a mounted folder): say so, serve anyway
        log.warning("could not make %s private: %s", path, exc)
