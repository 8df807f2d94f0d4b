"""The model's raw text made ready for the support check: no preamble, no repeated
sentences, no citations of sources never given; and whether it says it found nothing."""

from __future__ import annotations

import re

from retriever.grounding import CITATION

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Phrases by which a model says it found nothing.
_ABSTAIN_PATTERNS = re.compile(
    r"could not find|couldn't find|cannot find|can't find|not (?:mentioned|stated|found|"
    r"provided|specified) in the (?:sources|documents|context)|no information",
    re.IGNORECASE,
)


# What a small model puts before its answer: "The answer to this question is:", "Answer:".
_PREAMBLE = re.compile(
    r"^\s*(?:(?:the\s+)?answer(?:\s+to\s+(?:this|the|your)\s+question)?(?:\s+is)?\s*:\s*)",
    re.IGNORECASE,
)


def clean_answer(text: str, n_sources: int) -> tuple[str, list[int]]:
    """Drop a preamble ("The answer is:"), repeated sentences (small models loop) and
    citations of sources never given."""
    text = _PREAMBLE.sub("", text.strip())
    kept: list[str] = []
    seen: set[str] = set()
    for sentence in _SENTENCE_END.split(text):
        key = CITATION.sub("", sentence).strip().lower()
        if not key and kept:  # a citation after the full stop belongs to that sentence
            kept[-1] += " " + sentence.strip()
            continue
        if not key or key in seen:
            continue
        seen.add(key)
        kept.append(sentence.strip())
    text = " ".join(kept)

    def check(match: re.Match[str]) -> str:
        return match.group(0) if 1 <= int(match.group(1)) <= n_sources else ""

    text = CITATION.sub(check, text)
    text = re.sub(r"\s+([.,;:])", r"\1", re.sub(r"[ \t]{2,}", " ", text)).strip()
    cited = sorted({int(m) for m in CITATION.findall(text)})
    return text, cited


def says_not_found(text: str) -> bool:
    return not text.strip() or bool(_ABSTAIN_PATTERNS.search(text))
