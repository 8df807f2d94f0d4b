"""Which embedder serves, and switching it: /api/v1/embedder (used by `enclave tune activate`
and `rollback` while `enclave serve` holds the data dir)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field

from retriever.tuning.activation import ActivationStatus
from retriever.tuning.generations import Generation, GenerationError, Generations, model_dir_of
from server.contract import Invalid, route
from server.errors import ApiError
from server.state import state

embedder_api = Blueprint("embedder_api", __name__, url_prefix="/api/v1/embedder")


class EmbedderState(BaseModel):
    """The generation that serves, the one rollback returns to, and the progress of an
    activation (`phase`: idle, starting, embedding, swapping, done or failed)."""

    current: Generation
    previous: Generation | None
    activation: ActivationStatus


class Activate(BaseModel):
    model_config = ConfigDict(strict=True)

    model: Annotated[
        str,
        Field(pattern=r"^[^\x00]*$", description="A tuned model's folder under the data dir."),
        Invalid('send {"model": "<folder under the data dir>"}'),
    ]


def embedder_status() -> EmbedderState:
    st = state()
    current, previous = Generations(st.settings.data_dir).read()
    return EmbedderState(current=current, previous=previous, activation=st.activation.status)


@route(embedder_api, "", scope="admin", responses={200: EmbedderState})
def get_embedder() -> EmbedderState:
    """The embedder generation that serves, the one rollback returns to, and the progress of
    an activation."""
    return embedder_status()


def _start(model: Path | None) -> tuple[EmbedderState, int]:
    try:
        state().start_activation(model)
    except GenerationError as exc:
        raise ApiError(409, "activation_running", str(exc)) from None
    return embedder_status(), 202


@route(
    embedder_api,
    "/activate",
    "POST",
    scope="admin",
    body=Activate,
    responses={202: EmbedderState},
    errors=(409,),
)
def activate_embedder(body: Activate) -> tuple[EmbedderState, int]:
    """Serve from a tuned model (a folder under the data dir).

    The index is re-embedded into a new collection in the background while the current one
    keeps answering, then swapped in."""
    settings = state().settings
    data_dir = settings.data_dir.resolve()
    model = Path(body.model).resolve()
    # The API loads models only from the data dir: a client cannot point it elsewhere. Not
    # from the folders others fill either (the inbox, uploads, trash, quarantine): a model
    # folder names the Python classes that load it.
    others = (settings.inbox_dir, settings.uploads_dir, settings.trash_dir, settings.quarantine_dir)
    if not model.is_relative_to(data_dir) or any(
        model.is_relative_to(folder.resolve()) for folder in others
    ):
        raise ApiError(
            400,
            "invalid_model",
            f"the model must be a folder under {data_dir}, outside its inbox, uploads, trash "
            "and quarantine",
        )
    try:
        model_dir_of(model)
    except GenerationError as exc:
        raise ApiError(400, "invalid_model", str(exc)) from None
    return _start(model)


@route(
    embedder_api,
    "/rollback",
    "POST",
    scope="admin",
    responses={202: EmbedderState},
    errors=(409,),
)
def rollback_embedder() -> tuple[EmbedderState, int]:
    """Serve from the previous embedder again (its collection is caught up first)."""
    _, previous = Generations(state().settings.data_dir).read()
    if previous is None:
        raise ApiError(409, "nothing_to_roll_back", "no embedder was activated")
    return _start(None)
