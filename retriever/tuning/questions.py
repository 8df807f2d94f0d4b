"""Questions written by the local SLM for sampled chunks, and the filter that drops bad ones.

A 135M model writes many poor questions: copies of the passage, questions about "the
passage", fragments, questions whose words are not in the passage. The filter keeps only a
short, well-formed question that shares content words with its passage without copying it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from retriever.generation import GenerationParams, Generator, Message
from retriever.keyword import STOPWORDS
from retriever.tuning.pairs import Pair
from retriever.types import Chunk

SYSTEM = "You write one short question that a passage answers. Reply with the question only."
PROMPT = (
    "Passage:\n{passage}\n\n"
    "Write one specific question that this passage answers. Use the passage's own terms. "
    "Do not mention the passage. Reply with the question only."
)
PARAMS = GenerationParams(max_tokens=40, temperature=0.0, repeat_penalty=1.15, stop=["\n\n"])
MAX_PASSAGE_CHARS = 1200  # keeps the prompt small: a question needs only the gist
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Questions about the text rather than its subject.
_META = re.compile(
    r"\b(passage|text|article|document|paragraph|author|mentioned|this study|the above|"
    r"this question|the answer to)\b",
    re.IGNORECASE,
)
_QUESTION_START = re.compile(
    r"^(what|which|who|whom|whose|when|where|why|how|is|are|was|were|do|does|did|can|could|"
    r"should|will|would|has|have|had)\b",
    re.IGNORECASE,
)


def question_messages(chunk: Chunk) -> list[Message]:
    passage = chunk.embedding_text()[:MAX_PASSAGE_CHARS]
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": PROMPT.format(passage=passage)},
    ]


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 2]


def extract_question(reply: str) -> str:
    """The first line ending in '?', without list markers, quotes or a 'Question:' label."""
    for line in reply.splitlines():
        line = re.sub(
            r"^\s*(?:[-*\d.)]+\s*|question\s*\d*\s*[:.-]\s*|q\s*[:.-]\s*)",
            "",
            line,
            flags=re.IGNORECASE,
        )
        line = line.strip().strip("\"'“”").strip()
        if "?" in line:
            return line[: line.index("?") + 1].strip()
    return ""


def keep_question(question: str, passage: str) -> bool:
    """The filter: a real question (question word first, ends in '?', 4-25 words), about
    the subject (not "the passage"), grounded (half its content words, at least two, occur in
    the passage) and not a copy (no run of 8 words taken from the passage)."""
    words = question.split()
    if not question.endswith("?") or not 4 <= len(words) <= 25:
        return False
    if not _QUESTION_START.match(question) or _META.search(question):
        return False
    asked = content_words(question)
    if not asked:
        return False
    vocabulary = set(content_words(passage))
    shared = [w for w in asked if w in vocabulary]
    if len(shared) < 2 or len(shared) < len(asked) / 2:
        return False
    tokens = _WORD.findall(question.lower())
    passage_text = " ".join(_WORD.findall(passage.lower()))
    return not any(
        " ".join(tokens[i : i + 8]) in passage_text for i in range(max(0, len(tokens) - 7))
    )


def question_pairs(
    generator: Generator,
    chunks: Iterable[Chunk],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Pair], int]:
    """(pairs whose question passed the filter, questions written). The passage is what the
    index embeds (title and headings, then the text)."""
    chunks = list(chunks)
    pairs: list[Pair] = []
    seen: set[str] = set()
    for n, chunk in enumerate(chunks, 1):
        reply = "".join(generator.stream(question_messages(chunk), PARAMS))
        question = extract_question(reply)
        if keep_question(question, chunk.embedding_text()) and question.lower() not in seen:
            seen.add(question.lower())
            pairs.append(Pair(question, chunk.embedding_text(), chunk.id, "question"))
        if progress:
            progress(n, len(chunks))
    return pairs, len(chunks)
