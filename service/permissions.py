"""The permission rule itself, without Flask: who a caller is (`Principal`) and which
collections its groups may read (`CollectionAccess`, from the access files and settings).
server/access.py applies it to the current request; server/state.py holds one
`CollectionAccess` per app. The rule is described in server/access.py."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from config.collection_names import is_collection_name
from config.settings import Settings
from service.identity import Scope, scope_allows

ACCESS_FILE = ".enclave-access"


@dataclass(frozen=True)
class Principal:
    """The caller of a request."""

    name: str
    scope: Scope
    groups: frozenset[str] = field(default_factory=frozenset)
    via: str = "none"  # none | api_key | session | trusted_header
    key_id: str | None = None

    @property
    def reads_everything(self) -> bool:
        return self.scope == "admin"

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        return f"{self.name} (key {self.key_id})" if self.key_id else self.name

    def allows(self, scope: str) -> bool:
        return scope_allows(self.scope, scope)


class CollectionAccess:
    """Collection -> groups, from access files (re-read when they change) and settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._files: dict[str, tuple[tuple[int, int], frozenset[str]]] = {}

    def groups_for(self, collection: str) -> frozenset[str] | None:
        """The groups that may read `collection`; None when nothing maps it."""
        if not is_collection_name(collection):  # no access file outside its folder
            return frozenset()
        path = self.settings.inbox_dir / collection / ACCESS_FILE
        try:
            stat = path.stat()
        except OSError:
            self._files.pop(collection, None)
        else:
            stamp = (stat.st_mtime_ns, stat.st_size)
            cached = self._files.get(collection)
            if cached is None or cached[0] != stamp:
                cached = (stamp, _parse_access_file(path))
                self._files[collection] = cached
            return cached[1]
        mapped = self.settings.collection_groups.get(collection)
        return frozenset(mapped) if mapped is not None else None

    def can_read(self, principal: Principal, collection: str) -> bool:
        if principal.reads_everything:
            return True
        groups = self.groups_for(collection)
        if groups is None:
            return self.settings.unmapped_collections == "everyone"
        return bool(groups & principal.groups)

    def known_collections(self, registry_collections: Iterable[str]) -> set[str]:
        known = set(registry_collections) | set(self.settings.collection_groups)
        inbox = self.settings.inbox_dir
        if inbox.is_dir():
            folders = (e.name for e in os.scandir(inbox) if e.is_dir())
            known |= {name for name in folders if is_collection_name(name)}
        return known


def _parse_access_file(path: Path) -> frozenset[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()  # unreadable: nobody but admins
    groups: set[str] = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        groups |= {g.strip() for g in line.replace(",", " ").split() if g.strip()}
    return frozenset(groups)
