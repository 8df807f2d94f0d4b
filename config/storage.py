"""Where Enclave keeps its data: the data directory, an optional PostgreSQL database, an
optional Chroma server, and how long the audit log is kept."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, field_validator

from config.collection_names import COLLECTION_RULE, is_collection_name
from config.section import Section

# URLs `database_url` accepts; retriever/database.py picks the PostgreSQL engine by them too.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class StorageSettings(Section):
    model_config = ConfigDict(title="Storage")

    data_dir: Path = Field(
        Path("data"), description="Directory holding every index and the registry."
    )
    default_collection: str = Field(
        "default", description="Collection for files outside the inbox."
    )
    database_url: str = Field(
        "",
        description="PostgreSQL URL for the registry, keyword index, conversations and audit "
        "log; empty: SQLite files in data_dir.",
    )

    # Vector store: embedded Chroma in data_dir, or a Chroma server
    chroma_host: str = Field("", description="Chroma server host; empty: embedded Chroma.")
    chroma_port: int = Field(8000, ge=1, le=65535, description="Chroma server port.")
    chroma_token: str = Field("", description="Token sent to the Chroma server, if any.")
    chroma_ssl: bool = Field(False, description="Reach the Chroma server over HTTPS.")

    audit_retention_days: int = Field(
        365, ge=0, description="Days audit entries are kept; 0: forever."
    )

    @field_validator("default_collection")
    @classmethod
    def _collection_name(cls, value: str) -> str:
        if not is_collection_name(value):
            raise ValueError(COLLECTION_RULE)
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if value and not value.startswith(POSTGRES_SCHEMES):
            raise ValueError("use a postgresql://user:password@host:port/database URL, or empty")
        return value

    def database_for(self, path: Path) -> Path | str:
        """Where a store lives: `database_url` when set (every store shares that database),
        else its own SQLite file `path` in the data directory."""
        return self.database_url or path

    @property
    def identity_path(self) -> Path:
        return self.data_dir / "identity.sqlite3"

    @property
    def audit_path(self) -> Path:
        return self.data_dir / "audit.sqlite3"

    @property
    def conversations_path(self) -> Path:
        return self.data_dir / "conversations.sqlite3"

    @property
    def inbox_dir(self) -> Path:
        return self.data_dir / "inbox"

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "registry.sqlite3"

    @property
    def keyword_path(self) -> Path:
        return self.data_dir / "keyword.sqlite3"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def trash_dir(self) -> Path:
        """Inbox files deleted through the API or the UI are moved here."""
        return self.data_dir / "trash"
