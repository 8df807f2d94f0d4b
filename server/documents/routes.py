"""The document library under /api/v1: list, read, upload, re-index and delete documents."""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from flask import Blueprint, Response, request, send_file
from flask.typing import ResponseReturnValue
from werkzeug.utils import secure_filename

from config.collection_names import is_collection_name
from ingest.loaders import SUPPORTED_SUFFIXES, LoadError, sniff_mismatch
from ingest.registry import DocumentRecord
from server.access import (
    can_read_collection,
    current,
    path_shower,
    readable,
    readable_document,
)
from server.common import require_ready
from server.contract import File, route
from server.documents.schemas import Deleted, Document, DocumentList, Pending, Upload, Uploaded
from server.errors import ApiError
from server.state import state

documents_api = Blueprint("documents", __name__, url_prefix="/api/v1")


_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{16}-")
_NAME_CHARS = 200  # of the client's file name (ASCII after secure_filename), suffix kept


def document_json(
    record: DocumentRecord,
    pages: dict[str, dict[str, int]] | None = None,
    shown: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """A document as the API shows it: the registry's fields (its path as the caller may see
    it), its file name, when it was last indexed and, while it is being read, its pages done
    ({done, total}, else null). `shown`: the caller's `path_shower`, when taken once for many."""
    body = record.to_dict()
    stored = Path(record.path).name
    name = stored
    if Path(record.path).parent == state().settings.uploads_dir.resolve():
        name = _UPLOAD_PREFIX.sub("", stored)  # uploads are stored as <16 hex digits>-<name>
        if record.error:
            body["error"] = record.error.replace(stored, name)
    path = (shown or path_shower())(record.path)
    body["path"] = path
    error = body.get("error")
    if isinstance(error, str) and path != record.path:
        body["error"] = error.replace(record.path, path)
    body["name"] = name
    body["indexed_at"] = record.updated_at if record.status == "indexed" else None
    if pages is None and record.status == "pending":
        pages = state().pipeline.jobs.page_progress()
    body["pages"] = (pages or {}).get(record.id) if record.status == "pending" else None
    return body


@route(documents_api, "/documents", scope="ask", responses={200: DocumentList})
def list_documents() -> DocumentList:
    """List documents and their indexing status."""
    registry = state().pipeline.registry
    records = [r for r in registry.list() if readable(r)]
    if current().reads_everything:
        counts = registry.counts()
    else:  # counted over what the caller may see, not the whole library
        counts = dict.fromkeys(registry.counts(), 0)
        for r in records:
            counts[r.status] = counts.get(r.status, 0) + 1
    pages = state().pipeline.jobs.page_progress()
    shown = path_shower()
    documents = [document_json(r, pages, shown) for r in records]
    return DocumentList.model_validate({"documents": documents, "counts": counts})


@route(
    documents_api, "/documents/<document_id>", scope="ask", responses={200: Document}, errors=(404,)
)
def get_document(document_id: str) -> Document:
    """One document's status."""
    return Document.model_validate(document_json(readable_document(document_id)))


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


@route(
    documents_api,
    "/documents/<document_id>/file",
    scope="ask",
    responses={200: File()},
    errors=(404, 410),
)
def get_document_file(document_id: str) -> ResponseReturnValue:
    """The document's original file (PDF, text, Markdown and CSV shown inline, other formats
    downloaded); add `#page=N` to open a PDF at a page.

    Only the file of a document the registry knows (never a path from the client)."""
    record = readable_document(document_id)
    path = Path(record.path)
    name = str(document_json(record)["name"])
    inline = _INLINE_TYPES.get(path.suffix.lower())
    try:  # opened, then checked: a file or folder swapped for a link meanwhile serves nothing
        file = state().pipeline.open_file(path)
    except LoadError:
        raise ApiError(
            410, "file_gone", f"the file of document '{document_id}' is no longer there"
        ) from None
    try:
        # Served from the open file, never by name again. Werkzeug learns no size, date or
        # ETag from a file object: they are given here, for ranges and revalidation.
        found = os.fstat(file.fileno())
        response: Response = send_file(
            file,
            mimetype=inline,
            as_attachment=inline is None,
            download_name=name,
            max_age=0,
            conditional=False,
            etag=f"{found.st_mtime}-{found.st_size}-{zlib.adler32(record.path.encode())}",
            last_modified=found.st_mtime,
        )
        response.content_length = found.st_size
        response.make_conditional(request, accept_ranges=True, complete_length=found.st_size)
    except BaseException:
        file.close()
        raise
    response.headers["Content-Security-Policy"] = "sandbox"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@route(
    documents_api,
    "/documents/<document_id>/reindex",
    "POST",
    scope="ingest",
    responses={202: Pending},
    errors=(404, 410, 503),
)
def reindex_document(document_id: str) -> tuple[Pending, int]:
    """Parse and index the document again from its file (retry a failure)."""
    record = readable_document(document_id)
    require_ready()
    state().audit.record(current().actor, "document_reindex", document_id)
    if not state().reindex([record], "reindex"):
        raise ApiError(410, "file_gone", f"the file of document '{document_id}' is no longer there")
    return Pending(id=document_id, status="pending"), 202


@route(
    documents_api,
    "/documents",
    "POST",
    scope="ingest",
    rate_limited=True,
    upload=True,
    form=Upload,
    responses={202: Uploaded},
    errors=(400, 413, 415, 503),
)
def upload_document() -> tuple[Uploaded, int]:
    """Upload a document; it is indexed in the background."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise ApiError(400, "missing_file", "send the document as multipart form field 'file'")
    name = secure_filename(upload.filename)
    suffix = Path(name).suffix.lower()
    if len(name) > _NAME_CHARS:  # the stored name must fit the file system's 255 bytes
        name = name[: _NAME_CHARS - len(suffix)] + suffix
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
    return Uploaded(id=record.id, status=record.status, name=name), 202


@route(
    documents_api,
    "/documents/<document_id>",
    "DELETE",
    scope="ingest",
    responses={200: Deleted},
    errors=(404, 409),
)
def delete_document(document_id: str) -> Deleted:
    """Remove a document and its chunks from every index.

    Its file: an upload is deleted (file: removed); a drop-folder file is moved to the trash
    folder first, else the next scan would index it again (file: trash); a file elsewhere
    (`enclave ingest` of another folder) stays where it is (file: kept)."""
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
    file: Literal["removed", "trash", "kept"] = "kept"
    if trashed is not None:
        file = "trash"
    elif uploaded.parent.resolve() == st.settings.uploads_dir.resolve():
        uploaded.unlink(missing_ok=True)
        file = "removed"
    st.audit.record(current().actor, "document_delete", document_id, path=record.path, file=file)
    return Deleted(id=document_id, status="deleted", file=file)
