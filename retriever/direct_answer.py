"""The answer's text as shown: the short direct answer it opens with (the phrase or number
the question asks for, cut from a sentence), then the source sentences quoted as evidence."""

from __future__ import annotations

import collections
import itertools
import re
from collections.abc import Sequence

from retriever.grounding import (
    ASKS_DATE,
    ASKS_NUMBER,
    CALENDAR_WORDS,
    CITATION,
    DATE,
    IDENTIFIER,
    LIST_MARKER,
    NUMBER_WORDS,
    OPTION,
    QUESTION_SCAFFOLD,
    RankedSentence,
    Support,
    asking_clause,
    content_words,
    extract_answer,
    identifiers,
    is_name_word,
    needs_number,
    split_sentences,
)
from retriever.keyword import STOPWORDS

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


_OPTION = re.compile(OPTION)


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


def answering_support(question: str, supports: Sequence[Support]) -> Support:
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
