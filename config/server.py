"""The web server: where it listens, the URL browsers use, request sizes, conversations kept,
links answers may show, the metrics token (server/)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator

from config.section import Section, comma_separated


class ServerSettings(Section):
    model_config = ConfigDict(title="Web server")

    host: str = Field("127.0.0.1")
    port: int = Field(8000, ge=1, le=65535)
    max_upload_mb: int = Field(50, ge=1, le=4096, description="Largest accepted upload.")
    max_question_chars: int = Field(2000, ge=10, le=100000)
    max_request_kb: int = Field(
        256, ge=1, le=1048576, description="Largest request body other than an upload."
    )
    public_url: str = Field(
        "",
        description="The URL browsers use (https://rag.example.com behind a TLS proxy); "
        "empty: the request's own.",
    )
    max_conversations_per_user: int = Field(
        500, ge=0, le=1000000, description="Conversations kept per user (oldest pruned); 0: all."
    )
    max_messages_per_conversation: int = Field(
        1000,
        ge=0,
        le=1000000,
        description="Messages kept per conversation (oldest pruned); 0: all.",
    )
    answer_link_hosts: list[str] = Field(
        default_factory=list, description="Hosts whose links and images answers may show."
    )
    metrics_token: str = Field(
        "", description="Bearer token that may read /metrics (besides admins); empty: admins only."
    )

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("use an http(s)://host[:port] URL, or empty")
        return value.rstrip("/")

    @field_validator("answer_link_hosts", mode="before")
    @classmethod
    def _answer_link_hosts(cls, value: Any) -> Any:
        return comma_separated(value)
