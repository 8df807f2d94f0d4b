"""Which embedder serves, and switching it: /api/v1/embedder (used by `enclave tune activate`
and `rollback` while `enclave serve` holds the data dir)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from retriever.tuning.generations import GenerationError, Generations, model_dir_of
from server.errors import ApiError
from server.state import state

embedder_api = Blueprint("embedder_api", __name__, url_prefix="/api/v1/embedder")


def embedder_status() -> dict[str, object]:
    st = state()
    current, previous = Generations(st.settings.data_dir).read()
    return {
        "current": vars(current),
        "previous": vars(previous) if previous else None,
        "activation": st.activation.status.to_dict(),
    }


@embedder_api.get("")
def get_embedder() -> ResponseReturnValue:
    return jsonify(embedder_status())


def _start(model: Path | None) -> ResponseReturnValue:
    try:
        state().start_activation(model)
    except GenerationError as exc:
        raise ApiError(409, "activation_running", str(exc)) from None
    return jsonify(embedder_status()), 202


@embedder_api.post("/activate")
def activate() -> ResponseReturnValue:
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise ApiError(400, "invalid_model", 'send {"model": "<folder under the data dir>"}')
    data_dir = state().settings.data_dir.resolve()
    model = Path(body["model"]).resolve()
    # The API loads models only from the data dir: a client cannot point it elsewhere.
    if not model.is_relative_to(data_dir):
        raise ApiError(400, "invalid_model", f"the model must be a folder under {data_dir}")
    try:
        model_dir_of(model)
    except GenerationError as exc:
        raise ApiError(400, "invalid_model", str(exc)) from None
    return _start(model)


@embedder_api.post("/rollback")
def rollback() -> ResponseReturnValue:
    _, previous = Generations(state().settings.data_dir).read()
    if previous is None:
        raise ApiError(409, "nothing_to_roll_back", "no embedder was activated")
    return _start(None)
