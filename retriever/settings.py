"""Typed settings: defaults -> enclave.toml -> ENCLAVE_* environment variables.

Every field is documented in README.md (a test checks it). A field `name` is set in TOML as
`name = ...` and in the environment as `ENCLAVE_NAME`, except `data_dir`, which is `ENCLAVE_DATA`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from retriever.database import POSTGRES_SCHEMES

CONFIG_ENV = "ENCLAVE_CONFIG"
ENV_PREFIX = "ENCLAVE_"
# Environment names that differ from ENCLAVE_<FIELD>.
ENV_ALIASES = {"data_dir": "ENCLAVE_DATA"}


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the setting and where it came from."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Storage
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

    # Ingestion
    watch: Literal["events", "poll", "off"] = Field(
        "events", description="How serve follows the inbox: file events, polling, or not."
    )
    poll_interval_s: float = Field(2.0, gt=0, le=3600, description="Seconds between scans.")
    settle_s: float = Field(1.0, ge=0, le=600, description="Quiet time before a file is read.")
    parse_workers: int = Field(
        1, ge=0, le=64, description="Parser processes; 0 parses in process (no limits)."
    )
    parse_timeout_s: float = Field(120.0, gt=0, description="Longest parse of one file.")
    parse_memory_mb: int = Field(2048, ge=64, description="Memory a parser may add per file.")
    max_file_mb: int = Field(100, ge=1, description="Largest file indexed.")
    max_pages: int = Field(2000, ge=1, description="Most PDF pages indexed.")
    max_zip_ratio: float = Field(100.0, ge=1, description="Largest unpacked/packed ratio.")
    max_unzipped_mb: int = Field(512, ge=1, description="Largest unpacked Office file.")
    ocr_languages: str = Field(
        "eng",
        pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$",
        description="Tesseract language packs for scans, '+'-joined (eng+deu).",
    )
    ocr_page_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="Longest OCR of one scanned page."
    )
    ocr_dpi: int = Field(
        300, ge=72, le=600, description="Resolution scanned PDF pages are read at."
    )
    ingest_batch_chunks: int = Field(
        1024, ge=1, le=100000, description="Chunks of several files embedded together."
    )
    quarantine: Literal["leave", "move"] = Field(
        "leave", description="Failed inbox files: leave in place or move to quarantine/."
    )
    inbox_symlinks: Literal["same_collection", "refuse"] = Field(
        "same_collection",
        description="Links in the inbox: followed only within their own collection's folder, "
        "or refused.",
    )
    work_queue: Literal["local", "celery"] = Field(
        "local",
        description="Who indexes: the server's own thread (local) or Celery workers (celery).",
    )
    redis_url: str = Field(
        "",
        description="Redis (redis://host:port/db): Celery's broker, and the generation queue "
        "shared by every web worker; empty: none.",
    )
    celery_visibility_timeout_s: float = Field(
        3600.0,
        gt=0,
        le=86400,
        description="Seconds before a task a lost worker held is delivered again.",
    )
    celery_max_retries: int = Field(
        5, ge=0, le=100, description="Retries of a failing indexing task, with backoff."
    )

    # Vector store: embedded Chroma in data_dir, or a Chroma server
    chroma_host: str = Field("", description="Chroma server host; empty: embedded Chroma.")
    chroma_port: int = Field(8000, ge=1, le=65535, description="Chroma server port.")
    chroma_token: str = Field("", description="Token sent to the Chroma server, if any.")
    chroma_ssl: bool = Field(False, description="Reach the Chroma server over HTTPS.")

    # Embedding and chunking
    embed_model: str = Field(
        "", description="Path of a sentence-transformers model; empty: bundled."
    )
    embed_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx-int8", description="How the embedder runs: torch, or ONNX Runtime fp32/int8."
    )
    embed_cache_dir: str = Field(
        "", description="Where ONNX exports of the embedder are kept; empty: data_dir/models."
    )
    embed_batch_size: int = Field(32, ge=1, le=1024, description="Texts per embedding batch.")
    chunk_tokens: int = Field(200, ge=32, le=512, description="Chunk size in embedder tokens.")
    chunk_overlap_tokens: int = Field(32, ge=0, le=256, description="Overlap between chunks.")

    # Retrieval
    retrieval_mode: Literal["hybrid", "dense", "bm25"] = Field("hybrid")
    top_k: int = Field(4, ge=1, le=50, description="Sources given to the model.")
    candidates_k: int = Field(30, ge=1, le=1000, description="Candidates per retriever.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal-rank-fusion constant.")
    dense_weight: float = Field(1.0, ge=0, description="Weight of dense ranks in fusion.")
    bm25_weight: float = Field(1.0, ge=0, description="Weight of BM25 ranks in fusion.")
    reranker: Literal["none", "cross-encoder", "bi-encoder"] = Field(
        "none", description="Second-stage reranking of the fused candidates."
    )
    reranker_model: str = Field("", description="Local path of a cross-encoder model.")
    rerank_candidates: int = Field(20, ge=1, le=500, description="Candidates reranked.")
    min_relevance: float = Field(
        0.3, ge=-1, le=1, description="Abstain when the best dense cosine is below this."
    )
    min_question_coverage: float = Field(
        0.5, ge=0, le=1, description="Abstain when fewer of the question's words are found."
    )
    min_key_coverage: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Abstain when no passage holds this share of the question's key terms.",
    )
    min_sentence_similarity: float = Field(
        0.4, ge=-1, le=1, description="Abstain when no sentence is this close to the question."
    )

    # Answering
    answer_mode: Literal["generative", "extractive"] = Field(
        "generative", description="generative: the SLM writes; extractive: quote sources."
    )
    focus_sentences: int = Field(
        3, ge=0, le=50, description="Sentences per source shown to the model; 0: whole."
    )
    support_threshold: float = Field(
        0.6, ge=0, le=1, description="Share of an answer sentence's words a source must hold."
    )

    # Generation
    llm_backend: Literal["llamacpp", "openai", "ctransformers", "fake"] = Field("llamacpp")
    llm_model: str = Field(
        "",
        description="Path of a GGUF (or GGML) model; empty: bundled SmolLM2. With the openai "
        "backend: the model name on the server (empty: its first).",
    )
    llm_endpoint: str = Field(
        "", description="Base URL of an OpenAI-compatible server, for the openai backend."
    )
    llm_api_key: str = Field("", description="Bearer key for llm_endpoint, if it needs one.")
    llm_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="Longest time one answer may take (queue included)."
    )
    llm_threads: int = Field(0, ge=0, le=256, description="CPU threads; 0: all cores.")
    llm_context: int = Field(2048, ge=256, le=131072, description="Context window in tokens.")
    llm_fast_cpu_weights: bool = Field(
        True,
        description="Run a Q4_1/Q5_0/Q5_1 GGUF as its Q8_0 rewrite (made once in the models "
        "folder): llama.cpp's fast CPU kernels cover Q8_0, not those types.",
    )
    llm_flash_attention: bool = Field(
        True, description="llama.cpp's flash attention: faster prompts on CPU, same answers."
    )
    llm_cpu_profile: Literal["auto", "fast", "safe"] = Field(
        "auto",
        description="llama.cpp CPU settings: fast (the two above, extra buffer types such as "
        "AMX kernels), safe (the file as shipped, none of them), auto (fast unless it crashes "
        "a self-test on this machine's first start).",
    )
    llm_max_tokens: int = Field(200, ge=1, le=4096, description="Most new tokens per answer.")
    llm_temperature: float = Field(0.0, ge=0, le=2)
    llm_repeat_penalty: float = Field(1.15, ge=1, le=2)
    llm_draft_tokens: int = Field(
        0,
        ge=0,
        le=32,
        description="Prompt-lookup speculative decoding (greedy only): tokens drafted from the "
        "sources and checked in one batch (8 is a good size); 0: off.",
    )

    # Escalation to a larger model (TOML: an [escalation] table with these names, unprefixed)
    escalation_policy: Literal["never", "on_premises", "always"] = Field(
        "never", description="When a larger model may be asked; see the README."
    )
    escalation_endpoint: str = Field("", description="OpenAI-compatible base URL to escalate to.")
    escalation_model: str = Field("", description="Model name there; empty: its first.")
    escalation_api_key: str = Field("", description="Bearer key for escalation_endpoint.")
    escalation_on_premises_hosts: list[str] = Field(
        default_factory=list, description="Hosts counted as on the premises (comma-separated)."
    )
    escalation_slots: int = Field(
        1, ge=1, le=64, description="Escalation calls run at once (apart from generation_slots)."
    )
    escalation_queue: int = Field(
        4, ge=0, le=1024, description="Escalations that may wait for a slot; more get 429."
    )
    audit_retention_days: int = Field(
        365, ge=0, description="Days audit entries are kept; 0: forever."
    )

    # Server
    host: str = Field("127.0.0.1")
    port: int = Field(8000, ge=1, le=65535)
    max_upload_mb: int = Field(50, ge=1, le=4096, description="Largest accepted upload.")
    max_question_chars: int = Field(2000, ge=10, le=100000)
    generation_slots: int = Field(1, ge=1, le=64, description="Generations run at once.")
    generation_queue: int = Field(
        8, ge=0, le=1024, description="Questions that may wait for a slot; more get 429."
    )
    max_request_kb: int = Field(
        256, ge=1, le=1048576, description="Largest request body other than an upload."
    )

    # Authentication and permissions (server/auth.py, server/access.py)
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
        description="Addresses trusted_header and X-Forwarded-Proto/-Host are accepted from.",
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
    public_url: str = Field(
        "",
        description="The URL browsers use (https://rag.example.com behind a TLS proxy); "
        "empty: the request's own.",
    )
    max_conversations_per_user: int = Field(
        500, ge=0, le=1000000, description="Conversations kept per user (oldest pruned); 0: all."
    )
    answer_link_hosts: list[str] = Field(
        default_factory=list, description="Hosts whose links and images answers may show."
    )
    web_workers: int = Field(
        1, ge=1, le=256, description="Web server processes (gunicorn above 1)."
    )
    metrics_token: str = Field(
        "", description="Bearer token that may read /metrics (besides admins); empty: admins only."
    )

    @field_validator("default_collection")
    @classmethod
    def _collection_name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError("use letters, digits, '.', '_' or '-'")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("use an http(s)://host[:port] URL, or empty")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if value and not value.startswith(POSTGRES_SCHEMES):
            raise ValueError("use a postgresql://user:password@host:port/database URL, or empty")
        return value

    @field_validator(
        "escalation_on_premises_hosts", "trusted_proxies", "answer_link_hosts", mode="before"
    )
    @classmethod
    def _host_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment: "a.internal,b.internal"
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

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

    @property
    def identity_path(self) -> Path:
        return self.data_dir / "identity.sqlite3"

    def database_for(self, path: Path) -> Path | str:
        """Where a store lives: `database_url` when set (every store shares that database),
        else its own SQLite file `path` in the data directory."""
        return self.database_url or path

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
    def model_cache_dir(self) -> Path:
        return Path(self.embed_cache_dir) if self.embed_cache_dir else self.data_dir / "models"

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


# Settings whose value is itself a table (`[collection_groups] hr = ["hr-staff"]`).
_TABLE_SETTINGS = {"collection_groups"}


def _flatten_tables(data: dict[str, Any]) -> dict[str, Any]:
    """`[escalation] policy = ...` in TOML is the setting `escalation_policy`."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key not in _TABLE_SETTINGS:
            for inner, inner_value in value.items():
                flat[f"{key}_{inner}"] = inner_value
        else:
            flat[key] = value
    return flat


def env_name(field: str) -> str:
    return ENV_ALIASES.get(field, ENV_PREFIX + field.upper())


def load_settings(
    config: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from defaults, then the TOML file, then the environment, then overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}

    config = config or environ.get(CONFIG_ENV)
    if config:
        path = Path(config)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise SettingsError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
        for key, value in _flatten_tables(data).items():
            values[key] = value
            origin[key] = str(path)

    for field in Settings.model_fields:
        name = env_name(field)
        if name in environ:
            values[field] = environ[name]
            origin[field] = f"environment variable {name}"

    for key, value in overrides.items():
        if value is not None:
            values[key] = value
            origin[key] = "command line"

    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            where = origin.get(field, "defaults")
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown setting '{field}' (from {where})")
            else:
                problems.append(f"invalid setting '{field}' (from {where}): {err['msg']}")
        raise SettingsError("; ".join(problems)) from None
