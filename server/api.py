"""REST API under /api/v1."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Generator
from contextlib import closing
from pathlib import Path
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.utils import secure_filename

from ingest.loaders import SUPPORTED_SUFFIXES, sniff_mismatch
from ingest.registry import DocumentRecord
from retriever.answer import (
    ANSWER_MODES,
    AnswerStream,
    DoneEvent,
    SourcesEvent,
    TokenEvent,
    final_answer,
)
from retriever.search import MODES
from server.common import (
    actor,
    answer_errors,
    check_question,
    first_event,
    json_body,
    optional_bool,
    optional_timeout,
    require_ready,
    stream_failure,
)
from server.errors import ApiError
from server.openapi import openapi_document
from server.sse import EventStream, event_stream_response, sse
from server.state import state

api = Blueprint("api", __name__, url_prefix="/api/v1")


def _collections(value: Any) -> list[str] | None:
    """`collection`: one name or a list of names; the search is limited to them."""
    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) and n and len(n) <= 128 for n in names)
    ):
        raise ApiError(
            400, "invalid_collection", "'collection' must be a name or a non-empty list of names"
        )
    return names


@api.post("/ask")
def ask() -> ResponseReturnValue:
    body = json_body()
    settings = state().settings
    question = body.get("question")
    if question is None:
        raise ApiError(400, "missing_question", "'question' is required")
    if not isinstance(question, str):
        raise ApiError(400, "invalid_question", "'question' must be a string")
    question = check_question(question)
    top_k = body.get("top_k", settings.top_k)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 50:
        raise ApiError(400, "invalid_top_k", "'top_k' must be an integer from 1 to 50")
    mode = body.get("mode", settings.retrieval_mode)
    if mode not in MODES:
        raise ApiError(400, "invalid_mode", f"'mode' must be one of {', '.join(MODES)}")
    answer_mode = body.get("answer_mode", settings.answer_mode)
    if answer_mode not in ANSWER_MODES:
        raise ApiError(
            400, "invalid_answer_mode", f"'answer_mode' must be one of {', '.join(ANSWER_MODES)}"
        )
    collections = _collections(body.get("collection"))
    stream = optional_bool(body, "stream")
    timeout_s = optional_timeout(body)
    require_ready()
    answers = state().components.answers
    # The whole answer is the last event of the stream (`final_answer`), so one call serves both.
    events = answers.stream(
        question,
        top_k=top_k,
        mode=mode,
        answer_mode=answer_mode,
        collections=collections,
        timeout_s=timeout_s,
        actor=actor(),
    )
    if not stream:
        with answer_errors(), closing(events):
            answer = final_answer(events)
        return jsonify(answer.to_dict())
    first = first_event(events)
    return event_stream_response(EventStream(_ask_events(first, events), events))


def _ask_events(first: SourcesEvent, events: AnswerStream) -> Generator[str, None, None]:
    """`sources`, `token`..., then `done` (the checked answer, as without streaming) or
    `error`. The tokens are the model's raw text: `done.answer` replaces them."""
    yield sse([vars(s) for s in first.sources], "sources")
    try:
        for event in events:
            if isinstance(event, TokenEvent):
                yield sse({"text": event.text}, "token")
            elif isinstance(event, DoneEvent):
                yield sse(event.answer.to_dict(), "done")
    except Exception as exc:
        code, message = stream_failure(exc)
        yield sse({"error": {"code": code, "message": message}}, "error")


@api.get("/documents")
def list_documents() -> ResponseReturnValue:
    registry = state().pipeline.registry
    docs = [r.to_dict() for r in registry.list() if r.status != "deleted"]
    return jsonify({"documents": docs, "counts": registry.counts()})


def _document(document_id: str) -> DocumentRecord:
    """The document with that id, unless unknown or deleted (404)."""
    record = state().pipeline.registry.get(document_id)
    if record is None or record.status == "deleted":
        raise ApiError(404, "document_not_found", f"no document with id '{document_id}'")
    return record


@api.get("/documents/<document_id>")
def get_document(document_id: str) -> ResponseReturnValue:
    return jsonify(_document(document_id).to_dict())


@api.post("/documents")
def upload_document() -> ResponseReturnValue:
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise ApiError(400, "missing_file", "send the document as multipart form field 'file'")
    name = secure_filename(upload.filename)
    suffix = Path(name).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ApiError(
            415,
            "unsupported_type",
            f"'{suffix or name}' files are not supported; supported: "
            + ", ".join(sorted(SUPPORTED_SUFFIXES)),
        )
    data = upload.read()
    if not data:
        raise ApiError(400, "empty_file", "the uploaded file is empty")
    mismatch = sniff_mismatch(suffix, data[:4096])
    if mismatch:
        raise ApiError(415, "unsupported_type", mismatch)
    require_ready()
    st = state()
    # Server-chosen name: the client's file name is only a label, never a path.
    folder = st.settings.uploads_dir
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()
    target = folder / f"{digest[:16]}-{name}"
    target.write_bytes(data)
    stat = target.stat()
    record = st.pipeline.registry.register(
        str(target.resolve()), st.settings.default_collection, digest, stat.st_size, stat.st_mtime
    )
    st.submit(record)
    return jsonify({"id": record.id, "status": record.status, "path": record.path}), 202


@api.delete("/documents/<document_id>")
def delete_document(document_id: str) -> ResponseReturnValue:
    st = state()
    record = _document(document_id)
    st.pipeline.delete(document_id)
    uploaded = Path(record.path)
    if uploaded.parent.resolve() == st.settings.uploads_dir.resolve():
        uploaded.unlink(missing_ok=True)
    return jsonify({"id": document_id, "status": "deleted"})


@api.get("/health")
def health() -> ResponseReturnValue:
    st = state()
    body: dict[str, Any] = {"time": time.time()}
    if st.load_error:
        body.update(status="error", error=st.load_error)
        return jsonify(body), 503
    if not st.ready.is_set():
        body["status"] = "loading"
        return jsonify(body), 503
    components = st.components
    body.update(
        status="ok",
        chunks=components.store.count(),
        documents=st.pipeline.registry.counts(),
        model=components.generator.name,
        retrieval_mode=st.settings.retrieval_mode,
        generation=components.slots.stats(),
    )
    return jsonify(body)


@api.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(openapi_document())
