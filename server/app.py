"""Flask application factory."""

from __future__ import annotations

from flask import Flask

from retriever.components import Components
from retriever.settings import Settings
from server.api import api
from server.auth import install_auth
from server.conversations_api import conversations_api
from server.embedder_api import embedder_api
from server.errors import register_error_handlers
from server.ingest_api import ingest_api
from server.mcp_http import install_mcp
from server.metrics import install_metrics
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
