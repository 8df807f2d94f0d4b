"""Typed settings: defaults -> enclave.toml -> ENCLAVE_* environment variables.

One pydantic model per concern (storage.py, ingestion.py, ...); `Settings` composes them into
one flat model, so a setting keeps a single name everywhere: `top_k` in enclave.toml, in code
(`settings.top_k`) and, upper-cased, in the environment (`ENCLAVE_TOP_K`); `data_dir` is
`ENCLAVE_DATA`. A component that needs one concern may take that section's type (a `Settings`
is each of them). In TOML a setting is written at the top level or in its concern's table
(`[retrieval]` with `top_k = 5`); a table also accepts the name without its prefix
(`[escalation]` with `policy = ...`). Every field is documented in README.md, in the table of
its concern (a test checks it).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, ValidationError

from config.answers import AnswerSettings
from config.auth import AuthSettings
from config.embedding import EmbeddingSettings
from config.escalation import EscalationSettings
from config.ingestion import IngestionSettings
from config.model import ModelSettings
from config.retrieval import RetrievalSettings
from config.scaleout import ScaleOutSettings
from config.section import Section
from config.server import ServerSettings
from config.storage import StorageSettings

CONFIG_ENV = "ENCLAVE_CONFIG"
ENV_PREFIX = "ENCLAVE_"
# Environment names that differ from ENCLAVE_<FIELD>.
ENV_ALIASES = {"data_dir": "ENCLAVE_DATA"}


class SettingsError(ValueError):
    """A setting has an invalid value; the message names the setting and where it came from."""


# The concerns, in the order the README documents them (`SECTIONS`).
class Settings(
    StorageSettings,
    IngestionSettings,
    ScaleOutSettings,
    EmbeddingSettings,
    RetrievalSettings,
    AnswerSettings,
    ModelSettings,
    EscalationSettings,
    ServerSettings,
    AuthSettings,
):
    """Every setting: the fields of all sections above, flat."""

    model_config = ConfigDict(title="Settings")

    @property
    def model_cache_dir(self) -> Path:
        return Path(self.embed_cache_dir) if self.embed_cache_dir else self.data_dir / "models"


SECTIONS: tuple[type[Section], ...] = Settings.__bases__


def table_name(section: type[Section]) -> str:
    """The TOML table of a concern: its module's name (`[retrieval]` is config/retrieval.py)."""
    return section.__module__.rpartition(".")[2]


_TABLES = {table_name(section): section for section in SECTIONS}
# Settings whose value is itself a table (`[collection_groups] hr = ["hr-staff"]`).
_TABLE_SETTINGS = {"collection_groups"}


def _home(field: str) -> str:
    return next(table_name(s) for s in SECTIONS if field in s.model_fields)


def _flatten_tables(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Setting name -> value from a parsed enclave.toml: `[retrieval] top_k` is `top_k`,
    `[escalation] policy` is `escalation_policy`, top-level names are themselves."""
    flat: dict[str, Any] = {}

    def put(name: str, value: Any) -> None:
        if name in flat:
            raise SettingsError(f"setting '{name}' is set twice in {path}")
        flat[name] = value

    for key, value in data.items():
        if not isinstance(value, dict) or key in _TABLE_SETTINGS:
            put(key, value)
            continue
        section = _TABLES.get(key)
        for inner, inner_value in value.items():
            if f"{key}_{inner}" in Settings.model_fields:
                put(f"{key}_{inner}", inner_value)
            elif section is not None and inner in section.model_fields:
                put(inner, inner_value)
            elif section is not None and inner in Settings.model_fields:
                raise SettingsError(
                    f"setting '{inner}' belongs in [{_home(inner)}] or at the top level, "
                    f"not in [{key}] ({path})"
                )
            else:
                put(f"{key}_{inner}", inner_value)
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
        for key, value in _flatten_tables(data, path).items():
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
