"""REST API under /api/v1."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file
from flask.typing import ResponseReturnValue
from werkzeug.utils import secure_filename

from config.collection_names import is_collection_name
from ingest.loaders import SUPPORTED_SUFFIXES, sniff_mismatch
from ingest.registry import DocumentRecord
from retriever.answer import (
    ANSWER_MODES,
    Answer,
    AnswerStream,
    DoneEvent,
    SourcesEvent,
    TokenEvent,
    WaitingEvent,
    final_answer,
)
from retriever.followup import Turn, contextualize
from retriever.question import Question
from retriever.search import MODES
from server.access import (
    can_read_collection,
    current,
    readable,
    readable_collections,
    readable_document,
)
from server.auth import optional_principal
from server.common import (
    actor,
    answer_errors,
    answer_finisher,
    first_event,
    json_body,
    optional_bool,
    optional_timeout,
    question_field,
    require_ready,
    stream_failure,
)
from server.errors import ApiError
from server.openapi import openapi_document
from server.sse import KEEP_ALIVE, EventStream, event_stream_response, sse
from server.state import state
from service.untrusted import StreamedLinks

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


def retrieval_options(body: dict[str, Any]) -> tuple[int, Any]:
    """`top_k` and `mode` of a question (here and in MCP's `search`)."""
    settings = state().settings
    top_k = body.get("top_k", settings.top_k)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 50:
        raise ApiError(400, "invalid_top_k", "'top_k' must be an integer from 1 to 50")
    mode = body.get("mode", settings.retrieval_mode)
    if mode not in MODES:
        raise ApiError(400, "invalid_mode", f"'mode' must be one of {', '.join(MODES)}")
    return top_k, mode


@api.post("/ask")
def ask() -> ResponseReturnValue:
    body = json_body()
    settings = state().settings
    question = question_field(body, "question")
    top_k, mode = retrieval_options(body)
    answer_mode = body.get("answer_mode", settings.answer_mode)
    if answer_mode not in ANSWER_MODES:
        raise ApiError(
            400, "invalid_answer_mode", f"'answer_mode' must be one of {', '.join(ANSWER_MODES)}"
        )
    # The caller's readable collections go inside both index queries: nothing else is found.
    collections = readable_collections(_collections(body.get("collection")))
    stream = optional_bool(body, "stream")
    timeout_s = optional_timeout(body)
    thread = _Thread.from_body(body, question)
    require_ready()
    answers = state().components.answers
    # The whole answer is the last event of the stream (`final_answer`), so one call serves both.
    asked = Question(
        thread.query if thread else question,
        top_k=top_k,
        mode=mode,
        answer_mode=answer_mode,
        collections=collections,
        timeout_s=timeout_s,
        actor=actor(),
    )
    events = answers.stream(asked)
    if not stream:
        with answer_errors(), closing(events):
            answer = final_answer(events)
        answer_finisher("api")(answer)
        result = answer.to_dict()
        if thread:
            thread.save_question()
            result.update(thread.save_answer(result))
        return jsonify(result)
    first = first_event(events)
    if thread:
        thread.save_question()
    return event_stream_response(
        EventStream(
            _ask_events(
                first,
                events,
                answer_finisher("api"),
                StreamedLinks(state().settings.answer_link_hosts),
                thread,
            ),
            events,
        )
    )


class _Thread:
    """The conversation a question belongs to: its history makes a follow-up self-contained
    for retrieval (`retriever.followup`), and the question and answer are stored in it."""

    def __init__(self, conversation_id: str, question: str) -> None:
        self.store = state().conversations
        self.conversation_id = conversation_id
        self.question = question
        history = [Turn(m["role"], m["content"]) for m in self.store.messages(conversation_id)]
        self.query = contextualize(question, history, state().settings.max_question_chars)

    @classmethod
    def from_body(cls, body: dict[str, Any], question: str) -> _Thread | None:
        conversation_id = body.get("conversation_id")
        if conversation_id is None:
            return None
        if not isinstance(conversation_id, str):
            raise ApiError(400, "invalid_conversation_id", "'conversation_id' must be a string")
        if not owns_conversation(state().conversations.get(conversation_id)):
            raise ApiError(
                404, "conversation_not_found", f"no conversation with id '{conversation_id}'"
            )
        return cls(conversation_id, question)

    def save_question(self) -> None:
        query = self.query if self.query != self.question else None
        self.store.add_message(self.conversation_id, "user", self.question, query=query)

    def save_answer(self, answer: dict[str, Any], stopped: bool = False) -> dict[str, Any]:
        """Store the answer; returns the fields that tell the client where it was stored."""
        message_id = self.store.add_message(
            self.conversation_id, "assistant", answer["answer"], answer=answer, stopped=stopped
        )
        return {
            "conversation_id": self.conversation_id,
            "message_id": message_id,
            "query": self.query,
        }


def _ask_events(
    first: SourcesEvent,
    events: AnswerStream,
    finish: Callable[[Answer], Answer],
    links: StreamedLinks,
    thread: _Thread | None = None,
) -> Generator[str, None, None]:
    """`sources`, `token`..., then `done` (the checked answer, as without streaming) or
    `error`. The tokens are the model's raw text, less links to hosts not allowed (a link
    is held back until it is complete): `done.answer` replaces them. In a conversation, an
    answer stopped by the client is stored as far as it got."""
    sources = [vars(s) for s in first.sources]
    pieces: list[str] = []
    finished = False

    def token(text: str) -> Iterator[str]:
        if text:
            pieces.append(text)
            yield sse({"text": text}, "token")

    try:
        yield sse(sources, "sources")
        for event in events:
            if isinstance(event, TokenEvent):
                yield from token(links.add(event.text))
            elif isinstance(event, WaitingEvent):
                yield KEEP_ALIVE  # notices a client that has gone (an escalation stops)
            elif isinstance(event, DoneEvent):
                yield from token(links.finish())
                finish(event.answer)
                result = event.answer.to_dict()
                if thread:
                    result.update(thread.save_answer(result))
                finished = True
                yield sse(result, "done")
    except Exception as exc:
        finished = True
        code, message = stream_failure(exc)
        yield from token(links.finish())  # what the model wrote before it failed
        yield sse({"error": {"code": code, "message": message}}, "error")
    finally:
        if thread and not finished:
            shown = "".join(pieces) + links.finish()
            partial = {"answer": shown.strip(), "abstained": False, "sources": sources}
            thread.save_answer({**partial, "stopped": True}, stopped=True)


_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{16}-")


def document_json(
    record: DocumentRecord, pages: dict[str, dict[str, int]] | None = None
) -> dict[str, Any]:
    """A document as the API shows it: the registry's fields, its file name, when it was
    last indexed and, while it is being read, its pages done ({done, total}, else null)."""
    body = record.to_dict()
    stored = Path(record.path).name
    name = stored
    if Path(record.path).parent == state().settings.uploads_dir.resolve():
        name = _UPLOAD_PREFIX.sub("", stored)  # uploads are stored as <16 hex digits>-<name>
        if record.error:
            body["error"] = record.error.replace(stored, name)
    body["name"] = name
    body["indexed_at"] = record.updated_at if record.status == "indexed" else None
    if pages is None and record.status == "pending":
        pages = state().pipeline.jobs.page_progress()
    body["pages"] = (pages or {}).get(record.id) if record.status == "pending" else None
    return body


def owns_conversation(conversation: dict[str, Any] | None) -> bool:
    """Conversations are their owner's alone (the anonymous caller of auth mode none owns
    those made before users existed)."""
    if conversation is None:
        return False
    principal = current()
    owner = "" if principal.via == "none" else principal.name
    return bool(conversation.get("owner", "") == owner)


@api.get("/documents")
def list_documents() -> ResponseReturnValue:
    registry = state().pipeline.registry
    records = [r for r in registry.list() if readable(r)]
    if current().reads_everything:
        counts = registry.counts()
    else:  # counted over what the caller may see, not the whole library
        counts = dict.fromkeys(registry.counts(), 0)
        for r in records:
            counts[r.status] = counts.get(r.status, 0) + 1
    pages = state().pipeline.jobs.page_progress()
    documents = [document_json(r, pages) for r in records]
    return jsonify({"documents": documents, "counts": counts})


@api.get("/documents/<document_id>")
def get_document(document_id: str) -> ResponseReturnValue:
    return jsonify(document_json(readable_document(document_id)))


# Formats a browser shows safely as they are; anything else is downloaded. HTML is never
# rendered: a document's scripts must not run with the app's origin.
_INLINE_TYPES = {
    ".pdf": "application/pdf",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".csv": "text/plain; charset=utf-8",
    ".png": "image/png",  # scans; never SVG, which can hold scripts
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
}


@api.get("/documents/<document_id>/file")
def document_file(document_id: str) -> ResponseReturnValue:
    """The original file of a document the registry knows (never a path from the client).
    PDFs open at a page with `#page=N` on the URL."""
    record = readable_document(document_id)
    path = Path(record.path)
    if path.is_symlink() or not path.is_file():
        raise ApiError(410, "file_gone", f"the file of document '{document_id}' is no longer there")
    name = document_json(record)["name"]
    inline = _INLINE_TYPES.get(path.suffix.lower())
    response: Response = send_file(
        path,
        mimetype=inline,
        as_attachment=inline is None,
        download_name=str(name),
        max_age=0,
    )
    response.headers["Content-Security-Policy"] = "sandbox"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@api.post("/documents/<document_id>/reindex")
def reindex_document(document_id: str) -> ResponseReturnValue:
    """Parse and embed the document again from its file (a retry after a failure)."""
    record = readable_document(document_id)
    require_ready()
    state().audit.record(current().actor, "document_reindex", document_id)
    if not state().reindex([record], "reindex"):
        raise ApiError(410, "file_gone", f"the file of document '{document_id}' is no longer there")
    return jsonify({"id": document_id, "status": "pending"}), 202


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
    collection = request.form.get("collection") or st.settings.default_collection
    if not is_collection_name(collection) or not can_read_collection(collection):
        raise ApiError(
            403, "collection_forbidden", f"you cannot add documents to collection {collection!r}"
        )
    # Server-chosen folder and prefix; the client's file name, reduced by secure_filename to
    # letters, digits, '_', '.' and '-' (no separator, no leading dot), is only a label.
    folder = st.settings.uploads_dir
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()
    # The stored name (and so the document) is per collection and content: the same bytes
    # uploaded to another collection are another document, never a takeover of this one.
    stored = hashlib.sha256(f"{collection}\0{digest}".encode()).hexdigest()
    target = folder / f"{stored[:16]}-{name}"
    if target.resolve().parent != folder.resolve():  # cannot happen after secure_filename
        raise ApiError(400, "invalid_file_name", "the file name is not acceptable")
    target.write_bytes(data)
    stat = target.stat()
    record = st.pipeline.registry.register(
        str(target.resolve()), collection, digest, stat.st_size, stat.st_mtime
    )
    st.submit(record)
    st.audit.record(
        current().actor, "document_upload", record.id, collection=collection, size=stat.st_size
    )
    # The stored file's name, never the server's path to it.
    return jsonify({"id": record.id, "status": record.status, "name": name}), 202


@api.delete("/documents/<document_id>")
def delete_document(document_id: str) -> ResponseReturnValue:
    """Remove the document from every index. Its file: an upload is deleted; a drop-folder
    file is moved to the trash folder first (else the next scan would index it again); a
    file elsewhere (`enclave ingest` of another folder) stays where it is."""
    st = state()
    record = readable_document(document_id)
    try:
        trashed = st.pipeline.move_to_trash(record, st.settings.trash_dir)
    except OSError as exc:
        raise ApiError(
            409,
            "file_not_movable",
            f"the file could not be moved out of the drop folder ({exc.strerror}); "
            "the document was not deleted",
        ) from None
    st.pipeline.delete(document_id)
    uploaded = Path(record.path)
    file = "kept"
    if trashed is not None:
        file = "trash"
    elif uploaded.parent.resolve() == st.settings.uploads_dir.resolve():
        uploaded.unlink(missing_ok=True)
        file = "removed"
    st.audit.record(current().actor, "document_delete", document_id, path=record.path, file=file)
    return jsonify({"id": document_id, "status": "deleted", "file": file})


@api.get("/health")
def health() -> ResponseReturnValue:
    """Public: only the status. A caller with a key or login gets the generation load (the
    pages' busy dot); with scope admin (or mode none's loopback caller) every detail: counts,
    the model, load errors."""
    st = state()
    body: dict[str, Any] = {}
    caller = optional_principal()
    admin = caller is not None and caller.allows("admin")
    if st.load_error:
        body["status"] = "error"
        if admin:
            body["error"] = st.load_error
        return jsonify(body), 503
    if not st.ready.is_set():
        body["status"] = "loading"
        return jsonify(body), 503
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
    return jsonify(body)


@api.get("/openapi.json")
def openapi() -> ResponseReturnValue:
    return jsonify(openapi_document())
