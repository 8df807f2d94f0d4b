"""Question -> retrieval -> grounded prompt -> SLM -> cleaned, cited answer."""

from __future__ import annotations

import collections.abc
import itertools
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from pydantic import ConfigDict, Field, PlainSerializer, TypeAdapter

from retriever.abstention import AbstentionThresholds, EvidenceCheck
from retriever.escalation import Escalation, EscalationClaim, read_in_background
from retriever.generation import GenerationError, GenerationParams, Generator
from retriever.grounding import (
    ASKS_DATE,
    ASKS_NUMBER,
    CALENDAR_WORDS,
    CITATION,
    DATE,
    IDENTIFIER,
    LIST_MARKER,
    NUMBER_WORDS,
    QUESTION_SCAFFOLD,
    RankedSentence,
    Support,
    asked_kind,
    asking_clause,
    asks_amount,
    content_words,
    contradicts,
    extract_answer,
    focus,
    gives_asked_number,
    holds_kind,
    identifiers,
    is_fragment,
    is_heading,
    is_list_marker,
    is_name_word,
    key_terms,
    needs_number,
    rank_sentences,
    split_sentences,
    states_amount,
    support_for,
)
from retriever.keyword import STOPWORDS
from retriever.prompt import NOT_FOUND, BuiltPrompt, build_prompt, source_label
from retriever.question import AnswerMode, Mode, Question
from retriever.search import HybridSearcher, SearchResult
from retriever.serving import IndexSlot, ServingIndex
from retriever.slots import GenerationSlots
from retriever.types import Hit

log = logging.getLogger(__name__)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Phrases by which a model says it found nothing.
_ABSTAIN_PATTERNS = re.compile(
    r"could not find|couldn't find|cannot find|can't find|not (?:mentioned|stated|found|"
    r"provided|specified) in the (?:sources|documents|context)|no information",
    re.IGNORECASE,
)


@dataclass
class Source:
    """A passage the model was given, numbered as the answer cites it."""

    n: int
    document_id: str
    path: str
    title: str
    page: int | None
    text: str
    score: float

    @classmethod
    def from_hit(cls, n: int, hit: Hit) -> Source:
        c = hit.chunk
        return cls(n, c.document_id, c.path, c.title, c.page, c.text, round(hit.score, 6))


@dataclass(frozen=True)
class SupportSpan:
    """Where an answer sentence is backed: the source, the character span of the supporting
    sentence in that source's text, and the share of the sentence's words it holds."""

    n: int
    start: int
    end: int
    score: float


def _support_spans(supports: list[Support]) -> list[SupportSpan]:
    return [SupportSpan(s.n, s.span.start, s.span.end, s.score) for s in supports]


@dataclass
class Answer:
    """An answer as /api/v1/ask, `enclave ask --json` and MCP's `ask` return it: these fields,
    serialized by `to_dict` (wire names by `serialization_alias`), are the one place the
    answer's shape is written; the OpenAPI document is generated from them."""

    # Every field is always sent (a default here is not "may be absent").
    __pydantic_config__ = ConfigDict(json_schema_serialization_defaults_required=True)

    answer: str
    abstained: bool
    sources: list[Source]
    citations: Annotated[
        list[int], Field(description="The source numbers the answer cites, [n] in its text.")
    ] = field(default_factory=list)
    timings: Annotated[
        dict[str, int | float],
        Field(description="retrieve_ms, generate_ms, tokens, tokens_per_s and the like."),
    ] = field(default_factory=dict)
    supports: Annotated[
        list[Support],
        PlainSerializer(_support_spans, return_type=list[SupportSpan]),
        Field(
            description="For each answer sentence: the source and the character span of its "
            "supporting sentence in that source's text."
        ),
    ] = field(default_factory=list)
    dropped: Annotated[
        int,
        Field(
            serialization_alias="unsupported_sentences_removed",
            description="Answer sentences removed because no source supported them.",
        ),
    ] = 0
    mode: Annotated[
        str,
        Field(serialization_alias="answer_mode", description="generative or extractive."),
    ] = "generative"
    model_cited: Annotated[
        bool | None, Field(description="Whether the model's own text cited a given source.")
    ] = None
    escalated: Annotated[
        dict[str, Any] | None,
        Field(
            description="The larger model that answered (endpoint, model, reason), when the "
            "local answer was escalated under the escalation policy."
        ),
    ] = None
    abstention_reason: Annotated[
        str | None,
        Field(
            description="Why the passages could not answer, when Enclave abstained (before "
            "asking the model, or after it when no sentence found gives the number or amount "
            "asked for)."
        ),
    ] = None
    direct_answer: Annotated[
        str | None,
        Field(
            description="The short answer the text opens with (the phrase or number asked "
            "for), before the quoted evidence; null when Enclave abstained."
        ),
    ] = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = _ANSWER_JSON.dump_python(self, mode="json", by_alias=True)
        return body


_ANSWER_JSON: TypeAdapter[Answer] = TypeAdapter(Answer)


@dataclass(frozen=True)
class SourcesEvent:
    """The sources given to the model, numbered as the answer cites them."""

    sources: list[Source]


@dataclass(frozen=True)
class TokenEvent:
    """A piece of the model's raw text, before any check."""

    text: str


@dataclass(frozen=True)
class DoneEvent:
    """The checked answer, as `ask` returns it."""

    answer: Answer


@dataclass(frozen=True)
class WaitingEvent:
    """Nothing to show yet (an escalation is queued or writing): a streaming client is sent a
    keep-alive, which notices a client that has gone and so stops the escalation."""


AnswerEvent = SourcesEvent | TokenEvent | DoneEvent | WaitingEvent
AnswerStream = collections.abc.Generator[AnswerEvent, None, None]


def final_answer(events: Iterable[AnswerEvent]) -> Answer:
    for event in events:
        if isinstance(event, DoneEvent):
            return event.answer
    raise RuntimeError("the answer stream ended without an answer")


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


def _rate(tokens: int, ms: float) -> float:
    return round(tokens / (ms / 1000), 1) if tokens > 0 and ms > 0 else 0.0


def says_not_found(text: str) -> bool:
    return not text.strip() or bool(_ABSTAIN_PATTERNS.search(text))


class GenerationTimeout(GenerationError):
    """The request's time ran out before the model could start."""


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


_ASKS_NAME = re.compile(r"(?i)\b(?:who|whom|whose)\b|^\W*where\b|\b(?:which|what)\s+(\w+)")
# Lower-case words that may sit inside a name ("Duke of Wellington", "Leonardo da Vinci").
_NAME_JOINERS = frozenset(("of", "de", "da", "di", "van", "von", "du", "del", "la", "le", "y"))
# Words that open a sentence with a capital but never start a name.
_OPENERS = frozenset(
    (  # noqa: SIM905 - a word list reads better as one string
        "he she it they we you his her hers its their our your this that these those there "
        "here some many most all each every both either neither any another such one none "
        "while after before during although though however since because following despite "
        "according like unlike without within among between after until unless also once "
        "today yesterday now then thus hence therefore meanwhile instead only even still "
        "later earlier finally first second third last next in on at by for from with into "
        "about over under upon through throughout under toward towards against around "
        "a an the as if when where who whom whose which what why how"
    ).split()
)


# Adverbs that say nothing at the edge of a short answer ("ears ... are also" -> "ears").
_EDGE_ADVERBS = frozenset(
    [
        "also",
        "very",
        "often",
        "usually",
        "still",
        "just",
        "even",
        "too",
        "thus",
        "however",
        "mainly",
        "generally",
        "always",
        "now",
        "currently",
        "therefore",
        "indeed",
        "actually",
        "already",
        "typically",
        "largely",
        "mostly",
        "then",
    ]
)


def _filler(token: str, asked: set[str]) -> bool:
    """A word of an answer sentence that only restates the question (or a stop word, or an
    adverb that says nothing at the answer's edge)."""
    parts = re.findall(r"\w+", token.lower())
    if not parts:
        return True
    return all(p in STOPWORDS or p in _EDGE_ADVERBS or p in asked for p in _stem_all(parts))


# Pairs that a cut can break (not \u2019, which is also the apostrophe of "Lincoln\u2019s").
_PAIRS = {"(": ")", "[": "]", "{": "}", "\u201c": "\u201d"}
_PARTNER = {**_PAIRS, **{close: open_ for open_, close in _PAIRS.items()}}
_EMPTY_BRACKETS = re.compile(r"^\W*?[(\[{]\s*[)\]}]|[(\[{]\s*[)\]}]\W*?$")


def _unmatched(phrase: str, mark: str) -> bool:
    """`mark` (a bracket or quote) occurs in `phrase` more often than its partner."""
    return phrase.count(mark) > phrase.count(_PARTNER[mark])


def _tidy_edges(phrase: str) -> str:
    """A cut-out phrase without the punctuation its cut left dangling: separators and empty
    brackets at its ends, an opening bracket or quote whose closing one was cut off, a
    closing one whose opening was ("sound (" -> "sound", "( ), is a country" -> "is a
    country")."""
    previous = None
    while phrase != previous:
        previous = phrase
        phrase = _EMPTY_BRACKETS.sub("", phrase).strip(" ,;:-\u2013\u2014")
        first, last = phrase[:1], phrase[-1:]
        if last in _PAIRS:
            phrase = phrase[:-1]
        elif first and first in _PAIRS.values():
            phrase = phrase[1:]
        elif last and last in _PAIRS.values() and _unmatched(phrase, last):
            phrase = phrase[:-1]
        if phrase[:1] in _PAIRS and _unmatched(phrase, phrase[0]):
            phrase = phrase[1:]
    return phrase


def _stop(token: str) -> bool:
    return any(p in STOPWORDS for p in re.findall(r"\w+", token.lower()))


def _stem_all(parts: list[str]) -> list[str]:
    return [next(iter(content_words(p)), p) for p in parts]


def _is_number(token: str) -> bool:
    word = token.lower().strip(".,;:()\"'")
    return bool(re.search(r"\d", word)) or word in NUMBER_WORDS


def _date_in(text: str, question: str) -> str | None:
    """The first date of `text` that the question does not already name."""
    for match in DATE.finditer(text):
        if match.group(0) not in question:
            return match.group(0)
    return None


def _name_in(
    tokens: list[str], asked: set[str], head: str | None, place: bool = False
) -> str | None:
    """The first name of `tokens` (capitalized words, with "of", "de"... inside) that the
    question does not hold; for "which county ...?" the one ending in that word ("Hardin
    County"), if any; for a `place`, one after "in", "at", "near"... ("in Plymouth")."""
    names: list[list[str]] = []
    starts: list[int] = []
    run: list[str] = []
    for i, token in enumerate([*tokens, ""]):
        word = token.strip(".,;:()[]\"'\u201c\u201d")
        capital = is_name_word(word)
        # A sentence's first word is capitalized anyway: a name only if not a stop word.
        if capital and word.lower() not in _OPENERS and word.lower() not in CALENDAR_WORDS:
            if not run:
                starts.append(i)
            run.append(word)
        elif run and word in _NAME_JOINERS and i + 1 < len(tokens) and tokens[i + 1][:1].isupper():
            run.append(word)
        else:
            if run:
                names.append(run)
            run = []
        if token.endswith((",", ";", ":", ")")) and run:
            names.append(run)
            run = []
    places = {"in", "at", "near", "to", "from", "on", "outside", "inside", "across"}
    fresh = [
        (n, i)
        for n, i in zip(names, starts, strict=True)
        if (not place or any(t.lower() in places for t in tokens[max(0, i - 2) : i]))
        and any(
            w.lower() not in STOPWORDS and next(iter(content_words(w)), w.lower()) not in asked
            for w in n
        )
    ]
    if head:
        stem = next(iter(content_words(head)), head)
        fresh = [(n, i) for n, i in fresh if next(iter(content_words(n[-1])), "") == stem]
    if not fresh:
        return None
    # Of several names, the one nearest the words the question uses ("... was suggested by
    # Maria Okoro" for "who suggested ...?").
    used = _asked_positions(tokens, asked)

    def distance(found: tuple[list[str], int]) -> int:
        n, i = found
        return min((max(i - j, j - (i + len(n) - 1)) for j in used), default=0)

    return " ".join(min(fresh, key=distance)[0])


_OPTION = re.compile(r"--?[A-Za-z][\w-]*")


def _code_in(tokens: list[str], asked: set[str]) -> str | None:
    """The name written as code (`ffi_prep_cif_var`, `LIBFFI_TMPDIR`, `deflateInit()`, an
    option such as `--strict`) among `tokens` that the question does not hold, nearest the
    words it uses: what "which function/variable/option ...?" asks for in a manual."""
    found = []
    for i, token in enumerate(tokens):
        word = token.strip(".,;:!?\"'`\u201c\u201d")
        if _OPTION.fullmatch(word) and word not in asked:
            found.append((i, word))
            continue
        for match in IDENTIFIER.finditer(word):
            code = match.group(0)
            named = identifiers(code)
            # Letters alone ("PowerPC", "SharedMIME") are as often a name as code.
            if named and not named & asked and not code.isalpha():
                found.append((i, code))
    if not found:
        return None
    used = _asked_positions(tokens, asked)
    return min(found, key=lambda f: (min((abs(f[0] - j) for j in used), default=0), f[0]))[1]


def _asked_cell(text: str, asked: set[str], wants_number: bool = False) -> str | None:
    """In a table row as ingestion writes it ("Team: NOC desk; Internal extension: 4410"),
    the value under the header the question names ("What is the extension ...?" -> "4410");
    None for anything else, or when no header names what is asked. A word in several headers
    names each less ("How much data is in the Mobile Plus plan?": `Data allowance`, not `Plan
    code`, of a row that also has `Plan name`). A question asking for a quantity takes a named
    value holding one before one without ("How quickly must a Major alarm be acknowledged in
    Skywatch?": `Acknowledge within: 15 minutes`, not `Colour in Skywatch: Orange`)."""
    cells = [c.partition(":") for c in text.split(";")]
    if len(cells) < 2 or any(not sep or not value.strip() for _, sep, value in cells):
        return None
    headers = [content_words(header) for header, _, _ in cells]
    spread = collections.Counter(word for words in headers for word in words)
    best: tuple[bool, float] = (False, 0.0)
    found = None
    for words, (_, _, value) in zip(headers, cells, strict=True):
        named = sum(1 / spread[word] for word in words & asked)
        if not named or content_words(value) <= asked:
            continue
        rank = (wants_number and _holds_number(value), named)
        if rank > best:
            best, found = rank, value.strip()
    return found


def _new_number(token: str, asked: set[str] | frozenset[str]) -> bool:
    """`token` is a number the question did not name itself ("severity 1")."""
    return _is_number(token) and not (content_words(token) | identifiers(token)) & asked


def _holds_number(text: str, asked: set[str] | frozenset[str] = frozenset()) -> bool:
    return any(_new_number(token, asked) for token in text.split())


def _asked_positions(tokens: list[str], asked: set[str]) -> list[int]:
    """Where the words the question uses stand among `tokens`."""
    return [j for j, t in enumerate(tokens) if content_words(t) & asked]


def _answering(question: str, texts: Sequence[str]) -> int:
    """Which of the texts the direct answer is cut from: the first, except that a question
    asking for a quantity takes the first holding one (a span of time for "how long/often", a
    date or a time for "when") when there is one: the first may only restate the question."""
    asks = asking_clause(question)
    if not (ASKS_NUMBER.match(asks) or needs_number(question)):
        return 0
    asked = content_words(question) | identifiers(question)
    numeric = [i for i, text in enumerate(texts) if _holds_number(_bare(text), asked)]
    if ASKS_DATE.match(asks):
        # "When ...?" is answered by a date or a time, not any number ("the 5th floor").
        numeric = [i for i in numeric if _says_when(texts[i])]
    elif _ASKS_DURATION.match(asks):
        numeric = [i for i in numeric if _names_time_unit(texts[i])] or numeric
    return numeric[0] if numeric else 0


def _answering_support(question: str, supports: Sequence[Support]) -> Support:
    """The quoted sentence the direct answer is cut from: of the best scored first, the one
    `_answering` picks."""
    ranked = sorted(supports, key=lambda s: -s.score)
    return ranked[_answering(question, [s.span.text for s in ranked])]


def _lead_with_answer(
    question: str, checked: str, supports: list[Support]
) -> tuple[str, list[Support]]:
    """The model's checked sentences, the one giving the quantity the question asks for first
    ("how long before they acknowledge my report?": "... acknowledged within 5 days" before
    "Report security bugs via HackerOne"). A list keeps its order."""
    sentences = [span.text for span in split_sentences(checked)]
    if "\n" in checked or len(sentences) != len(supports):
        return checked, supports
    lead = _answering(question, sentences)
    if lead == 0:
        return checked, supports
    order = [lead] + [i for i in range(len(sentences)) if i != lead]
    return " ".join(sentences[i] for i in order), [supports[i] for i in order]


_CLOCK = re.compile(r"\b\d{1,2}[:.]\d{2}\b")
# A year of another era or a span of history: "6000 BC", "AD 79", "the 5th century".
_ERA = re.compile(
    r"(?i)\b\d{1,5}\s*(?:BC|BCE|AD|CE|B\.C\.|A\.D\.)|\b(?:AD|A\.D\.)\s*\d{1,4}\b|"
    r"\b(?:century|centuries|decade|decades|millennium|era)\b"
)


def _names_time_unit(text: str) -> bool:
    return bool(_TIME_UNITS & set(re.findall(r"\w+", text.lower())))


def _says_when(text: str) -> bool:
    return bool(DATE.search(text) or _CLOCK.search(text) or _ERA.search(text)) or (
        _names_time_unit(text)
    )


# Questions answered by a span of time or a frequency ("every 90 days").
_ASKS_DURATION = re.compile(r"(?i)^\W*(?:for\s+)?how\s+(?:long|soon|quickly|often)\b")
_TIME_UNITS = frozenset(
    f"{unit}{plural}"
    for unit in ("second", "minute", "hour", "day", "week", "month", "year", "night", "shift")
    for plural in ("", "s")
) | {"min", "mins", "h", "hrs", "business", "working", "calendar"}


def _one_item_a_line(text: str) -> str:
    """`text` without blank lines or the spaces around its lines: a list quoted whole keeps
    one item a line."""
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def _bare(sentence: str) -> str:
    """A sentence without its list marker, citations and final stop (a list quoted whole: one
    item a line): what `direct_answer` returns when it finds no shorter phrase."""
    return _one_item_a_line(LIST_MARKER.sub("", CITATION.sub("", sentence)).strip().rstrip(".!?"))


def direct_answer(question: str, sentence: str, max_words: int = 12) -> str:
    """The short part of an answer sentence that answers: the phrase the question asks for (a
    date for "when", a quantity for "how many/long", a name for "who/where/which county"),
    else the sentence without the words at its ends that restate the question ("The hold time
    on BGP sessions is 90 seconds" -> "90 seconds"). The whole sentence when that leaves
    nothing, or more than `max_words`."""
    text = _bare(sentence)
    asked = content_words(question) | identifiers(question)
    tokens = text.split()
    start, end = 0, len(tokens)
    while start < end and _filler(tokens[start], asked):
        start += 1
    while end > start and _filler(tokens[end - 1], asked):
        end -= 1
    asks = asking_clause(question)
    cell = _asked_cell(text, asked, wants_number=bool(ASKS_NUMBER.match(asks)))
    if cell is not None:
        return cell
    if ASKS_DATE.match(asks):
        date = _date_in(" ".join(tokens[start:end]), asks)
        if date is not None:
            return date
    if ASKS_NUMBER.match(asks):
        # "How long ...?" is answered by the quantity: from its number (and a unit before it).
        digits = [i for i in range(start, end) if _new_number(tokens[i], asked)]
        if ASKS_DATE.match(asks):
            # No date was found: of the numbers, only a time answers "when" ("at 11:30").
            digits = [i for i in digits if _says_when(" ".join(tokens[i : i + 3]))]
        if digits:
            # Of several numbers, the one in the clause holding most of the words the question
            # uses, then the nearest them ("taken at 01:15, and all systems are available again
            # by 02:00" for "by what time are all systems available again?").
            used = [j for j in _asked_positions(tokens, asked) if j not in digits]
            clause = list(
                itertools.accumulate([0] + [int(t.endswith((",", ";", ":"))) for t in tokens[:-1]])
            )

            wants_time = bool(_ASKS_DURATION.match(asks))

            def nearness(i: int) -> tuple[bool, int, int, int]:
                # A number with the unit asked for first: "how long" wants a span of time
                # ("two interruptions of about 20 minutes each" -> 20 minutes).
                after = {w.lower().strip(".,;:()") for w in tokens[i + 1 : i + 3]}
                unit = wants_time and bool(after & _TIME_UNITS)
                same_clause = sum(clause[j] == clause[i] for j in used)
                return (not unit, -same_clause, min((abs(i - j) for j in used), default=0), i)

            first = min(digits, key=nearness)
            before = tokens[first - 1] if first > start else ""
            start = first - 1 if re.fullmatch(r"[A-Z]{2,4}|[$\u20ac\u00a3]", before) else first
            unit = first + 1  # and the words after it up to a stop word ("25 working days")
            while (
                unit < min(first + 4, len(tokens))
                and not _stop(tokens[unit])
                and not tokens[unit - 1].endswith((",", ";", ":"))
            ):
                unit += 1
            end = unit
    else:
        named = _ASKS_NAME.search(asks)
        if named is not None:
            head = named.group(1)
            if head is not None and head.lower() in STOPWORDS | QUESTION_SCAFFOLD:
                head = None
            if head is None and not re.search(r"(?i)\b(?:who|whom|whose|where)\b", asks):
                pass  # "what is ...?": no name asked for
            else:
                code = _code_in(tokens[start:end], asked) if head is not None else None
                if code is not None:
                    return code  # "Which function ...?" -> `ffi_prep_cif_var`
                place = bool(re.search(r"(?i)^\W*where\b", asks))
                name = _name_in(tokens[start:end], asked, head, place)
                if name is not None:
                    return name
    short = _tidy_edges(" ".join(tokens[start:end]))
    if not re.search(r"\w", short) or len(short.split()) > max_words:
        return text
    return short


def with_evidence(
    question: str,
    checked: str,
    supports: Sequence[Support],
    sources: Sequence[str],
    ranked: Sequence[RankedSentence] | None = None,
) -> tuple[str, str, list[Support]]:
    """Answer first, then the evidence: the short direct answer of a one-sentence answer with
    the source sentence backing it ("90 seconds - External BGP sessions use a hold time of 90
    seconds [1]."), or the checked sentences of a longer one, the one giving the quantity
    asked for first (`_lead_with_answer`; a list keeps its order); then
    the source sentences that best answer the question on their own (the extractive answer),
    unless already shown. Returns the text, the direct answer and the supports shown."""
    checked, supports = _lead_with_answer(question, checked, list(supports))
    first = split_sentences(checked)[0].text if checked else ""
    direct = direct_answer(question, first)
    if supports and direct == _bare(first):
        # The model's words hold no short phrase: the sentence they rest on may ("The pumapard
        # is a hybrid ..." -> "pumapard"), in the documents' own words.
        backing_phrase = direct_answer(question, supports[0].span.text)
        if backing_phrase != _bare(supports[0].span.text) and (
            content_words(backing_phrase) & content_words(first)
        ):
            direct = backing_phrase
    shown: list[Support] = []
    if len(supports) == 1:
        backing = supports[0]
        said = content_words(direct) | identifiers(direct)
        if direct != _bare(first) and (
            said <= content_words(backing.span.text) | identifiers(backing.span.text)
        ):
            text = f"{direct} \u2013 {quote([backing])}"
        elif normalize_sentence(first) == normalize_sentence(backing.span.text):
            text = checked  # the model copied the sentence: no need to quote it again
        else:
            text = f"{checked} {quote([backing])}"
        shown.append(backing)
    else:
        text = checked
        shown.extend(supports)
    places = {(s.n, s.span.start) for s in shown}
    best = extract_answer(question, sources, ranked=ranked)
    extra = [s for s in best if (s.n, s.span.start) not in places]
    if extra:
        text = f"{text} {quote(extra)}"
        shown.extend(extra)
    return text, direct, shown


# What the model leads with must answer the question at least this well, as a share of the
# best source sentence's score (`rank_sentences`): a supported sentence about something else
# in the passages ("Where is Adams buried?" -> another president's grave) is not an answer.
ANSWERS_AS_WELL = 0.7


def answers_as_well(
    supports: Sequence[Support], ranked: Sequence[RankedSentence], question: str = ""
) -> bool:
    """Whether the model's answer answers the question as well as the best source sentence:
    the sentence backing its first sentence scores at least `ANSWERS_AS_WELL` of the best
    one, and, asked for a number or a date that the best one gives, one of its backing
    sentences gives one too ("Report security bugs via HackerOne" does not answer "how long
    before they acknowledge my report?" where a source says "within 5 days"). A backing
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
        r.score
        for r in ranked
        if r.n == lead.n and r.span.start < lead.span.end and lead.span.start < r.span.end
    ]
    return not mine or max(mine) >= ANSWERS_AS_WELL * ranked[0].score


def normalize_sentence(text: str) -> str:
    return " ".join(re.findall(r"\w+", CITATION.sub("", text).lower()))


def quote(supports: Sequence[Support]) -> str:
    """The supports' source text, each cited; a list quoted whole keeps one item a line and
    stands on lines of its own."""
    parts = []
    for s in supports:
        said = _one_item_a_line(s.span.text)
        end = said[-1] if said[-1] in ".!?" else "."
        parts.append(f"{said.rstrip('.!?').rstrip()} [{s.n}]{end}")
    text = parts[0] if parts else ""
    for before, part in itertools.pairwise(parts):
        text += ("\n" if "\n" in before or "\n" in part else " ") + part
    return text


class AnswerService:
    """Question -> answer, as one list of steps shared by `ask` (whole answer) and `stream`
    (events while the model writes)."""

    def __init__(
        self,
        serving: IndexSlot,
        generator: Generator,
        params: GenerationParams,
        top_k: int = 4,
        mode: Mode = "hybrid",
        abstention: AbstentionThresholds | None = None,
        answer_mode: AnswerMode = "generative",
        support_threshold: float = 0.6,
        slots: GenerationSlots | None = None,
        focus_sentences: int = 0,
        timeout_s: float = 120.0,
        escalation: Escalation | None = None,
    ) -> None:
        self.serving = serving
        self.generator = generator
        self.params = params
        self.top_k = top_k
        self.mode = mode
        self.abstention = abstention or AbstentionThresholds(min_relevance=0.2)
        self._evidence: tuple[ServingIndex, EvidenceCheck] | None = None
        self.answer_mode = answer_mode
        self.support_threshold = support_threshold
        self.slots = slots
        self.focus_sentences = focus_sentences
        self.timeout_s = timeout_s
        self.escalation = escalation

    @property
    def searcher(self) -> HybridSearcher:
        """The searcher of the serving index now (an embedder swap replaces it)."""
        return self.serving.index.searcher

    @property
    def evidence(self) -> EvidenceCheck:
        """The evidence check of the serving index now: it compares sentences with the same
        embedder that retrieves, so it is made again when an embedder swap replaces it."""
        index = self.serving.index
        made = self._evidence
        if made is None or made[0] is not index:
            check = EvidenceCheck(
                self.abstention,
                index.searcher.embedder,
                index.keyword.term_weights,
                self.focus_sentences,
                index.keyword.unmentioned,
            )
            made = self._evidence = (index, check)
        return made[1]

    def ask(self, question: Question) -> Answer:
        """The whole answer (the last event of `stream`)."""
        with closing(self.stream(question)) as events:
            return final_answer(events)

    def stream(self, asked: Question) -> AnswerStream:
        """`SourcesEvent`, then a `TokenEvent` per piece the model writes, then `DoneEvent`
        with the checked answer (which may differ from the raw tokens: unsupported sentences
        are removed, or the answer becomes an abstention or a quotation).

        Retrieval, the prompt and admission to a generation slot all happen before the first
        event, so their errors (`PromptTooLongError`, `SlotsBusy`) come from the first
        `next()`, before anything is sent. Closing the generator stops the model and frees
        the slot. `max_tokens` and `timeout_s` can only lower the configured limits; when the
        time runs out while queued, `GenerationTimeout`; while writing, the model stops and
        the answer is checked from what it wrote (`timings["timed_out"]`). Answers that need
        no model (abstention, extractive mode) take no slot and have no token events. An
        abstention or an answer that failed the support check goes to the escalation model
        when the policy allows one (`actor` is recorded in the audit log)."""
        question, actor = asked.text, asked.actor
        timings: dict[str, float] = {}
        limit = self.timeout_s if asked.timeout_s is None else min(asked.timeout_s, self.timeout_s)
        deadline = time.perf_counter() + limit
        result = self._retrieve(asked, timings)
        answer = self._without_model(
            question, result, asked.answer_mode or self.answer_mode, timings
        )
        if answer is not None:
            # An escalation's admission, like a generation's, comes before the first event.
            claim = (
                EscalationClaim(self.escalation.slots.admit())
                if self.escalation is not None and self._escalates(answer, result.hits)
                else None
            )
            try:
                yield SourcesEvent(answer.sources)
                answer = yield from self._maybe_escalate(
                    question, answer, result.hits, actor, deadline, claim
                )
            finally:
                if claim is not None:
                    claim.release()
            yield DoneEvent(answer)
            return
        params = self._params(asked.max_tokens)
        shown = result.hits
        if self.focus_sentences:
            shown = [
                replace(
                    h,
                    chunk=replace(
                        h.chunk, text=focus(question, h.chunk.text, self.focus_sentences)
                    ),
                )
                for h in result.hits
            ]
        prompt = build_prompt(
            question,
            shown,
            self.generator.count_tokens,
            self.generator.context_size,
            params.max_tokens,
        )
        # The model sees the focused sentences; sources, checks and spans use whole passages.
        prompt.hits = result.hits[: len(prompt.hits)]
        sources = [Source.from_hit(i, h) for i, h in enumerate(prompt.hits, start=1)]
        ticket = self.slots.admit() if self.slots is not None else None
        pieces: list[str] = []
        try:
            yield SourcesEvent(sources)
            queued = time.perf_counter()
            if ticket is not None and not ticket.wait(timeout=deadline - queued):
                raise GenerationTimeout(
                    f"no generation slot became free within {limit:g} s; retry later"
                )
            timings["queue_ms"] = round((time.perf_counter() - queued) * 1000, 1)
            yield from self._generate(prompt, params, pieces, timings, deadline)
        finally:
            if ticket is not None:
                ticket.release()
        answer = self._check(question, "".join(pieces), prompt, sources, timings)
        answer = _without_asked_number(question, answer)
        answer = yield from self._maybe_escalate(question, answer, prompt.hits, actor, deadline)
        yield DoneEvent(answer)

    def _similarity(self, question: str, sentences: list[str]) -> list[float]:
        """Embedding cosine of each sentence with the question (the retrieval embedder)."""
        if not sentences:
            return []
        return [float(c) for c in self.evidence.cosines(question, sentences)]

    def _escalates(self, local: Answer, hits: Sequence[Hit]) -> bool:
        failed = local.abstained or local.mode == "extractive_fallback"
        return self.escalation is not None and failed and bool(hits)

    def _maybe_escalate(
        self,
        question: str,
        local: Answer,
        hits: Sequence[Hit],
        actor: str,
        deadline: float,
        claim: EscalationClaim | None = None,
    ) -> collections.abc.Generator[WaitingEvent, None, Answer]:
        """The larger model's checked answer when the local one abstained or failed the
        support check, the policy allows it and there are sources to give it; else `local`.
        It takes one of the escalation's own slots (`SlotsBusy` when they and their queue
        are full; `claim` if already admitted), waits and writes within the question's
        `deadline` (`GenerationTimeout` while queued; the local answer when the larger model
        runs past it), and yields `WaitingEvent`s meanwhile: closing the stream there (the
        client went away) stops the call to the larger model."""
        escalation = self.escalation
        if escalation is None or not self._escalates(local, hits):
            return local
        own = claim is None
        claim = claim or EscalationClaim(escalation.slots.admit())
        try:
            while not claim.ticket.wait(timeout=min(1.0, max(0.0, deadline - time.perf_counter()))):
                if time.perf_counter() >= deadline:
                    raise GenerationTimeout(
                        "no escalation slot became free within the question's time; retry later"
                    )
                yield WaitingEvent()
            if time.perf_counter() >= deadline:  # the local answer took the question's time
                local.timings["escalation_timed_out"] = True
                return local
            generator = escalation.generator
            prompt = build_prompt(
                question,
                list(hits),
                generator.count_tokens,
                generator.context_size,
                self.params.max_tokens,
            )
            sources = [Source.from_hit(i, h) for i, h in enumerate(prompt.hits, start=1)]
            reason = "abstained" if local.abstained else "unsupported"
            escalation.record(actor, question, [h.chunk.document_id for h in prompt.hits], reason)
            timings = dict(local.timings)
            start = time.perf_counter()
            pieces: list[str] = []
            reader = read_in_background(generator, prompt.messages, self.params, claim)
            try:
                for piece in reader:
                    if piece is not None:
                        pieces.append(piece)
                    if time.perf_counter() > deadline:
                        log.warning("escalation to %s ran past the deadline", escalation.endpoint)
                        local.timings["escalation_timed_out"] = True
                        return local
                    yield WaitingEvent()
            except GenerationError as exc:
                log.warning("escalation to %s failed: %s", escalation.endpoint, exc)
                return local
            finally:
                reader.close()  # the reader stops and closes the connection
            raw = "".join(pieces)
            timings["escalation_ms"] = round((time.perf_counter() - start) * 1000, 1)
            text = clean_answer(raw, len(prompt.hits))[0]
            answer = self._checked(question, text, prompt, sources, timings)
            answer.escalated = {
                "endpoint": escalation.endpoint,
                "model": generator.name,
                "reason": reason,
            }
            return answer
        finally:
            if own:
                claim.release()

    def _retrieve(self, asked: Question, timings: dict[str, float]) -> SearchResult:
        start = time.perf_counter()
        result = self.searcher.search(
            asked.text, asked.top_k or self.top_k, asked.mode or self.mode, asked.collections
        )
        timings["retrieve_ms"] = round((time.perf_counter() - start) * 1000, 1)
        return result

    def _without_model(
        self,
        question: str,
        result: SearchResult,
        answer_mode: AnswerMode,
        timings: dict[str, float],
    ) -> Answer | None:
        """The answer when the model is not needed: nothing relevant, or extractive mode."""
        reason = self.evidence.weakness(question, result)
        if reason is not None:
            timings.update(generate_ms=0.0, tokens=0, tokens_per_s=0.0)
            nearest = [Source.from_hit(i, h) for i, h in enumerate(result.hits, start=1)]
            answer = Answer(NOT_FOUND, True, nearest, [], timings, mode=answer_mode)
            answer.abstention_reason = reason
            return answer
        if answer_mode == "extractive":
            return _without_asked_number(question, self._extractive(question, result.hits, timings))
        return None

    def _params(self, max_tokens: int | None) -> GenerationParams:
        if max_tokens is None:
            return self.params
        return replace(self.params, max_tokens=max(1, min(max_tokens, self.params.max_tokens)))

    def _generate(
        self,
        prompt: BuiltPrompt,
        params: GenerationParams,
        pieces: list[str],
        timings: dict[str, float],
        deadline: float,
    ) -> Iterator[TokenEvent]:
        start = time.perf_counter()
        first_token_ms = None
        # The deadline goes with the params: a model in its own process that sends nothing by
        # then is stopped (retriever.model_process).
        stream = self.generator.stream(prompt.messages, replace(params, deadline=deadline))
        try:
            for piece in stream:
                if first_token_ms is None:
                    first_token_ms = (time.perf_counter() - start) * 1000
                pieces.append(piece)
                yield TokenEvent(piece)
                if time.perf_counter() > deadline:
                    timings["timed_out"] = True
                    break
        finally:
            # Stops the model now, not when the garbage collector gets to it.
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        generate_ms = (time.perf_counter() - start) * 1000
        raw = "".join(pieces)
        tokens = self.generator.count_tokens(raw) if raw else 0
        timings.update(
            generate_ms=round(generate_ms, 1),
            first_token_ms=round(first_token_ms or generate_ms, 1),
            prompt_tokens=prompt.prompt_tokens,
            tokens=tokens,
            # Decode rate: tokens after the first, over the time after the first.
            tokens_per_s=_rate(tokens - 1, generate_ms - (first_token_ms or 0.0)),
        )

    def _check(
        self,
        question: str,
        raw: str,
        prompt: BuiltPrompt,
        sources: list[Source],
        timings: dict[str, float],
    ) -> Answer:
        """Clean the model's text and keep only what the sources support."""
        text, model_citations = clean_answer(raw, len(prompt.hits))
        answer = self._checked(question, text, prompt, sources, timings)
        answer.model_cited = bool(model_citations)
        return answer

    def _checked(
        self,
        question: str,
        text: str,
        prompt: BuiltPrompt,
        sources: list[Source],
        timings: dict[str, float],
    ) -> Answer:
        texts = [h.chunk.text for h in prompt.hits]
        # The passages passed the evidence checks: a model that finds nothing in them (or
        # writes nothing that passes) failed, and the best extract answers instead.
        checked, supports, dropped = (
            ("", [], 0)
            if says_not_found(text)
            else verify(
                text,
                texts,
                self.support_threshold,
                question,
                [source_label(h) for h in prompt.hits],
            )
        )
        ranked = rank_sentences(question, texts, self._similarity)
        if supports and answers_as_well(supports, ranked, question):
            answer_text, direct, shown = with_evidence(
                question, checked, supports, texts, ranked=ranked
            )
            return Answer(
                answer_text,
                False,
                sources,
                _cited(shown),
                timings,
                supports=shown,
                dropped=dropped,
                mode="generative",
                direct_answer=direct,
            )
        # Nothing the model wrote is backed by the sources, or what it leads with answers the
        # question worse than the best source sentence: quote the sources instead.
        fallback = self._extractive(question, prompt.hits, timings, ranked)
        fallback.dropped = dropped
        fallback.mode = "extractive_fallback"
        return fallback

    def _extractive(
        self,
        question: str,
        hits: Sequence[Hit],
        timings: dict[str, float],
        ranked: Sequence[RankedSentence] | None = None,
    ) -> Answer:
        hits = list(hits)
        sources = [Source.from_hit(i, h) for i, h in enumerate(hits, start=1)]
        supports = extract_answer(
            question, [h.chunk.text for h in hits], similarity=self._similarity, ranked=ranked
        )
        timings.setdefault("generate_ms", 0.0)
        timings.setdefault("tokens", 0)
        timings.setdefault("tokens_per_s", 0.0)
        if not supports:
            return Answer(NOT_FOUND, True, sources, [], timings, mode="extractive")
        best = _answering_support(question, supports)
        return Answer(
            quote(supports),
            False,
            sources,
            _cited(supports),
            timings,
            supports=supports,
            mode="extractive",
            direct_answer=direct_answer(question, best.span.text),
        )


def _without_asked_number(question: str, answer: Answer) -> Answer:
    """`answer`, or an abstention when the question asks for what only a number can say and no
    sentence it quotes gives one: "Which dpkg version first supported ...?" with none about
    what the question asks of (`gives_asked_number`), "How much does the bounty pay?" with no
    amount at all (`states_amount`). Those sentences are about the subject, or another thing's
    number, not the answer."""
    if answer.abstained:
        return answer
    if needs_number(question):
        titles = {source.n: source.title for source in answer.sources}
        if any(
            gives_asked_number(question, s.span.text, titles.get(s.n, "")) for s in answer.supports
        ):
            return answer
        reason = "no passage found gives the number the question asks for"
    elif asks_amount(question):
        if any(states_amount(s.span.text, question) for s in answer.supports):
            return answer
        reason = "no passage found gives the amount the question asks for"
    else:
        return answer
    refused = Answer(NOT_FOUND, True, answer.sources, [], answer.timings, mode=answer.mode)
    refused.abstention_reason = reason
    return refused


def _cited(supports: Sequence[Support]) -> list[int]:
    return sorted({s.n for s in supports})
