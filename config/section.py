"""What every settings section shares: unknown names are errors, assignments are validated."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """One concern's settings. `title` names the README table that documents its fields."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def comma_separated(value: Any) -> Any:
    """A list setting from the environment: "a.internal, b.internal" -> ["a.internal", ...]."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value
