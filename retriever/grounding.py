"""Grounding checks without a model: is each answer sentence supported by a given source, and
which source sentences answer the question best (the extractive answer)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from retriever.keyword import STOPWORDS

# A sentence ends at . ! ? before a space or the end, or at a line break; "0.1 dB", "e-mail!"
# and "collect?q=1" inside it do not end it.
_SENTENCE = re.compile(r"(?:[^\n.!?]|[.!?](?![\s]|$))*(?:[.!?](?=\s|$)|\n|$)")
_WORD = re.compile(r"\w+", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
# A citation "[n]" with the space before it; group 1 is the source number.
CITATION = re.compile(r"\s*\[(\d{1,2})\]")
MIN_SENTENCE_CHARS = 12
# A list item's marker at the start of a sentence: "1.", "2)", "-", "*", "a)".
LIST_MARKER = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*\u2022\u2013]|\(?[a-z]\))(?:\s+|$)")
# A token that may be an identifier: letters and digits joined by _ - . / or followed by "()".
_IDENTIFIER = re.compile(r"\w+\(\)|[A-Za-z0-9][\w./-]*[A-Za-z0-9_]")


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Support:
    """Where a claim is backed: source number (1-based), character span, share of words."""

    n: int
    span: Span
    score: float


def split_sentences(text: str) -> list[Span]:
    spans = []
    for match in _SENTENCE.finditer(text):
        raw = match.group(0)
        stripped = raw.strip()
        if len(stripped) < 2:
            continue
        start = match.start() + (len(raw) - len(raw.lstrip()))
        spans.append(Span(start, start + len(stripped), stripped))
    return spans


def _stem(word: str) -> str:
    if word.endswith(("ses", "xes", "zes", "ches", "shes")) and len(word) > 5:
        return word[:-2]  # "classes", "boxes"; "procedures" loses only its "s"
    for suffix in ("ing", "ed", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS}


def numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def identifiers(text: str) -> set[str]:
    """Names of things written as code (lower case, without a trailing "()"):
    `asn1_der_decoding`, `deflateInit()`, `POL-OPS-007`, `AS64500`. The embedder and the word
    splitter both see them as unknown pieces; matched whole they are the surest key terms."""
    found = set()
    for match in _IDENTIFIER.finditer(text):
        token = match.group(0)
        core = token.removesuffix("()")
        if not any(c.isalpha() for c in core):
            continue
        digits = any(c.isdigit() for c in core)
        joined = any(c in core for c in "-./")
        if (
            token.endswith("()")
            or "_" in core
            or re.search(r"[a-z][A-Z]", core)
            or (digits and re.search(r"[A-Za-z]", core) and not core.isdigit())
            or (joined and re.search(r"[A-Z]{2}", core))
        ):
            found.add(core.lower())
    return found


def is_fragment(sentence: str) -> bool:
    """A sentence that says nothing by itself: a list marker or number alone, punctuation,
    only stop words, or a short heading ("Level 1:")."""
    core = LIST_MARKER.sub("", CITATION.sub("", sentence)).strip()
    core = core.strip(" .!?;,\"'\u201c\u201d")
    words = _WORD.findall(core)
    lettered = [w for w in words if any(c.isalpha() for c in w)]
    if not any(w.lower() not in STOPWORDS for w in lettered):
        return True
    return core.endswith(":") and len(words) <= 6


def is_heading(span: str) -> bool:
    """A source line that is a heading, not a sentence: six words or fewer, no end punctuation,
    no number and no "label: value" ("Changes and maintenance windows")."""
    text = span.strip()
    return (
        len(text.split()) <= 6
        and not text.endswith((".", "!", "?", ":", ";", ")", '"'))
        and ":" not in text
        and not any(c.isdigit() for c in text)
    )


def is_list_marker(sentence: str) -> bool:
    """A list item's marker split off its item by the sentence splitter ("1." before "Call
    the NOC"): no claim of its own. One with a citation ("1 [1].") is a claim, a fragment."""
    return bool(re.fullmatch(r"\d{1,2}[.)]?|[-*\u2022\u2013]", sentence.strip()))


def fragments(text: str) -> list[str]:
    """The sentences of an answer that say nothing by themselves (`is_fragment`), list
    markers before their items aside."""
    return [
        s.text
        for s in split_sentences(text)
        if not is_list_marker(s.text)
        and CITATION.sub("", s.text).strip(" .!?")
        and is_fragment(s.text)
    ]


def support_for(
    claim: str, sources: Sequence[str], preferred: Sequence[int] = ()
) -> Support | None:
    """The source sentence that best backs `claim`, with the share of the claim's words found
    in it. Every number of the claim must be in that same sentence (a "1" that occurs
    somewhere in the source backs nothing); a number in no source means no support at all."""
    claim = LIST_MARKER.sub("", CITATION.sub("", claim))
    words = content_words(claim)
    if not words:
        return None
    claimed_numbers = numbers(claim)
    best: Support | None = None
    for n, source in enumerate(sources, start=1):
        if claimed_numbers - numbers(source):
            continue
        for span in split_sentences(source):
            if claimed_numbers - numbers(span.text):
                continue  # a number counts only with its context: in the same sentence
            score = len(words & content_words(span.text)) / len(words)
            bonus = 1e-6 if n in preferred else 0.0  # on ties, the cited source wins
            if best is None or score + bonus > best.score:
                best = Support(n, span, round(score, 4))
    if best is not None:
        return best
    return None


def extract_answer(question: str, sources: Sequence[str], max_sentences: int = 2) -> list[Support]:
    """Source sentences that share the most (IDF-weighted) words with the question."""
    asked = content_words(question)
    if not asked:
        return []
    candidates = [
        (n, span)
        for n, source in enumerate(sources, start=1)
        for span in split_sentences(source)
        if len(span.text) >= MIN_SENTENCE_CHARS
        and not is_fragment(span.text)
        and not is_heading(span.text)
    ]
    if not candidates:
        return []
    frequency: Counter[str] = Counter()
    bags = [content_words(span.text) for _, span in candidates]
    for bag in bags:
        frequency.update(bag)
    total = len(candidates)
    weight = {w: math.log(1 + total / frequency[w]) if frequency[w] else 0.0 for w in asked}
    top = sum(weight.values()) or 1.0
    scored = []
    for rank, ((n, span), bag) in enumerate(zip(candidates, bags, strict=True)):
        overlap = sum(weight[w] for w in asked & bag) / top
        # A small prior for better-ranked sources and earlier sentences breaks ties.
        scored.append((overlap - 0.01 * n - 0.0001 * rank, n, span, overlap))
    scored.sort(key=lambda item: -item[0])
    chosen = [
        Support(n, span, round(overlap, 4))
        for _, n, span, overlap in scored[:max_sentences]
        if overlap > 0
    ]
    return sorted(chosen, key=lambda s: (s.n, s.span.start))


def question_coverage(question: str, passages: Sequence[str]) -> float:
    """Share of the question's content words found in the passages. A question whose key
    terms appear in none of them ("the CEO's salary" over leave policies) is likely not
    answered there, however close the embeddings are."""
    asked = content_words(question)
    if not asked:
        return 1.0
    found: set[str] = set()
    for passage in passages:
        found |= asked & content_words(passage)
    return len(found) / len(asked)


# Words that shape a question rather than say what it is about ("how much", "do I need").
QUESTION_SCAFFOLD = frozenset(
    (  # noqa: SIM905 - a word list reads better as one string
        "much many long often far get got need needs use used using take make made kind type "
        "exactly usually typically currently please tell know give find also any some all one "
        "other about happen happens mean means called name named"
    ).split()
)


def key_terms(question: str) -> dict[str, str]:
    """The words a question is about, stem -> word as written (lower case). An identifier
    (`POL-OPS-007`, `deflateInit()`) is one term, not its pieces."""
    named = identifiers(question)
    pieces = {p for name in named for p in _WORD.findall(name)} - named
    terms = {
        _stem(w): w
        for w in _WORD.findall(question.lower())
        if w not in STOPWORDS
        and w not in QUESTION_SCAFFOLD
        and w not in pieces
        and not (len(w) == 1 and w.isalpha())
    }
    terms.update({name: name for name in named})
    return terms


def key_term_coverage(
    question: str, passages: Sequence[str], weights: Callable[[list[str]], dict[str, float]]
) -> float:
    """How much of what the question is about one passage holds: the largest share, over the
    passages, of the question's key terms found in it, each weighted by `weights` (the
    corpus's inverse document frequency, so rare terms such as names weigh most).

    A question whose distinctive terms no single passage holds ("the CEO's salary" against
    pay-scale tables) is likely not answered there, however close the embeddings are."""
    terms = key_terms(question)
    if not terms:
        return 1.0
    weight_of = weights(list(terms.values()))
    total = sum(weight_of[w] for w in terms.values()) or 1.0
    best = 0.0
    for passage in passages:
        found = terms.keys() & (content_words(passage) | identifiers(passage))
        best = max(best, sum(weight_of[terms[t]] for t in found) / total)
    return best


def focus(question: str, text: str, keep: int) -> str:
    """The `keep` sentences of `text` sharing the most words with the question, in their
    original order (the first ones when none does): a short, pointed context for a small model."""
    spans = split_sentences(text)
    if len(spans) <= keep:
        return text
    asked = content_words(question)
    ranked = sorted(
        range(len(spans)), key=lambda i: (-len(asked & content_words(spans[i].text)), i)
    )
    chosen = sorted(ranked[:keep])
    return " ".join(spans[i].text for i in chosen)
