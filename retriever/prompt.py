"""Prompt with numbered sources that always fits the model's context window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from retriever.generation import Message
from retriever.types import Hit

NOT_FOUND = "I could not find the answer in the documents."

SYSTEM_PROMPT = (
    "You answer questions for employees using only the numbered sources you are given. "
    "Answer in one or two short sentences and cite the source you used in square brackets, "
    f"like [1]. If the sources do not contain the answer, reply exactly: {NOT_FOUND}"
)

SOURCES = "Sources:\n"

# Tokens the chat template adds around messages, plus a margin for tokenizer differences.
TEMPLATE_OVERHEAD = 48
MIN_SOURCE_TOKENS = 40


class PromptTooLongError(ValueError):
    pass


@dataclass
class BuiltPrompt:
    messages: list[Message]
    hits: list[Hit]  # the sources actually in the prompt, numbered 1..n in this order
    prompt_tokens: int


def source_label(hit: Hit) -> str:
    chunk = hit.chunk
    label = chunk.title or chunk.path
    if chunk.headings and chunk.headings[-1] != label:
        label += f" - {chunk.headings[-1]}"
    return f"{label} (page {chunk.page})" if chunk.page is not None else label


def _truncate(text: str, tokens: int, count: Callable[[str], int]) -> str:
    """Longest word prefix of `text` within `tokens` (binary search on words)."""
    words = text.split(" ")
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(" ".join(words[:mid])) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]) + " ..."


def fixed_prefix() -> list[Message]:
    """The opening every prompt shares (system prompt, start of the user turn): what the
    generator keeps evaluated in its KV cache between questions."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": SOURCES}]


def build_prompt(
    question: str,
    hits: list[Hit],
    count_tokens: Callable[[str], int],
    context_size: int,
    max_new_tokens: int,
) -> BuiltPrompt:
    """Numbered sources in rank order; sources are trimmed to fit, never the question."""
    question_part = f"Question: {question}\nAnswer with a citation like [1]:"
    fixed = count_tokens(SYSTEM_PROMPT) + count_tokens(question_part) + TEMPLATE_OVERHEAD
    budget = context_size - max_new_tokens - fixed
    if budget < 0:
        raise PromptTooLongError(
            "the question is too long for the model's context window "
            f"({context_size} tokens, {max_new_tokens} reserved for the answer)"
        )
    blocks: list[str] = []
    used: list[Hit] = []
    for hit in hits:
        n = len(used) + 1
        header = f"[{n}] {source_label(hit)}\n"
        block = header + hit.chunk.text.strip()
        cost = count_tokens(block) + 2
        if cost > budget:
            room = budget - count_tokens(header) - 2
            if room < MIN_SOURCE_TOKENS:
                break
            block = header + _truncate(hit.chunk.text.strip(), room, count_tokens)
            cost = count_tokens(block) + 2
        blocks.append(block)
        used.append(hit)
        budget -= cost
    sources = "\n\n".join(blocks) if blocks else "(no sources)"
    user = f"{SOURCES}{sources}\n\n{question_part}"
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user},
    ]
    total = count_tokens(SYSTEM_PROMPT) + count_tokens(user) + TEMPLATE_OVERHEAD
    return BuiltPrompt(messages=messages, hits=used, prompt_tokens=total)
