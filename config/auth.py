"""Who is calling and what they may read: sign-in mode, trusted proxies, collection -> groups,
rate and login limits (server/auth.py, server/permissions.py, server/access.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from config.section import Section, comma_separated

# The environment variable a client process (`enclave ingest`'s hand-off to a running server,
# `enclave mcp`) reads its API key from.
API_KEY_ENV = "ENCLAVE_API_KEY"


class AuthSettings(Section):
    model_config = ConfigDict(title="Authentication and permissions")

    auth_mode: Literal["none", "api_key", "trusted_header"] = Field(
        "none",
        description="none: no login (loopback only); api_key: Bearer keys and UI passwords; "
        "trusted_header: the user name from a reverse proxy's header.",
    )
    trusted_header: str = Field(
        "X-Forwarded-User", description="Header naming the user, with trusted_header."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses trusted_header and X-Forwarded-Proto/-Host/-For are accepted from.",
    )
    collection_groups: dict[str, list[str]] = Field(
        default_factory=dict, description="Collection -> groups that may read it."
    )
    unmapped_collections: Literal["admins", "everyone"] = Field(
        "admins", description="Who reads a collection with no groups mapped."
    )
    rate_limit_per_minute: int = Field(
        60, ge=0, le=100000, description="Questions and uploads per key or user; 0: no limit."
    )
    session_hours: float = Field(12.0, gt=0, le=24 * 90, description="UI login lifetime.")
    login_failures_allowed: int = Field(
        5,
        ge=1,
        le=1000,
        description="Failed logins per address or user name before each try must wait longer.",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _trusted_proxies(cls, value: Any) -> Any:
        return comma_separated(value)

    @field_validator("collection_groups", mode="before")
    @classmethod
    def _collection_map(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment: "hr=hr-staff,admins;eng=engineering"
            mapping: dict[str, list[str]] = {}
            for entry in filter(None, (e.strip() for e in value.split(";"))):
                name, sep, groups = entry.partition("=")
                if not sep or not name.strip():
                    raise ValueError(f"'{entry}' is not collection=group,group")
                mapping[name.strip()] = [g.strip() for g in groups.split(",") if g.strip()]
            return mapping
        return value
