"""Who may read what: the one place the permission rule is written.

A caller (`Principal`, set on the request by `server/auth.py`) reads a collection (an inbox
subfolder) when one of its groups is mapped to it, by an access file in the collection's folder
(`inbox/<collection>/.enclave-access`: group names, one per line or comma-separated; `#`
comments) or else by the `collection_groups` setting. A collection with no mapping is read by
`unmapped_collections` (admins only, by default). Admins (scope `admin`) and the anonymous
caller of auth mode `none` (loopback only) read every collection.

The rule is evaluated on every request from the files, the identity store and the registry as
they are then: a changed mapping or membership takes effect on the next request.

It is applied as: the collection filter of every retrieval (inside the Chroma `where` and the
FTS5 SQL, `readable_collections`), and `readable` / `readable_document` for the document list,
one document, its file, re-indexing and deletion; conversations are the caller's own, and their
stored answers are shown only while every cited document is still readable
(`visible_answer`). A reader sees a document's path relative to the inbox, never the server's
folders (`path_shower`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import g, has_request_context

from ingest.registry import DocumentRecord
from server.errors import ApiError
from server.state import state
from service.permissions import CollectionAccess, Principal


def current() -> Principal:
    """The caller of this request; outside a request (CLI, tests of the services) or before
    authentication ran, nobody: reads nothing."""
    if has_request_context():
        principal = g.get("principal")
        if isinstance(principal, Principal):
            return principal
    return Principal("nobody", "ask")


def collection_access() -> CollectionAccess:
    return state().access


def can_read_collection(collection: str, principal: Principal | None = None) -> bool:
    return collection_access().can_read(principal or current(), collection)


def readable_collections(requested: list[str] | None = None) -> list[str] | None:
    """The collection filter for a retrieval by the current caller: None (no filter) for
    a caller who reads everything and asked for no collection; else the readable ones among
    those asked for (or among all known ones). An empty list finds nothing."""
    principal = current()
    access = collection_access()
    if principal.reads_everything:
        return requested
    registry = state().pipeline.registry
    known = access.known_collections(registry.collections())
    allowed = sorted(c for c in known if access.can_read(principal, c))
    if requested is None:
        return allowed
    return [c for c in requested if c in allowed]


def readable(record: DocumentRecord) -> bool:
    """Whether the current caller may see this document."""
    return record.status != "deleted" and can_read_collection(record.collection)


def readable_document(document_id: str) -> DocumentRecord:
    """The document with that id if the caller may see it, else 404 (not 403: a caller
    must not learn that a document it cannot read exists)."""
    record = state().pipeline.registry.get(document_id)
    if record is None or not readable(record):
        raise ApiError(404, "document_not_found", f"no document with id '{document_id}'")
    return record


def require_scope(scope: str) -> None:
    if not current().allows(scope):
        raise ApiError(403, "forbidden", f"this needs a key or login with scope '{scope}'")


def path_shower() -> Callable[[str], str]:
    """How the current caller sees a document's path, bound now (a stream is sent after its
    request): whole to a caller who reads every collection (an administrator); to a reader,
    relative to the inbox ("hr/leave.md"), an upload or any other file by its name only. The
    server's own folders are nothing a reader needs, and they map its disks for anyone
    probing it."""
    if current().reads_everything:
        return lambda path: path
    settings = state().settings
    inbox = settings.inbox_dir.resolve()

    def shown(path: str) -> str:
        file = Path(path)
        if not file.is_absolute():
            return path  # already shown: a stream's sources, then its answer, are the same
        if file.is_relative_to(inbox):
            return file.relative_to(inbox).as_posix()
        return file.name

    return shown


def escalation_shower() -> Callable[[dict[str, Any] | None], dict[str, Any] | None]:
    """How the current caller sees which larger model answered, bound now: the model and the
    reason; the endpoint's address only to a caller who reads every collection (an
    administrator). The address maps the network behind the server for anyone asking."""
    if current().reads_everything:
        return lambda escalated: escalated
    return lambda escalated: (
        None if escalated is None else {k: v for k, v in escalated.items() if k != "endpoint"}
    )


HIDDEN_ANSWER = "(hidden: this answer cites documents you can no longer read)"


def visible_answer(message: dict[str, Any]) -> dict[str, Any]:
    """A stored conversation message as the caller may see it now: an answer that cites a
    document the caller can no longer read is replaced by a note, its sources dropped."""
    answer = message.get("answer")
    if not isinstance(answer, dict) or current().reads_everything:
        return message
    registry = state().pipeline.registry
    for source in answer.get("sources") or []:
        record = registry.get(str(source.get("document_id", "")))
        if record is None or not can_read_collection(record.collection):
            hidden = {**answer, "answer": HIDDEN_ANSWER, "sources": [], "supports": []}
            hidden["direct_answer"] = None
            hidden["citations"] = []
            return {**message, "content": HIDDEN_ANSWER, "answer": hidden}
    shown = path_shower()  # an answer stored before paths were shown so, or an admin's
    sources = [{**s, "path": shown(str(s.get("path", "")))} for s in answer.get("sources") or []]
    escalated = escalation_shower()(answer.get("escalated"))
    return {**message, "answer": {**answer, "sources": sources, "escalated": escalated}}
