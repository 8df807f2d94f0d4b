"""Words a PDF's text layer kerned apart, joined again.

unstructured's fast PDF path reads the text layer with pdfminer, which decides where a word
ends by the gap between two glyphs. Typesetters that kern and justify letter by letter (groff's
`man -Tpdf`, some TeX output) leave gaps inside words as wide as those between them, and
pdfminer writes "archi ve", "def ault", "cr eate": the words are then lost to keyword search and
to every check that compares a question's words with a sentence's (5% of the words of tar(1)
printed by groff). Poppler's `pdftotext` reads the same glyphs with the font's own spacing and
gets these words right, but gives no layout (headings, list items) that pdfminer's elements
carry. So the elements stay pdfminer's, and a space pdfminer put where pdftotext puts none is
taken out. Nothing is added or reordered: an element whose letters pdftotext gives in another
order is kept as it was. Without `pdftotext` (poppler-utils, installed with the OCR tools),
PDFs are read as before.
"""

from __future__ import annotations

import shutil
import subprocess
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# pdftotext reads a 100-page manual in well under a second; this bounds a pathological file.
_TIMEOUT_S = 60


@dataclass(frozen=True)
class _Page:
    """A page's non-space characters, and whether a space follows each in pdftotext's text."""

    letters: str
    spaced: tuple[bool, ...]


def _page(text: str) -> _Page:
    letters: list[str] = []
    spaced: list[bool] = []
    for char in unicodedata.normalize("NFKC", text):
        if char.isspace():
            if spaced:
                spaced[-1] = True
        else:
            letters.append(char)
            spaced.append(False)
    return _Page("".join(letters), tuple(spaced))


def poppler_pages(path: Path) -> list[str] | None:
    """Each page's text as `pdftotext` reads it, or None when it is not installed or fails."""
    program = shutil.which("pdftotext")
    if program is None:
        return None
    try:
        out = subprocess.run(
            [program, "-enc", "UTF-8", "-q", str(path), "-"],
            capture_output=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    # A form feed ends every page, the last one included.
    return out.stdout.decode("utf-8", errors="replace").split("\f")


def respaced(text: str, page: _Page, start: int) -> tuple[str, int]:
    """`text` with the spaces taken out that `page` has no space at, and where its letters
    end on the page; `text` unchanged and `start` when its letters are not found on the page
    from `start` (nor from the page's beginning)."""
    text = unicodedata.normalize("NFKC", text)
    letters = "".join(c for c in text if not c.isspace())
    if not letters:
        return text, start
    at = page.letters.find(letters, start)
    if at < 0:
        at = page.letters.find(letters)
    if at < 0:
        return text, start
    out: list[str] = []
    index = at - 1  # the page letter last written
    for char in text:
        if not char.isspace():
            index += 1
            out.append(char)
        elif out and not out[-1].isspace() and page.spaced[index]:
            out.append(char)
        elif out and char == "\n" and not out[-1].isspace():
            out.append(char)  # a line break pdftotext joined stays: layout, not a word gap
    return "".join(out).rstrip(), at + len(letters)


def join_kerned_words(path: Path, elements: Sequence[object]) -> None:
    """Mend, in place, the `text` of unstructured's elements of the PDF at `path` (each with
    `metadata.page_number`) where pdfminer split a word that `pdftotext` reads whole."""
    texts = poppler_pages(path)
    if texts is None:
        return
    pages: dict[int, _Page] = {}
    cursors: dict[int, int] = {}
    for element in elements:
        number = getattr(getattr(element, "metadata", None), "page_number", None)
        text = getattr(element, "text", None)
        if not isinstance(number, int) or not isinstance(text, str) or number > len(texts):
            continue
        page = pages.get(number)
        if page is None:
            page = pages[number] = _page(texts[number - 1])
        mended, cursors[number] = respaced(text, page, cursors.get(number, 0))
        if mended != text:
            element.text = mended  # type: ignore[attr-defined]
