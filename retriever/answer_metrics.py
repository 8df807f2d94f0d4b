"""Answer metrics as SQuAD defines them (normalized exact match and token F1), plus gold
containment, fragments and citation validity."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from retriever.grounding import (
    CITATION,
    content_words,
    fragments,
    is_fragment,
    split_sentences,
    support_for,
)

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


def has_fragment(answer: str) -> bool:
    """Whether a sentence of the answer says nothing by itself: a number or list marker alone
    ("1 [1]."), a heading, only stop words."""
    return bool(fragments(answer))


def citation_validity(answer: str, sources: Sequence[str], threshold: float) -> tuple[int, int]:
    """(valid, total) citations. A citation [n] is valid when the sentence says something
    (not a fragment) and one sentence of source n holds every number of it and at least
    `threshold` of its content words, at least two of them (all of a one-word sentence): a
    single shared token ("1" in "1 [1].") is no support."""
    valid = total = 0
    for span in split_sentences(answer):
        for n in {int(m) for m in CITATION.findall(span.text)}:
            total += 1
            if not 1 <= n <= len(sources) or is_fragment(span.text):
                continue
            found = support_for(span.text, [sources[n - 1]])
            words = content_words(CITATION.sub("", span.text))
            valid += (
                found is not None
                and found.score >= threshold
                and len(words & content_words(found.span.text)) >= min(2, len(words))
            )
    return valid, total
