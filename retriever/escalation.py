"""Hybrid escalation under the owner's policy: when the local model abstains or its answer
fails the support check, the question and its sources may go to a larger OpenAI-compatible
model, but only where `escalation_policy` allows that endpoint.

- `never` (default): no escalation, whatever the endpoint.
- `on_premises`: only to hosts listed in `escalation_on_premises_hosts`.
- `always`: to the configured endpoint, wherever it is (a cloud model included).

Every escalation is written to the audit log with the documents whose text was sent.

Escalations have their own bounded slots (`escalation_slots`, `escalation_queue`; more get
429), apart from the local model's: a slow larger model cannot hold more server threads than
that, and each waits and writes only within its question's deadline.
"""

from __future__ import annotations

import collections.abc
import queue
import threading
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from retriever.audit import AuditLog
from retriever.generation import GenerationParams, Generator, Message
from retriever.slots import GenerationSlots, Ticket

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
    slots: GenerationSlots = field(default_factory=lambda: GenerationSlots(1, 4))

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


class EscalationClaim:
    """An admitted escalation's slot. Whoever admitted it releases it, unless it was handed
    to the reader of the larger model (`read_in_background`), which releases it when the
    connection has ended: the slot counts calls to the larger model, not request threads."""

    def __init__(self, ticket: Ticket) -> None:
        self.ticket = ticket
        self.handed = False

    def release(self) -> None:
        if not self.handed:
            self.ticket.release()


_END = object()


def read_in_background(
    generator: Generator,
    messages: list[Message],
    params: GenerationParams,
    claim: EscalationClaim,
    poll_s: float = 0.5,
) -> collections.abc.Generator[str | None, None, None]:
    """The larger model's pieces, read by a thread of its own; `None` each `poll_s` seconds
    nothing arrived (so the caller can check its deadline and its client while the larger
    model is slow, even before its first piece). Closing this iterator tells the reader to
    stop: it closes the connection at the next piece (or the client's read timeout) and then
    releases the slot; the request's thread is free at once."""
    pieces: queue.Queue[object] = queue.Queue()
    stop = threading.Event()

    def read() -> None:
        stream = generator.stream(messages, params)
        try:
            for piece in stream:
                if stop.is_set():
                    break
                pieces.put(piece)
            pieces.put(_END)
        except Exception as exc:  # handed to the request, which decides
            pieces.put(exc)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # closes the connection: the larger model stops
            claim.ticket.release()

    claim.handed = True
    threading.Thread(target=read, name="escalation-reader", daemon=True).start()
    try:
        while True:
            try:
                item = pieces.get(timeout=poll_s)
            except queue.Empty:
                yield None
                continue
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield str(item)
    finally:
        stop.set()
