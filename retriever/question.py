"""One question as `AnswerService` takes it: the text and everything a caller may ask of its
answer, built once per request (the REST and OpenAI APIs, MCP through the REST view, the CLI,
`enclave eval answers`) and never changed afterwards."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

# How passages are found: both indexes fused, meaning only, or exact words only.
Mode = Literal["hybrid", "dense", "bm25"]
MODES: tuple[Mode, ...] = get_args(Mode)
AnswerMode = Literal["generative", "extractive"]
ANSWER_MODES: tuple[AnswerMode, ...] = get_args(AnswerMode)


@dataclass(frozen=True)
class Question:
    """What to answer and how. `None` means the service's configured value (top_k, mode,
    answer_mode) or limit (max_tokens, timeout_s: a question can only lower them);
    `collections` None means every collection: a caller that filters by permission passes
    the readable ones (an empty tuple: nothing is found). `actor` names the caller in the
    audit log when the question goes to the escalation model.

    The checks here are the service's invariants, whoever builds the question; the HTTP
    layer keeps its own limits (top_k up to 50) and error codes before it gets here."""

    text: str
    collections: Sequence[str] | None = None  # stored as a tuple
    top_k: int | None = None
    mode: Mode | None = None
    answer_mode: AnswerMode | None = None
    max_tokens: int | None = None
    timeout_s: float | None = None
    actor: str = "anonymous"

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError("a question needs some text")
        if self.collections is not None:
            names = _names(self.collections)
            # A list from a request becomes a tuple: the question stays hashable and unchanged.
            object.__setattr__(self, "collections", names)
        for name in ("top_k", "max_tokens"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
        if self.timeout_s is not None and (
            isinstance(self.timeout_s, bool)
            or not isinstance(self.timeout_s, int | float)
            or not self.timeout_s > 0
        ):
            raise ValueError(
                f"timeout_s must be a number of seconds above 0, not {self.timeout_s!r}"
            )
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.answer_mode is not None and self.answer_mode not in ANSWER_MODES:
            raise ValueError(
                f"answer_mode must be one of {', '.join(ANSWER_MODES)}, not {self.answer_mode!r}"
            )


def _names(collections: Sequence[str]) -> tuple[str, ...]:
    if isinstance(collections, str):  # one name, not its letters
        return (collections,)
    names = tuple(collections)
    if not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"collections must be names, not {list(names)!r}")
    return names
