"""Follow-up questions: make a question self-contained for retrieval, without a model.

"And for part-time staff?" retrieves nothing useful on its own. When a question is short or
leans on an earlier turn (a pronoun, "what about ..."), the key terms of the previous
question that it lacks are appended, so retrieval (and the model) see the topic. A question
that stands on its own is returned unchanged: rewriting it could only add noise."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from retriever.keyword import STOPWORDS

_WORD = re.compile(r"[\w'-]+", re.UNICODE)
# Words that point back to something said before.
# fmt: off
_ANAPHORA = frozenset([
    "it", "its", "it's", "they", "them", "their", "theirs", "this", "that", "these", "those",
    "he", "she", "him", "her", "his", "hers", "there", "then", "one", "ones", "same", "such",
    "former", "latter", "above",
])
# fmt: on
# Openings of questions that continue the previous one.
_CONTINUATION = re.compile(
    r"^\s*(?:and|but|also|so|or|what about|how about|and what about|what if|same for|"
    r"what else|anything else|why|how come|how so|really)\b",
    re.IGNORECASE,
)
# Question words and fillers that say nothing about the topic.
# fmt: off
_FILLER = frozenset([
    "what", "which", "who", "whom", "whose", "when", "where", "why", "how", "much", "many",
    "does", "do", "did", "is", "are", "was", "were", "can", "could", "would", "should", "will",
    "shall", "may", "might", "must", "please", "tell", "me", "about", "also", "else",
    "anything", "something", "thing", "things", "more", "less", "there", "here", "yes", "no",
    "ok", "okay", "thanks",
])
# fmt: on
SHORT_QUESTION_WORDS = 4  # content words at or below which a question is taken as a follow-up
MAX_ADDED_TERMS = 8


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    text: str


def key_terms(text: str) -> list[str]:
    """Content words in order of first appearance (no stopwords, fillers or duplicates)."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text):
        lower = word.lower().strip("'-")
        if len(lower) < 2 or lower in STOPWORDS or lower in _FILLER or lower in _ANAPHORA:
            continue
        seen.setdefault(word.strip("'-"), None)
    return list(seen)


def needs_context(question: str) -> bool:
    words = [w.lower() for w in _WORD.findall(question)]
    if _CONTINUATION.match(question):
        return True
    if any(w in _ANAPHORA for w in words):
        return True
    return len(key_terms(question)) <= SHORT_QUESTION_WORDS


def contextualize(question: str, history: Sequence[Turn], max_chars: int = 2000) -> str:
    """A retrieval query that stands on its own: `question`, plus the previous question's key
    terms when it reads as a follow-up. `history` is the conversation so far, oldest first."""
    previous = [t.text for t in history if t.role == "user" and t.text.strip()]
    if not previous or not needs_context(question):
        return question
    have = {w.lower() for w in key_terms(question)}
    added: list[str] = []
    # The last question first; the one before it only if the last was itself a fragment.
    for earlier in reversed(previous[-2:]):
        for term in key_terms(earlier):
            if term.lower() not in have and len(added) < MAX_ADDED_TERMS:
                have.add(term.lower())
                added.append(term)
        if not needs_context(earlier):
            break
    if not added:
        return question
    query = f"{question.rstrip()} ({' '.join(added)})"
    return query if len(query) <= max_chars else question
