"""`enclave ingest` while `enclave serve` holds the data dir: upload the files to the server."""

from __future__ import annotations

import json
import mimetypes
import os
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from config.auth import API_KEY_ENV
from config.settings import Settings


def _multipart(path: Path, collection: str | None = None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    field = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="collection"\r\n\r\n{collection}\r\n'
        if collection
        else ""
    )
    head = (
        f'{field}--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{path.name}"\r\nContent-Type: {kind}\r\n\r\n'
    ).encode()
    body = head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def auth_headers() -> dict[str, str]:
    """The CLI's credentials for a running server (one with `auth_mode = "api_key"`): a key
    from `enclave keys create`, in ENCLAVE_API_KEY. Nothing when unset."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    return {"Authorization": f"Bearer {key}"} if key else {}


def upload_files(
    base_url: str,
    files: list[Path],
    json_summary: bool = False,
    settings: Settings | None = None,
) -> int:
    """Upload `files` to the server, each to the collection its path implies (as a local
    run would index it: the default collection outside the inbox). Files inside the
    server's inbox are skipped: the server indexes those itself, into their collection."""
    from ingest.pipeline import absolute, collection_of  # the whole pipeline: not for --help

    accepted, refused, skipped = [], [], []
    for path in files:
        collection = None
        if settings is not None:
            if absolute(path).is_relative_to(absolute(settings.inbox_dir)):
                skipped.append(str(path))
                continue
            collection = collection_of(path, settings.inbox_dir, settings.default_collection)
        body, content_type = _multipart(path, collection)
        request = urllib.request.Request(
            f"{base_url}/api/v1/documents",
            data=body,
            method="POST",
            headers={"Content-Type": content_type, **auth_headers()},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                accepted.append({"path": str(path), "id": json.load(response)["id"]})
        except urllib.error.HTTPError as exc:
            message = json.loads(exc.read() or b"{}").get("error", {}).get("message", str(exc))
            refused.append({"path": str(path), "error": message})
        except urllib.error.URLError as exc:
            refused.append({"path": str(path), "error": f"server unreachable: {exc.reason}"})
    for item in refused:
        print(f"refused: {item['path']}: {item['error']}")
    for skip in skipped:
        print(f"skipped: {skip}: in the server's drop folder, which it indexes itself")
    print(
        f"{len(accepted)} files handed to the server (indexing in the background; "
        f"`enclave status` shows progress), {len(refused)} refused, {len(skipped)} skipped"
    )
    if json_summary:
        summary = {"handed_off": len(accepted), "refused": refused, "skipped": skipped}
        print(json.dumps({**summary, "documents": accepted}))
    return 1 if refused else 0
