"""The service itself under /api/v1: its health and this API's OpenAPI document. The other
routes live with their feature (server/ask/, server/documents/, ...)."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from server.auth import optional_principal
from server.contract import absent, openapi_document, route
from server.state import state

api = Blueprint("api", __name__, url_prefix="/api/v1")


class Health(BaseModel):
    """Only `status` without credentials; `generation` for any caller with a key or login;
    the rest for scope admin."""

    status: Literal["ok", "loading", "error"]
    error: Annotated[str, Field(description="Why the models failed to load.")] = absent()
    generation: Annotated[
        dict[str, Any], Field(description="Generation slots: in use, waiting, ...")
    ] = absent()
    time: float = absent()
    chunks: int = absent()
    documents: Annotated[dict[str, int], Field(description="Documents by status.")] = absent()
    model: str = absent()
    retrieval_mode: str = absent()
    ingest: dict[str, int] = absent()
    model_process: Annotated[
        dict[str, Any],
        Field(description="The model's own process: restarts, last crash, CPU profile."),
    ] = absent()


@route(api, "/health", scope=None, responses={200: Health, 503: Health})
def health() -> Health | tuple[Health, int]:
    """200 once the models are loaded, 503 before; only the status without credentials,
    every detail with scope admin.

    A caller with a key or login also gets the generation load (the pages' busy dot); with
    scope admin (or mode none's loopback caller) every detail: counts, the model, load
    errors."""
    st = state()
    body: dict[str, Any] = {}
    caller = optional_principal()
    admin = caller is not None and caller.allows("admin")
    if st.load_error:
        body["status"] = "error"
        if admin:
            body["error"] = st.load_error
        return Health.model_validate(body), 503
    if not st.ready.is_set():
        body["status"] = "loading"
        return Health.model_validate(body), 503
    components = st.components
    body["status"] = "ok"
    if caller is not None:
        body["generation"] = components.slots.stats()
    if admin:
        body.update(
            time=time.time(),
            chunks=components.store.count(),
            documents=st.pipeline.registry.counts(),
            model=components.generator.name,
            retrieval_mode=st.settings.retrieval_mode,
            ingest={"queue": st.ingest_queue},
        )
        status = getattr(components.generator, "status", None)
        if status is not None:  # the model's own process: restarts, last crash, CPU profile
            body["model_process"] = status()
    return Health.model_validate(body)


@route(api, "/openapi.json", scope=None, responses={200: dict[str, Any]})
def openapi() -> ResponseReturnValue:
    """This document."""
    return jsonify(openapi_document(current_app))
