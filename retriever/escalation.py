"""Hybrid escalation under the owner's policy: when the local model abstains or its answer
fails the support check, the question and its sources may go to a larger OpenAI-compatible
model, but only where `escalation_policy` allows that endpoint.

- `never` (default): no escalation, whatever the endpoint.
- `on_premises`: only to hosts listed in `escalation_on_premises_hosts`.
- `always`: to the configured endpoint, wherever it is (a cloud model included).

Every escalation is written to the audit log with the documents whose text was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from retriever.audit import AuditLog
from retriever.generation import Generator

EscalationPolicy = Literal["never", "on_premises", "always"]
ESCALATION_ACTION = "escalation"


class EscalationRefused(ValueError):
    """The policy does not allow the configured endpoint; the message says why."""


def endpoint_host(endpoint: str) -> str:
    host = urlsplit(endpoint).hostname
    if not host:
        raise EscalationRefused(f"escalation_endpoint {endpoint!r} is not an http(s) URL")
    return host.lower()


def check_policy(policy: EscalationPolicy, endpoint: str, on_premises_hosts: list[str]) -> str:
    """The endpoint's host if `policy` allows sending questions there; else `EscalationRefused`."""
    if policy == "never":
        raise EscalationRefused('escalation_policy is "never"')
    if not endpoint:
        raise EscalationRefused("no escalation_endpoint is configured")
    host = endpoint_host(endpoint)
    if policy == "on_premises" and host not in {h.lower() for h in on_premises_hosts}:
        raise EscalationRefused(
            f'{host} is not in escalation_on_premises_hosts; under "on_premises" only those '
            'hosts are used (set escalation_policy = "always" to allow any endpoint)'
        )
    return host


@dataclass
class Escalation:
    """The larger model and where its use is recorded."""

    generator: Generator
    endpoint: str
    audit: AuditLog

    def record(self, actor: str, question: str, document_ids: list[str], reason: str) -> None:
        self.audit.record(
            actor,
            ESCALATION_ACTION,
            self.endpoint,
            model=self.generator.name,
            reason=reason,
            documents=sorted(set(document_ids)),
            question_chars=len(question),
        )
