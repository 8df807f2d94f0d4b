"""Grounding checks without a model: is each answer sentence supported by a given source, and
which source sentences answer the question best (the extractive answer)."""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

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
# "name()" is tried only where a word starts, and its word is never given back: tried at every
# character of a long word without "()" ("ééé...", "___..."), it cost the square of its length.
IDENTIFIER = re.compile(r"(?<!\w)\w++\(\)|[A-Za-z0-9][\w./-]*[A-Za-z0-9_]")
# An option as written in a manual ("-u", "--include-untracked"): the pattern the option
# shapes below share.
OPTION = r"--?[A-Za-z][\w-]*"
# A command-line option where a word starts (`-t`, `--novalid`, `--trace-children=yes` ->
# `--trace-children`): the word splitter keeps only its letters ("t"), which say nothing.
COMMAND_OPTION = re.compile(r"(?<![^\s(\[\"'`])--?[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*(?![\w-])")


# Questions answered by a quantity, a date or a time.
# A preposition may come first: "At what time ...?", "By how much ...?".
_LEADING_PREPOSITION = r"(?:(?:at|by|in|on|until|till|from|to|for|after|before|within)\s+)?"
ASKS_NUMBER = re.compile(
    rf"(?i){_LEADING_PREPOSITION}(how (many|much|long|often|old|far|big|large|high|fast|"
    r"quickly|soon)|when|what (time|year|date|day|percentage|number))\b"
)
# "Which dpkg version ...?", "What uid is ...?", "On what port ...?": what is asked for can
# only be written with a number, so a sentence without one does not answer it.
_ASKS_NUMBERED = re.compile(
    rf"(?i)^\W*{_LEADING_PREPOSITION}(?:what|which)\s+"
    r"(?:(?!(?:is|are|was|were|do|does|did|has|have|had|can|could|will|would|should|must|the|a"
    r"|an|of)\b)[\w-]+\s+){0,2}?"
    r"(?:versions?|uids?|gids?|ports?|percentage|percent|number)\b"
)


def _numbered_ask(question: str) -> re.Match[str] | None:
    return _ASKS_NUMBERED.match(asking_clause(question))


def needs_number(question: str) -> bool:
    """Whether only a number answers the question: a version, a user or group id, a port, a
    percentage asked for with "what/which". ("How many ...?" is often answered in words:
    "all", "none", "every few years".)"""
    return _numbered_ask(question) is not None


# "How many/much ...?", "What is the maximum/number of ...?" are answered by a number or a
# word of quantity ("all", "none", "most", "unlimited").
_ASKS_AMOUNT = re.compile(
    rf"(?i)^\W*{_LEADING_PREPOSITION}(?:how\s+(?:many|much)\b|what(?:'s|\u2019s|\s+(?:is|are|"
    r"was|were))\s+the\s+(?:(?:(?:maximum|minimum|total)\s+)?(?:number|count)\s+of|"
    r"(?:maximum|minimum)\b))"
)
_QUANTITY_WORDS = frozenset(
    (  # noqa: SIM905 - a word list reads better as one string
        "no none nothing nobody all every each both several few many most more less half "
        "once twice one single unlimited free"
    ).split()
)


def asks_amount(question: str) -> bool:
    return bool(_ASKS_AMOUNT.match(asking_clause(question)))


def states_amount(text: str, question: str) -> bool:
    """Whether `text` gives an amount the question does not: a number, or a word of quantity
    ("none", "most", "twice")."""
    return any(
        _is_count(w, _COUNTS) or w.lower() in _QUANTITY_WORDS for w in _unsaid(text, question)
    )


# "Which environment variable / option / function ...?" asks for a name written as code of
# that kind (group 1). Not "What does the --novalid switch do?", which names it.
_ASKS_CODE = re.compile(
    r"(?i)^\W*(?:which|what)\s+(?:(?!(?:is|are|was|were|does|do|did)\b)[\w'.-]+\s+){0,3}?"
    r"(environment\s+variables?|variables?|options?|flags?|switch(?:es)?|settings?|"
    r"directives?|functions?|macros?|signals?)\b"
)
# The shapes of each kind: an environment variable (`FC_DEBUG`, `TMPDIR`), an option or a
# setting (`-u`, `--squash`, `KillUserProcesses=`), a signal (`SIGHUP`); any identifier
# (`ffi_prep_cif`, `MaxSessions`, `deflateInit()`) is one too.
_ENVIRONMENT_NAME = re.compile(r"\b(?:[A-Z][A-Z0-9]*_[A-Z0-9_]+|[A-Z]{3,}[0-9]*)\b")
_OPTION_OR_SETTING = re.compile(rf"(?<![\w-]){OPTION}|\b[A-Za-z]\w*=")
_SIGNAL = re.compile(r"\bSIG[A-Z0-9]+\b")
# A reference entry headed by a name in lower case, its description after it: "copytruncate
# Truncate the original log file ...", "nofile: maximum number of open file descriptors".
_PLAIN_ENTRY_HEAD = re.compile(r"([a-z][\w.-]*[a-z0-9])(?::\s+|\s+(?=[A-Z]))")


def asked_code(question: str) -> str | None:
    """The kind of code name the question asks for ("environment variable", "option",
    "function", ...), or None."""
    found = _ASKS_CODE.match(asking_clause(question))
    return " ".join(found.group(1).lower().split()) if found else None


def names_code(kind: str, text: str, question: str) -> bool:
    """Whether `text` names code of that kind that the question does not."""
    if kind.startswith("signal"):
        shapes = _SIGNAL.findall(text)
    elif "variable" in kind or kind.startswith(("function", "macro")):
        shapes = _ENVIRONMENT_NAME.findall(text)
    else:
        shapes = _OPTION_OR_SETTING.findall(text)
        head = _PLAIN_ENTRY_HEAD.match(text)
        if head:
            shapes.append(head.group(1))
    asked = question.lower()
    return any(name.lower() not in asked for name in [*shapes, *identifiers(text)])


def gives_asked_number(question: str, sentence: str, title: str = "") -> bool:
    """Whether `sentence` gives the number a `needs_number` question asks for: it states a
    number the question does not, and it is about what the question asks of, holding (with
    its source's `title`) half its key terms or more besides the thing asked for ("they had
    uid/gid 41", said of the gnats user, is no answer to "What uid is assigned to the
    www-data user?")."""
    found = _numbered_ask(question)
    if found is None or not states_number(sentence, question):
        return False
    asked_for = {_stem(w) for w in _WORD.findall(found.group(0).lower())}
    subject = key_terms(question).keys() - asked_for
    held = content_words(f"{title}\n{sentence}") | identifiers(sentence)
    return 2 * len(subject & held) >= len(subject)


# Questions answered by a date ("When ...?", "In what year ...?").
ASKS_DATE = re.compile(
    r"(?i)^\W*(?:(?:and|so|but|then)\s+)?(?:\w+\s+){0,2}?(?:when\b|(?:in\s+)?"
    r"(?:what|which)\s+(?:year|date|day|month|century|decade)\b)"
)
MONTH = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
    r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\.?"
)
# A date as written in prose: "March 4, 1861", "4 March 1861", "July 1862", "1832", "the 1920s".
DATE = re.compile(
    rf"\b(?:{MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{3,4}}"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{MONTH},?\s+\d{{3,4}}"
    rf"|{MONTH},?\s+\d{{3,4}}|{MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?{MONTH}"
    r"|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{4}-\d{2}-\d{2}"
    r"|(?:1\d|20)\d0s|(?:1\d|20)\d\d(?:\s*(?:BC|AD|BCE|CE)\b)?)\b"
)
NUMBER_WORDS = frozenset(
    (  # noqa: SIM905 - a word list reads better as one string
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
        "eighty ninety hundred thousand million billion dozen dozens hundreds thousands millions"
    ).split()
)
_ASKS_PERSON = re.compile(r"(?i)\b(?:who|whom|whose)\b")
_ASKS_PLACE = re.compile(r"(?i)^\W*where\b")
# A place in a file system or on a network: "/var/lib/logrotate/status", "~/.config/pip",
# "https://example.org/docs".
_LOCATION = re.compile(r"(?<![\w/])(?:~|\$\w+|%\w+%)?(?:/[\w.@+-]+){2,}/?|\bhttps?://\S+")
AnswerKind = Literal["number", "date", "name"]


_QUESTION_WORD = re.compile(r"(?i)\b(?:how|what|when|which|who|whom|whose|where|why)\b")
_OPENS_WITH_QUESTION_WORD = re.compile(
    rf"(?i){_LEADING_PREPOSITION}(?:how|what|when|which|who|whom|whose|where|why)\b"
)


_QUESTION_SENTENCES = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


@functools.lru_cache(maxsize=1024)  # asked of every candidate sentence (`holds_kind`)
def asking_clause(question: str) -> str:
    """The part of a question that asks: from its question word on when a clause setting the
    scene comes first ("Before maintenance on a core router, how long do I wait?" -> "how long
    do I wait?"), else the whole question. Of a question in several sentences, the one that
    asks ("My cron jobs mail me. What do I put in the crontab?" -> the second)."""
    asks = question.strip()
    sentences = _QUESTION_SENTENCES.split(asks)
    asking = [s for s in sentences if s.rstrip().endswith("?")]
    if len(sentences) > 1 and asking:
        asks = asking[-1].strip()
    for comma in re.finditer(",", asks):
        head, rest = asks[: comma.start()], asks[comma.end() :].lstrip()
        if _QUESTION_WORD.search(head):
            break
        if _OPENS_WITH_QUESTION_WORD.match(rest):
            return rest
    return asks


def asked_kind(question: str) -> AnswerKind | None:
    """What kind of phrase a question asks for: a quantity ("how many/long ...?"), a date
    ("when ...?"), a name ("who/where ...?"), or None (anything else)."""
    asks = asking_clause(question)
    if ASKS_DATE.match(asks):
        return "date"
    if ASKS_NUMBER.match(asks) or needs_number(question):
        return "number"
    if _ASKS_PERSON.search(asks) or _ASKS_PLACE.match(asks):
        return "name"
    return None


def holds_kind(kind: AnswerKind, sentence: str, question: str) -> bool:
    """Whether a sentence holds a phrase of that kind that the question does not: a number,
    a date, or a capitalized word past the sentence's first."""
    words = _unsaid(sentence, question)
    if kind == "number":
        return any(_is_count(w, NUMBER_WORDS) for w in words)
    if kind == "date":
        return any(m.group(0) not in question for m in DATE.finditer(sentence))
    if _ASKS_PLACE.match(asking_clause(question)) and any(
        m.group(0) not in question for m in _LOCATION.finditer(sentence)
    ):
        return True  # where a program keeps something: a path or an address
    first = _WORD.search(sentence)
    return any(
        is_name_word(w) and w.lower() not in STOPWORDS and (first is None or w != first.group(0))
        for w in words
    )


# Capitalized words that are times, never the person or place a question asks for.
CALENDAR_WORDS = frozenset(
    (  # noqa: SIM905 - a word list reads better as one string
        "january february march april may june july august september october november "
        "december monday tuesday wednesday thursday friday saturday sunday"
    ).split()
)


def _unsaid(text: str, question: str) -> list[str]:
    """The words of `text` (as written) that the question does not use."""
    said = {w.lower() for w in _WORD.findall(question)}
    return [w for w in _WORD.findall(text) if w.lower() not in said]


def _is_count(word: str, written_out: frozenset[str]) -> bool:
    """A word holding digits, or one of the numbers `written_out`."""
    return any(c.isdigit() for c in word) or word.lower() in written_out


def states_number(text: str, question: str) -> bool:
    """Whether `text` gives a number the question does not: digits, or a number written out
    other than "one" (mostly a pronoun: "would phase out that one")."""
    return any(_is_count(w, _COUNTS) for w in _unsaid(text, question))


_COUNTS = NUMBER_WORDS - {"one"}


def is_name_word(word: str) -> bool:
    """A word that may be part of a name: capitalized letters ("Lindqvist", "O'Brien",
    "Jean-Luc"), not a code such as "P1" or "ALM-4471"."""
    return bool(_NAME_WORD.fullmatch(word))


_NAME_WORD = re.compile(r"[A-Z][a-z\u00c0-\u024f]*(?:['\u2019-][A-Za-z\u00c0-\u024f]+)*")


# A question written in Title Case ("What Is The Upload Limit?") capitalizes every word: its
# capitals name nothing.
_TITLE_CASE_SHARE = 0.5
# How alike a name in a question and a word of a passage must be to be one name misspelt
# ("Janpan", "Japan"; "Anderw", "Andrew").
_NAME_RATIO = 0.8


def names_in(question: str) -> list[str]:
    """The names a question mentions, lower case: words written with a capital after the first
    word of its sentence ("Which group controls the Docker daemon?" -> docker). Not stop words,
    months and days, acronyms ("CEO", "EV": documents often spell them out) or codes
    (`identifiers`, matched whole elsewhere)."""
    found: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", question.strip()):
        words = [w.strip(".,;:!?\"'()[]{}\u2018\u2019\u201c\u201d") for w in sentence.split()][1:]
        words = [re.sub(r"['\u2019]s?$", "", w) for w in words]
        capitals = [w for w in words if w[:1].isupper()]
        if len(capitals) > _TITLE_CASE_SHARE * max(len(words), 1):
            continue
        for word in capitals:
            lower = word.lower()
            if (
                len(word) >= 3
                and word.isalpha()
                and not word.isupper()
                and word[1:].islower()
                and lower not in STOPWORDS
                and lower not in CALENDAR_WORDS
                and lower not in found
            ):
                found.append(lower)
    return found


def lower_words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def spelt_alike(name: str, words: set[str]) -> bool:
    """Whether `words` (`lower_words` of a text) hold `name` or a word one slip away from it
    ("Janpan" -> "Japan")."""
    if name in words:
        return True
    for word in words:
        if (
            word[:1] == name[:1]
            and len(word) >= 4
            and abs(len(word) - len(name)) <= 2
            and difflib.SequenceMatcher(None, name, word).ratio() >= _NAME_RATIO
        ):
            return True
    return False


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Support:
    """Where a claim is backed: source number (1-based), character span, and the share of the
    claim's words the span holds (for an extract, how well it answers: `extract_answer`)."""

    n: int
    span: Span
    score: float


def split_sentences(text: str) -> list[Span]:
    spans: list[Span] = []
    for match in _SENTENCE.finditer(text):
        raw = match.group(0)
        # A sentence never opens with the separator a layout left before it (": Sea otters").
        stripped = raw.lstrip(" \t\n\r:;,").rstrip()
        if len(stripped) < 2:
            continue
        start = match.start() + (len(raw) - len(raw.lstrip(" \t\n\r:;,")))
        if spans and _goes_on(spans[-1], text[spans[-1].end : start], stripped):
            start = spans[-1].start
            spans.pop()
        end = match.start() + len(raw.rstrip())
        spans.append(Span(start, end, text[start:end]))
    return spans


# The period of these ends a word, not the sentence: titles before a name ("Dr. Hall"), ...
_TITLES = re.compile(
    r"(?i)mr|mrs|ms|dr|prof|st|mt|ft|gen|gov|sen|rep|rev|hon|lt|col|capt|sgt|maj|adm|pres"
)
# ... and these before a number or a word that goes on ("ca. 1730", "pp. 45", "vs. the").
_ABBREVIATIONS = re.compile(
    r"(?i)ca|c|approx|vs|cf|viz|al|eg|ie|no|nos|vol|vols|pp|p|fig|figs|ed|eds|b|d|fl|ch|sec|art|esp"
)
# A dotted abbreviation: "U.S.", "e.g.", "i.e.", "a.m.".
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
# Words that open a sentence after a dotted abbreviation that ends one ("in the U.S. He ...").
_OPENERS = re.compile(r"(?i)a|an|he|she|it|its|in|on|at|they|we|this|that|these|there|the")


def _goes_on(before: Span, gap: str, after: str) -> bool:
    """Whether the period that ended `before` belongs to an abbreviation or an initial, so
    that `after`, on the same line, goes on with the same sentence: "Nathan K. Hall",
    "(ca. 1730)", "Dr. Lee", "the U.S. Army", "e.g. the", or any sentence that would
    open with a lowercase function word ("... Jr. and his son")."""
    if not before.text.endswith(".") or "\n" in gap:
        return False
    words = before.text[:-1].split()
    first = after.split(None, 1)[0]
    if not words or not first:
        return False
    last = words[-1].lstrip("([\"'\u201c")
    if _TITLES.fullmatch(last):
        return True
    if last.isalpha() and len(last) <= _SHORT_WORD and _inside_parentheses(before.text, after):
        return True  # "(resp. UID_MAX)"; not a citation's period: "(... 2.8 billion [1]. inodes"
    lowered = first[0].islower() or first[0].isdigit() or first[0] in "(["
    if re.fullmatch(r"[A-Z]", last):  # an initial, the name going on ("K. Hall", not "B. The")
        return lowered or (first[0].isupper() and not _OPENERS.fullmatch(first))
    if _DOTTED.fullmatch(last):
        return lowered or not _OPENERS.fullmatch(first)
    if _ABBREVIATIONS.fullmatch(last) and lowered:
        return True
    # An abbreviation not listed ("Jr.", "Inc.", "etc."), before a word that never opens a
    # sentence; after a word of a sentence or a citation ("... provinces [1]. the ..."), a new
    # sentence is only written in lower case.
    short = re.fullmatch(r"[A-Z][a-z]{0,3}|etc", last) is not None
    return short and first[0].islower() and first.strip(",;:").lower() in STOPWORDS


_SHORT_WORD = 6


def _inside_parentheses(before: str, after: str) -> bool:
    """Whether the period stands inside parentheses that `after` closes: "The default for
    SYS_UID_MIN (resp. SYS_UID_MAX) is 101", "(Fig. 3. Left)". A sentence ends outside them."""
    opened = before.rfind("(") > before.rfind(")")
    closing = after.find(")")
    return opened and closing >= 0 and not 0 <= after.find("(") < closing


# A doubled final consonant that an -ing or -ed doubled ("running", "stopped"), not one the
# word has anyway ("fall", "miss", "buzz").
_DOUBLED = re.compile(r"([b-df-hj-km-np-rtv-y])\1$")


@functools.lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    """The part the forms of a word share, without a dictionary: "insulate", "insulates",
    "insulated", "insulating" -> "insulat"; "policies", "policy" -> "policy"; "stopped",
    "stop" -> "stop". Collisions ("care", "car") cost less than forms that fail to meet."""
    if word.endswith(("ies", "ied")):
        # "policies" -> "policy"; a short one keeps its "ie": "died", "dies" -> "die"
        return word[:-3] + "y" if len(word) > 4 else word[:-1]
    if word.endswith(("ses", "xes", "zes", "ches", "shes")) and len(word) > 5:
        word = word[:-2]  # "classes", "boxes"; "procedures" loses only its "s"
    elif word.endswith(("ss", "us", "is")):
        pass  # "class", "status", "analysis": no plural "s" to take off
    else:
        for suffix in ("ing", "ed"):
            if len(word) > len(suffix) + 2 and word.endswith(suffix):
                # The "e" these took is already gone: "agreed" -> "agre", as "agree" below.
                stem = word[: -len(suffix)]
                return _DOUBLED.sub(r"\1", stem) if len(stem) > 3 else stem
        if len(word) > 3 and word.endswith("s"):
            word = word[:-1]
    if len(word) > 3 and word.endswith("e") and word.isalpha():
        word = word[:-1]
    return word


def content_words(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS}


def passage_words(text: str) -> set[str]:
    """`content_words` of a passage, and each two words written apart that a question may
    write as one ("name servers" holds "nameserver", "file system" "filesystem")."""
    words = _WORD.findall(text.lower())
    content = {_stem(w) for w in words if w not in STOPWORDS}  # = content_words(text)
    lettered = [w for w in words if w.isalpha()]
    joined = {
        _stem(a + b)
        for a, b in pairwise(lettered)
        if a not in STOPWORDS and b not in STOPWORDS and len(a) > 2 and len(b) > 2
    }
    return content | joined


def numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(text)}


def identifiers(text: str) -> set[str]:
    """Names of things written as code (lower case, without a trailing "()"):
    `asn1_der_decoding`, `deflateInit()`, `POL-OPS-007`, `AS64500`, `-t`. The embedder and the word
    splitter both see them as unknown pieces; matched whole they are the surest key terms."""
    found = set()
    for match in IDENTIFIER.finditer(text):
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
    found.update(option.lower() for option in COMMAND_OPTION.findall(text))
    return found


def is_fragment(sentence: str) -> bool:
    """A sentence that says nothing by itself: a list marker or number alone, punctuation,
    only stop words, a short heading ("Level 1:"), or an aside in brackets that the sentence
    splitter cut off its sentence ("(July 4 1872 - January 5 1933).")."""
    core = LIST_MARKER.sub("", CITATION.sub("", sentence)).strip()
    core = core.strip(" .!?;,\"'\u201c\u201d")
    if re.fullmatch(r"\([^()]*\)|\[[^\[\]]*\]", core):
        return True
    words = _WORD.findall(core)
    lettered = [w for w in words if any(c.isalpha() for c in w)]
    if not any(w.lower() not in STOPWORDS for w in lettered):
        return True
    return core.endswith(":") and len(words) <= 6


# A section's number before its heading: "5.3 ", "2.1.4. " (not a list's "1." or "2)").
_SECTION_NUMBER = re.compile(r"^\d+\.\d+(?:\.\d+)*\.?\s+")


def is_heading(span: str) -> bool:
    """A source line that is a heading, not a sentence: six words or fewer, no end punctuation,
    no number and no "label: value" ("Changes and maintenance windows"), after the section
    number it may open with ("5.3 Lost or stolen devices")."""
    text = _SECTION_NUMBER.sub("", span.strip())
    return (
        len(text.split()) <= 6
        and not text.endswith((".", "!", "?", ":", ";", ")", '"'))
        and ":" not in text
        and not any(c.isdigit() for c in text)
    )


# Minor words a title leaves in lower case ("Encyclopedia of Turtles").
_TITLE_MINOR = re.compile(r"(?i)a|an|and|the|of|in|on|for|to|at|by|with|from|or|vs")
# A citation's access note or identifier: "Retrieved August 11, 2007.", "ISBN 0805069577."
# A manual page's name and section as its header and footer print them: "TIMESYNCD.CONF(5)".
_MAN_PAGE = re.compile(r"\b[A-Z][A-Z0-9._-]+\(\d\w*\)")
# A bibliography entry's author: "Monroe, James", "Wilson, Douglas L.", "Roosevelt, Theodore
# (1999)".
_AUTHOR = re.compile(r"[A-Z][\w'\u2019-]+, (?:[A-Z][\w'\u2019.-]*\s*)+(?:\(\d{4}\))?")
# A further-reading list's item, opening with its author: "*Keller, Morton, ed., ...".
_LISTED_WORK = re.compile(
    r"^\s*\*\s*[A-Z][\w'\u2019-]+, [A-Z][\w'\u2019.-]*(?:\s+[A-Z][\w'\u2019.-]*)*[,.(]"
)
_YEAR = re.compile(r"\(\d{4}\)")
_MAN_REFERENCE = re.compile(r"[\w.@-]+\(\d\w*\),?")
_REFERENCE = re.compile(r"(?i)(?:retrieved|accessed|isbn|doi)\b")


def is_title(sentence: str) -> bool:
    """A line that names a work, a person or a page rather than saying something: a title
    ("Encyclopedia of Turtles", "Theodore Roosevelt: An Autobiography."), a bibliography
    entry's author ("* Monroe, James.", "Roosevelt, Theodore (1999)."), a citation's access
    note ("Retrieved August 11, 2007.") or a manual page's running header ("XZ(1) XZ Utils
    XZ(1)"). A label and its value ("Owner: Network Operations") and a line in capitals (a
    warning) are not titles."""
    if _LISTED_WORK.match(sentence):
        return True
    core = LIST_MARKER.sub("", CITATION.sub("", sentence)).strip().strip(" .*\"'\u201c\u201d")
    if _REFERENCE.match(core) or _AUTHOR.fullmatch(core):
        return True
    core = _YEAR.sub("", core).strip()  # "The Writings Of Theodore Roosevelt (1967)"
    if len(_MAN_REFERENCE.findall(core)) >= 2 and len(_MAN_REFERENCE.sub("", core).split()) <= 3:
        return True  # a list of manual pages: "SEE ALSO systemd(1), journalctl(1)"
    tokens = core.split()
    if len(tokens) <= 8 and (
        (len(tokens) >= 3 and tokens[0] == tokens[-1])
        or _MAN_PAGE.search(core)
        or (bool(tokens) and _MAN_REFERENCE.fullmatch(tokens[-1]) and DATE.search(core))
    ):
        # A running header or footer: "BSD  January 13, 2023  BSD", "4th Berkeley
        # Distribution 2023-02-05 resolv.conf(5)".
        return True
    words = re.findall(r"[^\W\d_][\w'\u2019-]*", core)
    if not words or any(c.isdigit() for c in core) or core.isupper():
        return False
    label = core.split(":", 1)[0] if ":" in core else ""
    if label and len(label.split()) < 2:
        return False
    return len(words) <= 12 and all(w[0].isupper() or _TITLE_MINOR.fullmatch(w) for w in words)


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


# Words that turn what follows into its opposite; "n't" endings count too ("doesn't").
_NEGATIONS = frozenset(
    ["not", "no", "never", "cannot", "nor", "neither", "without", "none", "nothing", "nobody"]
)
_NEGATION_TOKEN = re.compile(r"[\w']+|[.,;:!?()]")
# How many content words after a negation it denies ("will not permit connections").
_NEGATED_REACH = 2


# After a negation, these make a bound or an addition, not a denial: "no more than 5
# minutes", "not later than noon", "not only ... but also".
_COMPARATIVES = frozenset(["more", "less", "fewer", "later", "earlier", "longer", "greater"])


def _is_negation(token: str) -> bool:
    return token in _NEGATIONS or token.endswith("n't")


def _denies(tokens: list[str], i: int) -> bool:
    """Whether the negation at `tokens[i]` denies what follows it."""
    after = tokens[i + 1 : i + 4]
    if after[:1] == ["only"]:
        return False
    return not (after[:1] and after[0] in _COMPARATIVES and "than" in after[1:])


def _negated(text: str) -> set[str] | None:
    """The content words a negation in `text` denies (the next `_NEGATED_REACH` of its clause),
    or None when `text` negates nothing."""
    tokens = _NEGATION_TOKEN.findall(text.lower().replace("\u2019", "'"))
    denied: set[str] | None = None
    for i, token in enumerate(tokens):
        if not _is_negation(token) or not _denies(tokens, i):
            continue
        denied = denied or set()
        taken = 0
        for after in tokens[i + 1 :]:
            if taken == _NEGATED_REACH or not after[0].isalnum():
                break  # the clause ends at punctuation
            if after not in STOPWORDS and not _is_negation(after):
                denied.add(_stem(after))
                taken += 1
    return denied


def contradicts(claim: str, backing: str) -> bool:
    """Whether the claim reverses its backing sentence: one of them denies words that the
    other states without any negation ("ssh will ... allow connections to hosts whose host
    key has changed" against "... but will not permit connections to hosts with changed host
    keys"). A claim that keeps a negation is not judged: it may only rephrase it."""
    claimed, backed = _negated(claim), _negated(backing)
    if backed and claimed is None and backed & content_words(claim):
        return True
    return bool(claimed and backed is None and claimed & content_words(backing))


# How much more a sentence holding the kind of phrase the question asks for (a date for
# "when") scores, as a share of its word overlap; and the weight of its embedding cosine.
KIND_BONUS = 1.0
COSINE_WEIGHT = 0.5
Similarity = Callable[[str, list[str]], list[float]]


@dataclass(frozen=True)
class RankedSentence:
    """A source sentence scored as an answer to a question (`rank_sentences`)."""

    n: int
    span: Span
    score: float
    overlap: float  # the IDF-weighted share of the question's words it holds


# A sentence this short says what it is about through the one before it ("NumberOfPassword
# Prompts: Specifies the number of password prompts before giving up." / "The default is 3.").
_ELLIPTIC_WORDS = 5


def rank_sentences(
    question: str, sources: Sequence[str], similarity: Similarity | None = None
) -> list[RankedSentence]:
    """Every source sentence that could answer, best first: those sharing the most
    (IDF-weighted) words with the question, more so when they hold the kind of phrase it asks
    for (a date for "when", a number for "how many", a name for "who"), plus `COSINE_WEIGHT`
    times their embedding cosine with the question when a `similarity` (question, sentences
    -> cosines) is given. Fragments and headings are left out."""
    asked = content_words(question)
    if not asked:
        return []
    kind = asked_kind(question)
    code = asked_code(question)
    how_to = ASKS_HOW_TO.match(asking_clause(question)) is not None
    asks_default = bool(ASKS_DEFAULT.search(question))
    # What each sentence is about: its words, and, asked for an id, a version, a port or a
    # name written as code, those of the sentence before it when it names its subject only by
    # a pronoun ("... the operator user ... It had uid 37.", "undo_dir: ... the directory of
    # the undo file. It can be overridden via the E2FSPROGS_UNDO_DIR variable."). (Asked who
    # or why, the sentence before often holds another answer; asked how long, a pronoun
    # sentence is more often an aside: "It may be split".)
    leaning = needs_number(question) or code is not None
    candidates = []
    bags: list[set[str]] = []  # each candidate's own words
    about: list[set[str]] = []  # and what it is about (its bag, and more: see above)
    for n, source in enumerate(sources, start=1):
        before: Span | None = None
        entry: set[str] = set()  # the term of the entry the sentence is in ("hash_alg: ...")
        for span in split_sentences(source):
            if before is None or "\n" in source[before.end : span.start]:
                entry = set()
            term = _TERM_FIRST.match(span.text)
            if term:
                entry = passage_words(term.group(0))
            if (
                len(span.text) >= MIN_SENTENCE_CHARS
                and not span.text.endswith("?")  # a FAQ's question answers nothing
                and not is_fragment(span.text)
                and not is_heading(span.text)
                and not is_title(span.text)
            ):
                candidates.append((n, span))
                own = passage_words(span.text)
                bags.append(own)
                words = own
                elliptic = kind == "number" and len(span.text.split()) <= _ELLIPTIC_WORDS
                if (
                    ((leaning and leans_back(span.text)) or elliptic)
                    and before is not None
                    and not is_heading(before.text)
                ):
                    words = words | passage_words(before.text)
                about.append(words | entry)
            before = span
    if not candidates:
        return []
    frequency: Counter[str] = Counter()
    for bag in bags:
        frequency.update(bag)
    total = len(candidates)
    weight = {w: math.log(1 + total / frequency[w]) if frequency[w] else 0.0 for w in asked}
    top = sum(weight.values()) or 1.0
    cosines = (
        similarity(question, [span.text for _, span in candidates])
        if similarity is not None
        else [0.0] * len(candidates)
    )
    terms = defined_terms(question)
    ranked = []
    for rank, ((n, span), bag) in enumerate(zip(candidates, about, strict=True)):
        overlap = sum(weight[w] for w in asked & bag) / top
        score = overlap + COSINE_WEIGHT * cosines[rank]
        if terms and overlap > 0 and defines(span.text, terms):
            score += KIND_BONUS * overlap  # the entry or definition of what is asked about
        if kind is not None and overlap > 0:
            # Asked for a default, a sentence is judged with the one after it that states it,
            # and a reference entry with the sentence that states the value asked for, as they
            # are quoted (`_with_default`, `_with_entry_value`).
            quoted = _with_default(question, sources[n - 1], span) if asks_default else span
            quoted = _with_entry_value(question, sources[n - 1], quoted)
            if holds_kind(kind, quoted.text, question):
                score += KIND_BONUS * overlap
        elif how_to and overlap > 0 and _OPTION_ENTRY.match(span.text):
            score += KIND_BONUS * overlap  # a manual's options are its ways of doing things
        # A small prior for better-ranked sources and earlier sentences breaks ties.
        ranked.append(RankedSentence(n, span, score - 0.01 * n - 0.0001 * rank, overlap))
    ranked.sort(key=lambda r: -r.score)
    return ranked


def answering_passages(
    question: str, sources: Sequence[str], k: int, similarity: Similarity | None = None
) -> list[int]:
    """The indexes of the `k` sources whose best sentence answers the question best
    (`rank_sentences`), in their given order. The passage that holds the answer is often
    found just below the first `k`, behind passages that share the question's words only."""
    if len(sources) <= k:
        return list(range(len(sources)))
    best: dict[int, float] = {}
    for ranked in rank_sentences(question, sources, similarity):
        best.setdefault(ranked.n - 1, ranked.score)
    order = sorted(range(len(sources)), key=lambda i: (-best.get(i, -math.inf), i))
    return sorted(order[:k])


def extract_answer(
    question: str,
    sources: Sequence[str],
    max_sentences: int = 2,
    similarity: Similarity | None = None,
    ranked: Sequence[RankedSentence] | None = None,
) -> list[Support]:
    """The `max_sentences` source sentences that answer the question best (`rank_sentences`,
    or the given `ranked` sentences of the same sources), in source order; one that opens
    with a pronoun comes with the sentence before it, and asked for a default, one without it
    with the sentence after it that states it (`_with_default`)."""
    if ranked is None:
        ranked = rank_sentences(question, sources, similarity)
    chosen: list[Support] = []
    seen: set[str] = set()
    for r in ranked:
        if len(chosen) == max_sentences or r.overlap <= 0:
            break
        said = " ".join(r.span.text.lower().split())
        if said in seen:  # the same sentence in two passages is quoted once
            continue
        if any(c.n == r.n and c.span.start <= r.span.start < c.span.end for c in chosen):
            continue  # already quoted as the sentence another one leans on
        seen.add(said)
        source = sources[r.n - 1]
        whole = _whole_list(source, r.span) if ASKS_SEQUENCE.search(question) else None
        leaned = _with_antecedent(source, r.span)
        if any(c.n == r.n and leaned.start < c.span.end <= r.span.start for c in chosen):
            leaned = r.span  # the sentence it leans on is quoted already, just before it
        defined = _with_definition(question, source, _with_reason(question, source, leaned))
        reasoned = _with_entry_value(question, source, _with_default(question, source, defined))
        followed = _with_what_follows(source, reasoned)
        if any(c.n == r.n and reasoned.end <= c.span.start < followed.end for c in chosen):
            followed = reasoned  # the line it introduces is quoted already
        span = whole or followed
        chosen.append(Support(r.n, span, round(r.score, 4)))
    return sorted(chosen, key=lambda s: (s.n, s.span.start))


# "How do I ...?", "How can you ...?": asks for a way of doing something.
ASKS_HOW_TO = re.compile(r"(?i)^\W*how\s+(?:do|can|could|should|would|may)\s+(?:i|you|we|one)\b")
# A sentence that is an option's entry in a manual: "-k --keep: Keep (don't delete) input
# files", "--strip-components=NUMBER Strip NUMBER leading components".
_OPTION_ENTRY = re.compile(rf"{OPTION}(?:=\S*)?(?:,?\s+{OPTION}(?:=\S*)?)*:?\s")


# Questions whose answer is a sequence of steps or levels: one item of it answers part. One
# level or step ("the highest classification level", "the first step") is one item.
ASKS_SEQUENCE = re.compile(
    r"(?i)\b(?:procedures?|process(?:es)?|steps|stages|levels|phases|sequence|workflow|"
    r"escalation (?:path|chain|matrix))\b"
)
# The label a list item opens with: "1.", "b)", "-", "•", or a word and its number ("Level 2:",
# "Step 3 -"). Items of one list share the shape (`_label_shape`).
_ITEM_LABEL = re.compile(
    r"^(?:(\d{1,2}|[a-z])[.)]|[-*\u2022]|([A-Z][a-z]+)\s+(\d{1,2})\s*[:.)\u2013-])\s"
)
MAX_LIST_ITEMS = 12


def _label_shape(line: str) -> str | None:
    found = _ITEM_LABEL.match(line)
    if found is None:
        return None
    if found.group(2):
        return found.group(2)  # "Level", "Step", ...
    if found.group(1):
        return "number" if found.group(1).isdigit() else "letter"
    return found.group(0)[:1]  # the bullet


def _whole_list(source: str, span: Span) -> Span | None:
    """The whole list `span` is one item of (lines opening with labels of one shape, blank
    lines between them allowed), when it has 3 to `MAX_LIST_ITEMS` items; else None."""
    lines = []  # (start, end, text) of each non-blank line
    offset = 0
    for raw in source.splitlines(keepends=True):
        text = raw.strip()
        if text:
            start = offset + raw.index(text)
            lines.append((start, start + len(text), text))
        offset += len(raw)
    here = next((i for i, (s, e, _) in enumerate(lines) if s <= span.start < e), None)
    if here is None or (shape := _label_shape(lines[here][2])) is None:
        return None
    first = last = here
    while first > 0 and _label_shape(lines[first - 1][2]) == shape:
        first -= 1
    while last + 1 < len(lines) and _label_shape(lines[last + 1][2]) == shape:
        last += 1
    if not 3 <= last - first + 1 <= MAX_LIST_ITEMS:
        return None
    start, end = lines[first][0], lines[last][1]
    return Span(start, end, source[start:end])


# A sentence opening with one of these leans on the one before it for what it is about.
_LEANS_BACK = frozenset(
    ["he", "she", "it", "they", "these", "this", "those", "his", "her", "its", "their", "such"]
)


# "Members of this group can ...": a demonstrative among a sentence's first words points back
# as a pronoun opening it does.
_DEMONSTRATIVES = frozenset(["this", "these", "those"])
# A term and its definition as the parser joins them: "hash_alg: ...", "-k --keep: ...".
_TERM_FIRST = re.compile(r"(?:[\w.-]+|-[^:\s]+(?:,? -[^:\s]+)*):\s")
_DEMONSTRATIVE_REACH = 4


def leans_back(sentence: str) -> bool:
    """Whether a sentence says what it is about only through the one before it: it opens with
    a pronoun ("It had uid 37.") or has a demonstrative among its first words. An entry that
    names its term first ("hash_alg: This relation specifies ...") is about that term."""
    if _TERM_FIRST.match(sentence):
        return False
    words = [w.strip(",;:").lower() for w in sentence.split()[:_DEMONSTRATIVE_REACH]]
    return bool(words) and (words[0] in _LEANS_BACK or any(w in _DEMONSTRATIVES for w in words[1:]))


def _with_antecedent(source: str, span: Span) -> Span:
    """`span`, with the sentence before it in its source when it opens with a pronoun ("He
    determined ...", "These let them ..."): quoted alone it would not say who or what."""
    if not leans_back(span.text):
        return span
    before = [s for s in split_sentences(source[: span.start]) if s.end <= span.start]
    last = before[-1].text if before else ""
    if not last or is_heading(last) or is_title(last) or is_fragment(last):
        return span
    start = before[-1].start
    return Span(start, span.end, source[start : span.end])


# What a sentence ending in a colon introduces on the line after it ("To force compiling
# against libc malloc, use:" / "% make MALLOC=libc") is quoted with it, up to this length.
_INTRODUCED_CHARS = 200


def _with_what_follows(source: str, span: Span) -> Span:
    """`span`, with the line after it when it ends in a colon and that line is short: a
    command, a value or an example that the sentence introduces and without which it says
    nothing ("... make sure to use the following command:" / "make distclean")."""
    nxt = _sentence_after(source, span) if span.text.rstrip().endswith(":") else None
    if nxt is None or "\n" not in source[span.end : nxt.start] or len(nxt.text) > _INTRODUCED_CHARS:
        return span
    return _through(source, span, nxt)


# "What does X do / mean / control?", "What is X?": the question asks what X is. A sentence
# that opens with X defines it: a reference page's entry ("KillUserProcesses= Takes a boolean
# argument. Configures whether ...") or a definition ("Corepack is an experimental tool ...").
ASKS_DEFINITION = re.compile(
    r"(?i)^\W*what(?:'s|\s+(?:exactly\s+)?(?:is|are|does|do))\s+(?:exactly\s+)?"
)
# The subject of "What is X?" or "What does X do?": up to four words, the whole of what is
# asked about. "What is the response time for P2?" asks a value, not what a response time is.
_SUBJECT = re.compile(
    r"(?i)(?:an?\s+)?([^\s,?]+(?:\s+[^\s,?]+){0,3}?)\s*(?:[,?]|$|\s+(?:do|does|mean|means|"
    r"control|controls|set|sets|say|says|stand for)\b)"
)
_DEFINITION_WORDS = 8  # an entry this short says little until the sentence after it
_DEFINITION_REACH = 400


def defined_terms(question: str) -> set[str]:
    """What a "what is X / what does X do" question asks to have defined (lower case): its
    subject when that is a short phrase ("Corepack", "KillUserProcesses="), and the
    identifiers in it ("-t" of "xz -t")."""
    asks = asking_clause(question)
    found = ASKS_DEFINITION.match(asks)
    subject = _SUBJECT.match(asks[found.end() :]) if found else None
    if subject is None:
        return set()
    phrase = subject.group(1)
    if phrase.lower() in STOPWORDS or phrase.startswith("the "):
        return set()
    return {phrase.lower(), *identifiers(phrase)}


# What follows the term in a sentence that defines it: "KillUserProcesses= ...", "-t, --test",
# "Corepack is ...", "stray cat: ..."; after an identifier, also its description ("--novalid
# Skip loading ...").
_DEFINES_AFTER = re.compile(
    r"\s*[=:(,\u2013\u2014]|\s+-\s|\s+(?:is|are|means|refers to|stands for)\b"
)


def defines(sentence: str, terms: set[str]) -> bool:
    """Whether the sentence opens with one of `terms` as an entry or a definition does."""
    opening = re.sub(r"(?i)^(?:the|an?)\s+", "", LIST_MARKER.sub("", sentence))
    for term in terms:
        if not opening.lower().startswith(term):
            continue
        rest = opening[len(term) :]
        if _DEFINES_AFTER.match(rest) or (
            term in identifiers(term) and re.match(r"\s+[A-Z]", rest)
        ):
            return True
    return False


def _with_definition(question: str, source: str, span: Span) -> Span:
    """`span`, when it is a short entry opening with the term the question asks to have
    defined ("KillUserProcesses= Takes a boolean argument."), through the sentences after it
    in its paragraph that say what the term does, up to `_DEFINITION_REACH` characters."""
    terms = defined_terms(question)
    if not terms or not defines(span.text, terms) or len(span.text.split()) > _DEFINITION_WORDS:
        return span
    quoted = span
    for sentence in _sentences_after(source, span, _DEFINITION_REACH):
        if "\n" in source[span.end : sentence.start] and is_heading(sentence.text):
            break
        quoted = _through(source, span, sentence)
        if len(quoted.text.split()) > 2 * _DEFINITION_WORDS:
            break
    return quoted


def _sentences_after(source: str, span: Span, reach: int, paragraph: bool = True) -> list[Span]:
    """The sentences after `span` in its source (offsets in the source), within `reach`
    characters and, with `paragraph`, before the next blank line."""
    rest = source[span.end : span.end + reach]
    blank = re.search(r"\n\s*\n", rest) if paragraph else None
    return [
        Span(span.end + s.start, span.end + s.end, s.text)
        for s in split_sentences(rest[: blank.start()] if blank else rest)
    ]


def _through(source: str, span: Span, last: Span) -> Span:
    """`span` extended through `last`, a sentence after it in the same source."""
    return Span(span.start, last.end, source[span.start : last.end])


def _sentence_after(source: str, span: Span) -> Span | None:
    """The sentence following `span` in its source (offsets in the source), if any."""
    after = _sentences_after(source, span, len(source), paragraph=False)
    return after[0] if after else None


# A question about what holds when nothing is set, and a sentence that says it. Reference pages
# state a default after describing the option: "AccuracySec= Specify the accuracy the timer
# shall elapse with. Defaults to 1min."
ASKS_DEFAULT = re.compile(
    r"(?i)\b(?:defaults?|out of the box|stock settings|without (?:giving|setting|specifying|"
    r"passing|choosing)|unless (?:i|you|we) (?:set|give|specify|pass|choose))\b"
)
_STATES_DEFAULT = re.compile(
    r"(?i)\bdefaults?\b|\bif (?:not|none is|nothing is) (?:set|given|specified)\b"
)
_DEFAULT_REACH = 600


def _with_default(question: str, source: str, span: Span) -> Span:
    """`span`, asked what holds by default, through the sentence after it that states the
    default when it states none itself and that sentence follows in the same paragraph, at
    most `_DEFAULT_REACH` characters on."""
    if not ASKS_DEFAULT.search(question) or _STATES_DEFAULT.search(span.text):
        return span
    for sentence in _sentences_after(source, span, _DEFAULT_REACH):
        if _STATES_DEFAULT.search(sentence.text):
            return _through(source, span, sentence)
    return span


# A reference page's entry opens with the name it describes: a setting ("HoldoffTimeoutSec=",
# "PollIntervalMinSec=, PollIntervalMaxSec=") or an option ("-t, --test"). Its value and
# limits often come sentences later, after a blank line ("... Defaults to 30s.").
_ENTRY_HEAD = re.compile(rf"(?:[A-Za-z][\w.-]*=|{OPTION})(?:,|\s|$)")
_ENTRY_REACH = 600


def _with_entry_value(question: str, source: str, span: Span) -> Span:
    """`span`, when it opens a reference entry and holds no phrase of the kind the question
    asks for (a number for "how long"), through the sentence of the same entry that holds
    one, the one stating the default first: up to the next entry, at most `_ENTRY_REACH`
    characters on."""
    if not _ENTRY_HEAD.match(span.text):
        return span
    kind = asked_kind(question)
    if kind not in ("number", "date") or holds_kind(kind, span.text, question):
        return span
    holding = []
    for sentence in _sentences_after(source, span, _ENTRY_REACH, paragraph=False):
        if "\n" in source[span.end : sentence.start] and _ENTRY_HEAD.match(sentence.text):
            break  # the next entry
        if holds_kind(kind, sentence.text, question):
            holding.append(sentence)
    if not holding:
        return span
    # The entry's own value ("Defaults to 30s.") over a number in passing ("If set to 0, ...").
    stated = next((h for h in holding if _STATES_DEFAULT.search(h.text)), holding[0])
    return _through(source, span, stated)


# "Why ...?" asks for a reason: a sentence giving one says so.
ASKS_REASON = re.compile(r"(?i)^\W*(?:why\b|for what reason\b|what (?:is|was) the reason\b)")
_GIVES_REASON = re.compile(
    r"(?i)\b(?:because|due to|owing to|so that|in order to|since|as a result|reason|for|to|"
    r"allows?|helps?|protects?|prevents?|thus|therefore)\b"
)
_THAT_WORDS = frozenset(["this", "that", "it", "these", "those", "such"])


def _with_reason(question: str, source: str, span: Span) -> Span:
    """`span`, with the sentence after it when the question asks why and that sentence gives
    the reason for it ("All penguins are countershaded ... This is for camouflage."): the
    sentence restating what the question asks about is ranked first, its reason is not."""
    if not ASKS_REASON.match(asking_clause(question)) or _GIVES_REASON.search(span.text):
        return span
    nxt = _sentence_after(source, span)
    if nxt is None:
        return span
    opener = nxt.text.split(maxsplit=1)[0].strip(",;:").lower()
    if opener not in _THAT_WORDS or not _GIVES_REASON.search(nxt.text):
        return span
    return _through(source, span, nxt)


def question_coverage(question: str, passages: Sequence[str]) -> float:
    """Share of the question's content words found in the passages. A question whose key
    terms appear in none of them ("the CEO's salary" over leave policies) is likely not
    answered there, however close the embeddings are."""
    asked = content_words(question)
    if not asked:
        return 1.0
    found: set[str] = set()
    for passage in passages:
        found |= asked & passage_words(passage)
    return len(found) / len(asked)


# Words that shape a question rather than say what it is about ("how much", "do I need").
QUESTION_SCAFFOLD = frozenset(
    (  # noqa: SIM905 - a word list reads better as one string
        "much many long often far get got need needs use used using take make made kind type "
        "exactly usually typically currently please tell know give find also any some all one "
        "other about happen happens mean means called name named phrase sentence briefly "
        "nutshell summary"
    ).split()
)


_SCAFFOLD_STEMS = frozenset(_stem(w) for w in QUESTION_SCAFFOLD)


def key_terms(question: str) -> dict[str, str]:
    """The words a question is about, stem -> word as written (lower case). An identifier
    (`POL-OPS-007`, `deflateInit()`) is one term, not its pieces."""
    named = identifiers(question)
    pieces = {p for name in named for p in _WORD.findall(name)} - named
    terms = {
        _stem(w): w
        for w in _WORD.findall(question.lower())
        if w not in STOPWORDS
        and _stem(w) not in _SCAFFOLD_STEMS  # its forms too: "happened", "named"
        and w not in pieces
        and not (len(w) == 1 and w.isalpha())
    }
    terms.update({name: name for name in named})
    return terms


# How much a word of the asker's wording weighs that no passage holds (`key_term_coverage`).
WORDING_WEIGHT = 0.25


def key_term_coverage(
    question: str,
    passages: Sequence[str],
    weights: Callable[[list[str]], dict[str, float]],
    wording: set[str] | frozenset[str] = frozenset(),
) -> float:
    """How much of what the question is about one passage holds: the largest share, over the
    passages, of the question's key terms found in it, each weighted by `weights` (the
    corpus's inverse document frequency, so rare terms such as names weigh most). A term of
    the asker's `wording` (a verb or an adjective: `retriever/word_roles.py`) that no passage
    holds weighs `WORDING_WEIGHT` of that: the documents say it in their own words.

    A question whose distinctive terms no single passage holds ("the CEO's salary" against
    pay-scale tables) is likely not answered there, however close the embeddings are."""
    terms = key_terms(question)
    if not terms:
        return 1.0
    weight_of = weights(list(terms.values()))
    held: list[set[str]] = []  # the terms each passage holds
    for passage in passages:
        words = passage_words(passage)
        found = terms.keys() & (words | identifiers(passage))
        found |= {t for t in terms.keys() - found if _variant_in(t, words)}
        held.append(found)
    anywhere = set().union(*held)
    weight = {
        t: weight_of[w] * (WORDING_WEIGHT if w in wording and t not in anywhere else 1.0)
        for t, w in terms.items()
    }
    total = sum(weight.values()) or 1.0
    return max((sum(weight[t] for t in found) / total for found in held), default=0.0)


# How alike a question's word and a passage's must be to count as one misspelt ("tobaggan",
# "toboggan"): difflib's ratio, for words long enough that one slip leaves most letters.
_MISSPELT_RATIO = 0.85
_VARIANT_MIN_LETTERS = 6


def _variant_in(stem: str, words: set[str]) -> bool:
    """Whether `words` hold another form of `stem`: a derived one that begins with it
    ("extinct", "extinction") or one with a letter or two wrong. A person typing a question
    words it differently from the document, or misspells the rare word it is about; the
    embedder still finds the passage, and the passage must not be judged to miss the word."""
    if len(stem) < _VARIANT_MIN_LETTERS or not stem.isalpha():
        return False
    for word in words:
        if word[0] != stem[0] or len(word) < _VARIANT_MIN_LETTERS:
            continue
        if word.startswith(stem) or stem.startswith(word):
            return True
        if (
            abs(len(word) - len(stem)) <= 2
            and difflib.SequenceMatcher(None, stem, word).ratio() >= _MISSPELT_RATIO
        ):
            return True
    return False


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
    # A sentence that stood on its own line (a heading, a list item, an OCR'd title) keeps
    # it: joined by a space it would read as the start of the next sentence.
    parts = [spans[chosen[0]].text]
    for before, i in pairwise(chosen):
        apart = "\n" in text[spans[before].end : spans[i].start]
        parts.append(("\n" if apart else " ") + spans[i].text)
    return "".join(parts)
