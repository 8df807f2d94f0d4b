"""Users, groups and API keys, kept in the data directory (`identity.sqlite3`).

- Passwords are stored as scrypt hashes (salted, memory-hard; `hashlib.scrypt`).
- An API key is `enk_<key id>_<secret>`: the id (public, for lookup and revocation) and 256
  random bits of secret. Only the SHA-256 of the secret is stored (a high-entropy secret needs
  no slow hash); it is compared in constant time. The whole key is shown once, at creation.
- A UI login session carries its user's session epoch; logout, a password change and disabling
  the user bump it, which ends every older session of that user at its next request.
- Scopes are ordered: `ask` (questions, own conversations, reading documents) < `ingest`
  (uploads, re-indexing, deletion) < `admin` (managing, every collection, audit, feedback).
  A user's role is the highest scope its keys and its UI login may have.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

from retriever.database import SQLStore, StoreTarget

Scope = Literal["ask", "ingest", "admin"]
SCOPES: tuple[Scope, ...] = ("ask", "ingest", "admin")
KEY_PREFIX = "enk_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
# scrypt cost: 16 MiB of memory and ~50 ms per check on a laptop core.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL DEFAULT 'ask',
    password_hash TEXT NOT NULL DEFAULT '',
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS session_epochs (
    user_name TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS memberships (
    user_name TEXT NOT NULL,
    group_name TEXT NOT NULL,
    PRIMARY KEY (user_name, group_name)
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    scope TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    last_used_at REAL
);
"""


class IdentityError(ValueError):
    """A request the store refuses (unknown user, bad name, ...); the message says why."""


def scope_allows(have: str, need: str) -> bool:
    return SCOPES.index(cast(Scope, have)) >= SCOPES.index(cast(Scope, need))


def check_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise IdentityError(
            f"{kind} name {name!r}: use letters, digits, '.', '_', '@' or '-' (at most 128)"
        )
    return name


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    cost = f"{_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}"
    return f"scrypt${cost}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    expected = base64.b64decode(digest)
    actual = hashlib.scrypt(
        password.encode(),
        salt=base64.b64decode(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=len(expected),
    )
    return hmac.compare_digest(actual, expected)


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    name: str
    role: Scope
    disabled: bool
    groups: frozenset[str]
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "disabled": self.disabled,
            "groups": sorted(self.groups),
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class ApiKey:
    id: str
    user: str
    scope: Scope
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None

    def active(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the secret, which is never stored."""
        return {
            "id": self.id,
            "user": self.user,
            "scope": self.scope,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
            "active": self.active(),
        }


class IdentityStore(SQLStore):
    def __init__(self, target: StoreTarget) -> None:
        super().__init__(target, _SCHEMA)

    # -- users ----------------------------------------------------------------------------

    def add_user(self, name: str, role: Scope = "ask", password: str | None = None) -> User:
        check_name("user", name)
        if role not in SCOPES:
            raise IdentityError(f"role must be one of {', '.join(SCOPES)}")
        if self.user(name) is not None:
            raise IdentityError(f"user {name!r} already exists")
        with self._tx() as db:
            db.execute(
                "INSERT INTO users(name, role, password_hash, disabled, created_at) "
                "VALUES (?, ?, ?, 0, ?)",
                (name, role, hash_password(password) if password else "", time.time()),
            )
        return self._require_user(name)

    def user(self, name: str) -> User | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, role, disabled, created_at FROM users WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                return None
            groups = self._db.execute(
                "SELECT group_name FROM memberships WHERE user_name = ?", (name,)
            ).fetchall()
        return User(row[0], row[1], bool(row[2]), frozenset(g[0] for g in groups), float(row[3]))

    def _require_user(self, name: str) -> User:
        user = self.user(name)
        if user is None:
            raise IdentityError(f"no user {name!r}")
        return user

    def users(self) -> list[User]:
        with self._lock:
            names = [r[0] for r in self._db.execute("SELECT name FROM users ORDER BY name")]
        return [u for u in (self.user(n) for n in names) if u is not None]

    def set_disabled(self, name: str, disabled: bool = True) -> User:
        self._require_user(name)
        with self._tx() as db:
            db.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name))
        if disabled:
            self.bump_session_epoch(name)
        return self._require_user(name)

    def session_epoch(self, name: str) -> int:
        """The epoch a login session of `name` must carry to be valid."""
        with self._lock:
            row = self._db.execute(
                "SELECT epoch FROM session_epochs WHERE user_name = ?", (name,)
            ).fetchone()
        return int(row[0]) if row else 0

    def bump_session_epoch(self, name: str) -> None:
        """End every login session `name` has now (logout, password change, disabling)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO session_epochs(user_name, epoch) VALUES (?, 1) "
                "ON CONFLICT (user_name) DO UPDATE SET epoch = session_epochs.epoch + 1",
                (name,),
            )

    def set_role(self, name: str, role: Scope) -> User:
        if role not in SCOPES:
            raise IdentityError(f"role must be one of {', '.join(SCOPES)}")
        self._require_user(name)
        with self._tx() as db:
            db.execute("UPDATE users SET role = ? WHERE name = ?", (role, name))
        return self._require_user(name)

    def set_password(self, name: str, password: str) -> None:
        if len(password) < 8:
            raise IdentityError("a password needs at least 8 characters")
        self._require_user(name)
        with self._tx() as db:
            db.execute(
                "UPDATE users SET password_hash = ? WHERE name = ?", (hash_password(password), name)
            )
        self.bump_session_epoch(name)

    def check_password(self, name: str, password: str) -> User | None:
        """The user if the password is theirs and they are enabled; else None. The hash is
        computed even for an unknown user, so timing does not tell which names exist."""
        with self._lock:
            row = self._db.execute(
                "SELECT password_hash FROM users WHERE name = ?", (name,)
            ).fetchone()
        stored = row[0] if row and row[0] else _DUMMY_HASH
        ok = verify_password(password, stored) and row is not None and bool(row[0])
        user = self.user(name) if ok else None
        return user if user is not None and not user.disabled else None

    # -- groups ---------------------------------------------------------------------------

    def add_group(self, name: str) -> None:
        check_name("group", name)
        if name in self.groups():
            raise IdentityError(f"group {name!r} already exists")
        with self._tx() as db:
            db.execute("INSERT INTO groups(name, created_at) VALUES (?, ?)", (name, time.time()))

    def remove_group(self, name: str) -> None:
        if name not in self.groups():
            raise IdentityError(f"no group {name!r}")
        with self._tx() as db:
            db.execute("DELETE FROM memberships WHERE group_name = ?", (name,))
            db.execute("DELETE FROM groups WHERE name = ?", (name,))

    def groups(self) -> dict[str, list[str]]:
        """Each group with its members."""
        with self._lock:
            names = [r[0] for r in self._db.execute("SELECT name FROM groups ORDER BY name")]
            rows = self._db.execute(
                "SELECT group_name, user_name FROM memberships ORDER BY user_name"
            ).fetchall()
        found: dict[str, list[str]] = {n: [] for n in names}
        for group, user in rows:
            found.setdefault(group, []).append(user)
        return found

    def add_member(self, group: str, user: str) -> None:
        self._require_user(user)
        if group not in self.groups():
            raise IdentityError(f"no group {group!r} (create it with `enclave groups add`)")
        with self._tx() as db:
            exists = db.execute(
                "SELECT 1 FROM memberships WHERE user_name = ? AND group_name = ?", (user, group)
            ).fetchone()
            if not exists:
                db.execute(
                    "INSERT INTO memberships(user_name, group_name) VALUES (?, ?)", (user, group)
                )

    def remove_member(self, group: str, user: str) -> None:
        with self._tx() as db:
            db.execute(
                "DELETE FROM memberships WHERE user_name = ? AND group_name = ?", (user, group)
            )

    def set_members(self, group: str, users: list[str]) -> None:
        """Replace a group's members (one transaction: readers see the old or the new set)."""
        with self._tx() as db:
            db.execute("DELETE FROM memberships WHERE group_name = ?", (group,))
            for user in users:
                db.execute(
                    "INSERT INTO memberships(user_name, group_name) VALUES (?, ?)", (user, group)
                )

    # -- API keys -------------------------------------------------------------------------

    def create_key(
        self, user: str, scope: Scope, expires_at: float | None = None
    ) -> tuple[ApiKey, str]:
        """A new key for `user`; returns it and its secret form, which is not kept."""
        owner = self._require_user(user)
        if scope not in SCOPES:
            raise IdentityError(f"scope must be one of {', '.join(SCOPES)}")
        if not scope_allows(owner.role, scope):
            raise IdentityError(
                f"user {user!r} has role {owner.role!r}: a key cannot have scope {scope!r} "
                "(raise the role with `enclave users role`)"
            )
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)  # 256 bits
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys(id, user_name, scope, secret_hash, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, user, scope, _secret_hash(secret), time.time(), expires_at),
            )
        key = self.key(key_id)
        assert key is not None
        return key, f"{KEY_PREFIX}{key_id}_{secret}"

    def key(self, key_id: str) -> ApiKey | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, user_name, scope, created_at, expires_at, revoked_at, last_used_at "
                "FROM api_keys WHERE id = ?",
                (key_id,),
            ).fetchone()
        return ApiKey(*row) if row else None

    def keys(self, user: str | None = None) -> list[ApiKey]:
        sql = (
            "SELECT id, user_name, scope, created_at, expires_at, revoked_at, last_used_at "
            "FROM api_keys"
        )
        params: tuple[object, ...] = ()
        if user:
            sql += " WHERE user_name = ?"
            params = (user,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY created_at", params).fetchall()
        return [ApiKey(*r) for r in rows]

    def revoke_key(self, key_id: str) -> ApiKey:
        if self.key(key_id) is None:
            raise IdentityError(f"no key {key_id!r}")
        with self._tx() as db:
            db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
        key = self.key(key_id)
        assert key is not None
        return key

    def authenticate_key(self, presented: str) -> ApiKey | None:
        """The active key `presented` is, else None (malformed, unknown, wrong secret,
        revoked or expired)."""
        if not presented.startswith(KEY_PREFIX):
            return None
        key_id, sep, secret = presented[len(KEY_PREFIX) :].partition("_")
        if not sep or not key_id or not secret:
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT secret_hash FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
        stored = row[0] if row else _secret_hash(secrets.token_urlsafe(8))
        if not hmac.compare_digest(stored, _secret_hash(secret)) or row is None:
            return None
        key = self.key(key_id)
        if key is None or not key.active():
            return None
        with self._lock:
            self._db.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?", (time.time(), key_id)
            )
        return key


_DUMMY_HASH = hash_password(secrets.token_urlsafe(8))
