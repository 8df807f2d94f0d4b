"""`enclave users|groups|keys|audit`: identities and the audit log, in the data dir. Every
change is written to the audit log, by `cli:<OS user>`."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from typing import Any

import click

from cli.common import ROLES, enclave_command
from config.settings import Settings, SettingsError
from retriever.audit import AuditLog
from service.identity import IdentityError, IdentityStore, Scope

users = click.Group("users", help="users: add, list, disable, enable, role, password")
groups = click.Group("groups", help="groups: add, list, remove, members")
keys = click.Group("keys", help="API keys: create, list, revoke")
audit = click.Group("audit", help="the audit log")


class Admin:
    """The stores a change touches, and who makes it."""

    def __init__(self, settings: Settings) -> None:
        self.store = IdentityStore(settings.database_for(settings.identity_path))
        self.audit = AuditLog(
            settings.database_for(settings.audit_path), settings.audit_retention_days
        )
        self.name = f"cli:{_os_user()}"

    def record(self, action: str, target: str, **detail: Any) -> None:
        self.audit.record(self.name, action, target, **detail)


@contextmanager
def _admin(settings: Settings, command: str) -> Iterator[Admin]:
    """An identity error ends the command with 1 and `enclave <command>: <reason>`."""
    admin = Admin(settings)
    try:
        yield admin
    except IdentityError as exc:
        print(f"enclave {command}: {exc}", file=sys.stderr)
        raise click.exceptions.Exit(1) from None
    finally:
        admin.store.close()
        admin.audit.close()


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def _read_password() -> str:
    password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise SettingsError("a password needs at least 8 characters")
    return password


def expiry(text: str | None) -> float | None:
    """`--expires`: a lifetime (30d, 12h, 90m) or a date (YYYY-MM-DD, UTC) as a timestamp."""
    if not text:
        return None
    import time
    from datetime import datetime

    match = re.fullmatch(r"(\d+)([dhm])", text.strip())
    if match:
        seconds = {"d": 86400, "h": 3600, "m": 60}[match.group(2)]
        return time.time() + int(match.group(1)) * seconds
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise SettingsError(f"--expires {text!r}: use 30d, 12h, 90m or YYYY-MM-DD") from None


# users


@enclave_command("add", "add a user", parent=users)
@click.argument("name")
@click.option("--role", type=ROLES, default="ask", show_default=True)
@click.option("--group", "member_of", multiple=True, help="add to this group (repeat)")
@click.option("--password-stdin", is_flag=True, help="read a UI password from stdin")
def user_add(
    settings: Settings, name: str, role: Scope, member_of: tuple[str, ...], password_stdin: bool
) -> int:
    with _admin(settings, "users add") as admin:
        password = _read_password() if password_stdin else None
        user = admin.store.add_user(name, role, password)
        for group in member_of:
            if group not in admin.store.groups():
                admin.store.add_group(group)
            admin.store.add_member(group, name)
        admin.record("user_add", name, role=role, groups=list(member_of))
        print(f"user {user.name} added (role {user.role})")
    return 0


@enclave_command("list", "list users", parent=users)
@click.option("--json", "as_json", is_flag=True)
def user_list(settings: Settings, as_json: bool) -> int:
    with _admin(settings, "users list") as admin:
        found = [u.to_dict() for u in admin.store.users()]
    if as_json:
        print(json.dumps(found))
        return 0
    for u in found:
        state = "disabled" if u["disabled"] else "enabled"
        print(f"{u['name']:24} {u['role']:7} {state:8} {','.join(u['groups'])}")
    return 0


def _switch(action: str) -> click.Command:
    @enclave_command(action, f"{action} a user", parent=users)
    @click.argument("name")
    def switch(settings: Settings, name: str) -> int:
        with _admin(settings, f"users {action}") as admin:
            admin.store.set_disabled(name, action == "disable")
            admin.record(f"user_{action}", name)
            print(f"user {name} {action}d")
        return 0

    return switch


user_disable, user_enable = _switch("disable"), _switch("enable")


@enclave_command("role", "set a user's role", parent=users)
@click.argument("name")
@click.argument("role", type=ROLES)
def user_role(settings: Settings, name: str, role: Scope) -> int:
    with _admin(settings, "users role") as admin:
        admin.store.set_role(name, role)
        admin.record("user_role", name, role=role)
        print(f"user {name} now has role {role}")
    return 0


@enclave_command("password", "set a password (from stdin)", parent=users)
@click.argument("name")
def user_password(settings: Settings, name: str) -> int:
    with _admin(settings, "users password") as admin:
        admin.store.set_password(name, _read_password())
        admin.record("user_password", name)
        print(f"password of {name} set")
    return 0


# groups


def _group_change(action: str, help: str, change: Callable[..., None], member: bool) -> None:
    """`groups add|remove NAME` and `groups add-member|remove-member NAME USER`."""

    def run(settings: Settings, name: str, user: str | None = None) -> int:
        with _admin(settings, f"groups {action}") as admin:
            change(admin.store, name, *([user] if member else []))
            admin.record(f"group_{action.replace('-', '_')}", name, user=user)
            print(f"group {name}: {action} done")
        return 0

    if member:
        click.argument("user")(run)
    click.argument("name")(run)  # the last applied is the first argument, as with decorators
    enclave_command(action, help, parent=groups)(run)


_group_change("add", "add a group", IdentityStore.add_group, member=False)
_group_change("remove", "remove a group", IdentityStore.remove_group, member=False)
_group_change("add-member", "add-member (group, user)", IdentityStore.add_member, member=True)
_group_change(
    "remove-member", "remove-member (group, user)", IdentityStore.remove_member, member=True
)


@enclave_command("list", "groups with their members", parent=groups)
@click.option("--json", "as_json", is_flag=True)
def group_list(settings: Settings, as_json: bool) -> int:
    with _admin(settings, "groups list") as admin:
        found = admin.store.groups()
    if as_json:
        print(json.dumps(found))
    else:
        for name, members in found.items():
            print(f"{name:24} {','.join(members)}")
    return 0


# keys


@enclave_command("create", "create a key (shown once)", parent=keys)
@click.option("--user", required=True)
@click.option("--scope", type=ROLES, default="ask", show_default=True)
@click.option("--expires", help="lifetime: 30d, 12h, 90m, or a date YYYY-MM-DD")
@click.option("--json", "as_json", is_flag=True)
def key_create(
    settings: Settings, user: str, scope: Scope, expires: str | None, as_json: bool
) -> int:
    with _admin(settings, "keys create") as admin:
        key, secret = admin.store.create_key(user, scope, expiry(expires))
        admin.record("key_create", key.id, user=user, scope=scope)
    if as_json:
        print(json.dumps({**key.to_dict(), "key": secret}))
    else:
        print(secret)
        print(f"key {key.id} for {user}, scope {scope}: shown once, store it now", file=sys.stderr)
    return 0


@enclave_command("list", "keys, without their secret", parent=keys)
@click.option("--user")
@click.option("--json", "as_json", is_flag=True)
def key_list(settings: Settings, user: str | None, as_json: bool) -> int:
    with _admin(settings, "keys list") as admin:
        found = [k.to_dict() for k in admin.store.keys(user)]
    if as_json:
        print(json.dumps(found))
        return 0
    for k in found:
        state = "active" if k["active"] else ("revoked" if k["revoked_at"] else "expired")
        print(f"{k['id']:14} {k['user']:24} {k['scope']:7} {state}")
    return 0


@enclave_command("revoke", "revoke a key by id", parent=keys)
@click.argument("key_id")
def key_revoke(settings: Settings, key_id: str) -> int:
    with _admin(settings, "keys revoke") as admin:
        admin.store.revoke_key(key_id)
        admin.record("key_revoke", key_id)
        print(f"key {key_id} revoked")
    return 0


# audit


@enclave_command("tail", "the newest entries", parent=audit)
@click.option("-n", "--lines", type=int, default=20, show_default=True)
@click.option("--action", "only_action", help="only this action (ask, login, ...)")
@click.option("--actor", help="only entries whose actor starts with this")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def audit_tail(
    settings: Settings, lines: int, only_action: str | None, actor: str | None, as_json: bool
) -> int:
    log = AuditLog(settings.database_for(settings.audit_path), settings.audit_retention_days)
    try:
        entries = log.tail(lines, only_action, actor)
    finally:
        log.close()
    for entry in entries:
        e = entry.to_dict()
        if as_json:
            print(json.dumps(e))
        else:
            print(f"{e['at']} {e['actor']} {e['action']} {e['target']} {json.dumps(e['detail'])}")
    return 0
