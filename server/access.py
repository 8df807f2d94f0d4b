"""Who may see which document: the one place an access rule goes once users exist.

Every route that reveals a document (the list, one document, its original file, re-indexing,
deletion) goes through `readable` / `readable_document`. There are no users yet, so every
document the registry holds (and has not deleted) is readable; when authentication lands, the
rule (e.g. the user's groups against the document's collection) is written here, once. Answer
sources come from retrieval, which would take the same rule as a collection filter."""

from __future__ import annotations

from ingest.registry import DocumentRecord
from server.errors import ApiError
from server.state import state


def readable(record: DocumentRecord) -> bool:
    """Whether the current request may see this document."""
    return record.status != "deleted"


def readable_document(document_id: str) -> DocumentRecord:
    """The document with that id if the request may see it, else 404 (not 403: a caller
    must not learn that a document it cannot read exists)."""
    record = state().pipeline.registry.get(document_id)
    if record is None or not readable(record):
        raise ApiError(404, "document_not_found", f"no document with id '{document_id}'")
    return record
