"""What a collection may be called: one rule for the settings (`default_collection`), the
inbox (its subfolders are collections), uploads (`collection` of POST /api/v1/documents) and
the permission rule (a collection's access file is read from its folder).

A name is also a folder (inbox/<name>, trash/<name>, quarantine/<name>) and part of an
upload's stored file name, so it is kept to plain ASCII that every file system and URL
takes as it is. This module imports nothing of the project: the settings use it too."""

from __future__ import annotations

import re

MAX_COLLECTION_CHARS = 128
COLLECTION_RULE = (
    f"use letters, digits, '.', '_' or '-' (at most {MAX_COLLECTION_CHARS}, "
    "the first a letter or digit)"
)
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_COLLECTION_CHARS - 1}}}")


def is_collection_name(name: object) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def check_collection_name(name: str) -> str:
    """`name` if it may name a collection, else ValueError saying what a name may be."""
    if not is_collection_name(name):
        raise ValueError(f"{name!r} cannot name a collection: {COLLECTION_RULE}")
    return name
