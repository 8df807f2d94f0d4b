"""Answer metrics as SQuAD defines them (normalized exact match and token F1), plus gold
containment and citation validity."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from retriever.grounding import CITATION, split_sentences, support_for

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    text = CITATION.sub("", text).lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def is_yes_no(answer: object) -> bool:
    """A yes/no gold answer ("Yes.", "no"): left out where only open answers are scored."""
    return answer is not None and normalize(str(answer)) in ("yes", "no")


def exact_match(answer: str, golds: Sequence[str]) -> float:
    return float(any(normalize(answer) == normalize(g) for g in golds))


def token_f1(answer: str, golds: Sequence[str]) -> float:
    predicted = normalize(answer).split()
    best = 0.0
    for gold in golds:
        expected = normalize(gold).split()
        common = sum((Counter(predicted) & Counter(expected)).values())
        if common:
            precision, recall = common / len(predicted), common / len(expected)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_gold(answer: str, golds: Sequence[str]) -> float:
    said = f" {normalize(answer)} "
    return float(any(normalize(g) and f" {normalize(g)} " in said for g in golds))


def citation_validity(answer: str, sources: Sequence[str], threshold: float) -> tuple[int, int]:
    """(valid, total) citations: a citation [n] is valid when source n supports its sentence."""
    valid = total = 0
    for span in split_sentences(answer):
        for n in {int(m) for m in CITATION.findall(span.text)}:
            total += 1
            if 1 <= n <= len(sources):
                found = support_for(span.text, [sources[n - 1]])
                valid += found is not None and found.score >= threshold
    return valid, total
