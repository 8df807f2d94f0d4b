"""The support check of the model's answer: which of its sentences a source backs, bears on
the question and adds to it (`verify`), and whether what it leads with answers as well as
the best source sentence (`answers_as_well`)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from retriever.grounding import (
    CITATION,
    LIST_MARKER,
    QUESTION_SCAFFOLD,
    RankedSentence,
    Support,
    asked_kind,
    content_words,
    contradicts,
    holds_kind,
    identifiers,
    is_fragment,
    is_heading,
    is_list_marker,
    is_title,
    key_terms,
    split_sentences,
    support_for,
)


def bears_on(question: str, *texts: str) -> bool:
    """Whether the texts (a claim and the source sentence backing it) hold one of the terms the
    question is about; a question without such terms puts no condition."""
    asked = key_terms(question).keys()
    if not asked:
        return True
    said: set[str] = set()
    for text in texts:
        said |= content_words(text) | identifiers(text)
    # A question about four things or more needs two of them: "alarm" alone does not make
    # a sentence about acknowledging a Major alarm in Skywatch.
    return len(asked & said) >= (2 if len(asked) >= 4 else 1)


def says_more(question: str, claim: str, titles: Sequence[str] = ()) -> bool:
    """Whether a claim adds something to the question and the sources' titles (a word,
    number or name they do not hold): "The code is the one that means loss of signal" only
    restates the question, and a source's title copied out ("Rooftop Site Access Agreement,
    Beacon Hill") answers nothing."""
    asked = content_words(question) | identifiers(question) | QUESTION_SCAFFOLD
    for title in titles:
        asked |= content_words(title) | identifiers(title)
    new = (content_words(claim) | identifiers(claim)) - asked
    return bool(new)


def same_subject(question: str, claim: str, backing: str) -> bool:
    """Whether the backing sentence says what the claim says of the question: it holds the
    question's words the claim repeats (all but one in three) and half the words the claim
    adds. "The master key for the rooftop is held by Kestrel Telecom" is backed neither by
    "This agreement covers the rooftop site, where Kestrel Telecom keeps two cabinets" (no
    key) nor by "Harbourview holds the master key for the rooftop" (another holder)."""
    said, asked, held = content_words(claim), content_words(question), content_words(backing)
    restated, added = said & asked, said - asked
    return len(restated - held) <= len(restated) // 3 and 2 * len(added & held) >= len(added)


def verify(
    text: str,
    sources: Sequence[str],
    threshold: float,
    question: str = "",
    titles: Sequence[str] = (),
) -> tuple[str, list[Support], int]:
    """Keep the answer sentences a given source supports (each then cites it); drop the rest.

    A kept sentence says something (not a list marker, a number alone or a heading), its
    backing source sentence holds at least `threshold` of its content words, at least two of
    them (or all, for a one-word claim), and every number it states; with a `question`, the
    sentence or its backing bears on it, and the backing holds the question's words the
    sentence repeats (`same_subject`); it adds something to the question and the sources'
    `titles` (the labels the model saw). Repeated sentences go. List items stay in order, one
    a line, numbered again. Returns the checked text, the support of each kept sentence and
    how many were dropped."""
    kept: list[str] = []
    supports: list[Support] = []
    dropped = 0
    seen: set[frozenset[str]] = set()
    listed = False
    for span in split_sentences(text):
        bare = CITATION.sub("", span.text).strip(" .!?")
        if not bare:
            continue  # a citation after the full stop ("... days. [1]"), not a sentence
        if is_list_marker(span.text):
            listed = True  # a list item's marker, split off its item: the next one is an item
            continue
        item = listed or bool(LIST_MARKER.match(span.text))
        listed = False
        # The items after a list's first kept one bear on the question through it.
        on_topic = item and any(k.startswith("\n") for k in kept)
        claim = LIST_MARKER.sub("", CITATION.sub("", span.text))
        words = content_words(claim)
        cited = [int(n) for n in CITATION.findall(span.text)]
        found = None if is_fragment(claim) else support_for(claim, sources, preferred=cited)
        if (
            found is None
            or is_heading(found.span.text)
            or is_title(found.span.text)
            or found.span.text.rstrip().endswith("?")  # a question in a source answers nothing
            or found.score < threshold
            or len(words & content_words(found.span.text)) < min(2, len(words))
            or (question and not on_topic and not bears_on(question, claim, found.span.text))
            or (question and not says_more(question, claim, titles))
            or (question and not same_subject(question, claim, found.span.text))
            or contradicts(claim, found.span.text)
        ):
            dropped += 1
            continue
        key = frozenset(words)
        if key in seen:
            continue
        seen.add(key)
        sentence = re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"\s{2,}", " ", claim.strip()))
        end = sentence[-1] if sentence[-1] in ".!?" else "."
        line = f"{sentence.rstrip('.!?').rstrip()} [{found.n}]{end}"
        kept.append(f"\n{sum(k.startswith(chr(10)) for k in kept) + 1}. {line}" if item else line)
        supports.append(found)
    items = [i for i, line in enumerate(kept) if line.startswith("\n")]
    if len(items) == 1:  # one item left of a list is a sentence, not a list
        kept[items[0]] = LIST_MARKER.sub("", kept[items[0]].lstrip("\n"))
    return " ".join(kept).replace(" \n", "\n").strip(), supports, dropped


# What the model leads with must answer the question at least this well, as a share of the
# best source sentence's score (`rank_sentences`): a supported sentence about something else
# in the passages ("Where is Adams buried?" -> another president's grave) is not an answer.
ANSWERS_AS_WELL = 0.7


def answers_as_well(
    supports: Sequence[Support],
    ranked: Sequence[RankedSentence],
    question: str = "",
    lead_claim: str = "",
) -> bool:
    """Whether the model's answer answers the question as well as the best source sentence:
    the sentence backing its first sentence scores at least `ANSWERS_AS_WELL` of the best
    one, and, asked for a number or a date that the best one gives, one of its backing
    sentences gives one too ("Report security bugs via HackerOne" does not answer "how long
    before they acknowledge my report?" where a source says "within 5 days"), and a bare
    value as the `lead_claim` comes from the best-ranked sentence giving one. A backing
    sentence the ranking leaves out (too short to quote, a heading) is not judged."""
    if not supports or not ranked or ranked[0].score <= 0:
        return True
    kind = asked_kind(question) if question else None
    if (
        kind in ("number", "date")
        and holds_kind(kind, ranked[0].span.text, question)
        and not any(holds_kind(kind, s.span.text, question) for s in supports)
    ):
        return False
    lead = supports[0]
    mine = [
        i
        for i, r in enumerate(ranked)
        if r.n == lead.n and r.span.start < lead.span.end and lead.span.start < r.span.end
    ]
    if not mine:
        return True
    if ranked[mine[0]].score < ANSWERS_AS_WELL * ranked[0].score:
        return False
    # A bare value ("12 weeks") says nothing of what it is the value of: it must come from the
    # best-ranked sentence giving one, not from one about something else ranked below it
    # ("12 weeks of adoption leave" below "5 weeks of partner leave", asked about partner leave).
    bare = bool(lead_claim) and not content_words(lead_claim) & content_words(question)
    return not (
        bare
        and kind in ("number", "date")
        and any(holds_kind(kind, r.span.text, question) for r in ranked[: mine[0]])
    )
