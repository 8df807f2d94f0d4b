"""Asking a larger model when the local answer abstains or is unsupported
(retriever/escalation.py). In TOML also an `[escalation]` table with these names, unprefixed."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from config.section import Section, comma_separated


class EscalationSettings(Section):
    model_config = ConfigDict(title="Escalation")

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

    @field_validator("escalation_on_premises_hosts", mode="before")
    @classmethod
    def _escalation_hosts(cls, value: Any) -> Any:
        return comma_separated(value)
