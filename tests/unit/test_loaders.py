from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ingest.loaders import (
    LoadError,
    UnsupportedFileError,
    clean_text,
    is_ignored,
    load_document,
    sniff_mismatch,
    table_rows_as_text,
)
from tests.conftest import DEMO, ROOT, write


def _texts(path: Path) -> str:
    return "\n".join(e.text for e in load_document(path).elements)


@pytest.mark.parametrize(
    "name, phrase",
    [
        ("network-operations-runbook.md", "ALM-4471"),
        ("incident-escalation-policy.html", "P1"),
        ("hr-leave-policy.docx", "25 working days"),
        ("it-security-policy.pdf", "Kestrel Telecom"),
        ("product-price-sheet.xlsx", "KT-FIB-500"),
        ("customer-onboarding.pptx", "Onboarding"),
        ("facilities-guide.txt", "badge"),
        ("it-maintenance-announcement.eml", "maintenance"),
    ],
)
def test_every_demo_format_yields_its_text(name: str, phrase: str) -> None:
    assert phrase.lower() in _texts(DEMO / name).lower()


def test_pdf_keeps_page_numbers() -> None:
    pages = {e.page for e in load_document(DEMO / "it-security-policy.pdf").elements}
    assert {1, 2, 3} <= pages


def test_pptx_pages_are_slides() -> None:
    pages = {e.page for e in load_document(DEMO / "customer-onboarding.pptx").elements}
    assert len(pages) >= 5


def test_markdown_heading_path(tmp_path: Path) -> None:
    md = write(tmp_path / "guide.md", "# Guide\n\n## Install\n\n### Linux\n\nRun the installer.\n")
    doc = load_document(md)
    body = [e for e in doc.elements if not e.is_heading]
    assert body[-1].headings == ("Guide", "Install", "Linux")
    assert doc.title == "Guide"


def test_docx_heading_path() -> None:
    doc = load_document(DEMO / "hr-leave-policy.docx")
    entitled = next(e for e in doc.elements if "25 working days" in e.text)
    assert entitled.headings and "Annual leave" in entitled.headings


def test_csv_rows_read_with_their_header(tmp_path: Path) -> None:
    csv = write(tmp_path / "plans.csv", "code,name,price\nA-1,Basic,10\nB-2,Pro,25\n")
    rows = [e.text for e in load_document(csv).elements]
    assert any("code: B-2" in r and "price: 25" in r for r in rows)


def test_mojibake_is_repaired_and_the_documents_own_characters_kept() -> None:
    # UTF-8 read as Latin-1 (C1 controls kept) and as Windows-1252, in one text.
    assert clean_text("the country\u00e2\u0080\u0099s GDP \u00e2\u0080\u0094 10%") == (
        "the country\u2019s GDP \u2014 10%"
    )
    assert clean_text("Ã©tÃ© in ZÃ¼rich") == "été in Zürich"
    assert clean_text("the \ufb01rst \ufb02oor") == "the first floor"  # PDF ligatures
    # Correct text is left as written: accents, curly quotes, entities, other scripts.
    kept = "Café naïve “quoted” &amp; Straße Ελληνικά 日本語 £5"
    assert clean_text(kept) == kept
    assert clean_text("  two\n\nlines\t here ") == "two lines here"


def test_typesetting_marks_go_and_words_broken_at_a_line_end_are_joined() -> None:
    assert clean_text("if ELE-\nMENT is NULL, the imple-\n  mentation") == (
        "if ELEMENT is NULL, the implementation"
    )
    # A compound keeps its hyphen: a capitalized half, or a hyphen inside a line.
    assert clean_text("Anglo-\nSaxon self-service") == "Anglo-Saxon self-service"
    assert clean_text("ffi_prep_cif (ffi_cif *cif) \u00b6\nThis (cid:13)works") == (
        "ffi_prep_cif (ffi_cif *cif) This works"
    )


def test_a_documentation_pages_link_bar_is_not_indexed(tmp_path: Path) -> None:
    path = tmp_path / "closures.html"
    path.write_text(
        "<html><head><title>The Closure API</title></head><body>"
        '<div class="nav-panel"><p>Next: <a href="a.html">Closure Example</a>, Previous: '
        '<a href="b.html">Multiple ABIs</a>, Up: <a href="c.html">Using libffi</a></p></div>'
        "<h1>The Closure API</h1><p>Closures are allocated with ffi_closure_alloc.</p>"
        "<p>Next: the closure is prepared with ffi_prep_closure_loc.</p></body></html>"
    )
    text = _texts(path)
    assert "Closure Example" not in text and "Multiple ABIs" not in text
    assert "ffi_closure_alloc" in text and "ffi_prep_closure_loc" in text  # one label: prose


def test_a_definition_list_term_stays_with_its_definition(tmp_path: Path) -> None:
    path = tmp_path / "groups.html"
    path.write_text(
        "<html><head><title>Groups</title></head><body><h1>Groups</h1><dl>"
        "<dt>dialout</dt><dd><p>Full and direct access to serial ports.</p></dd>"
        "<dt>cdrom</dt><dd><p>Access to optical drives.</p></dd>"
        "</dl><p>Other groups have no associated user.</p></body></html>"
    )
    text = _texts(path)
    assert "dialout: Full and direct access to serial ports." in text.splitlines()
    assert "cdrom: Access to optical drives." in text.splitlines()
    assert "Other groups have no associated user." in text.splitlines()


def test_a_manual_pages_terms_keep_their_definitions_as_groff_prints_them(
    tmp_path: Path,
) -> None:
    # `man -Thtml`: each term and its definition are paragraphs, told apart only by indent.
    path = tmp_path / "limits.conf.html"
    path.write_text(
        "<html><head><title>LIMITS.CONF</title></head><body><h2>DESCRIPTION</h2>"
        '<p style="margin-left:17%"><b>nofile</b></p>'
        '<p style="margin-left:23%">maximum number of open file descriptors</p>'
        '<p style="margin-left:17%"><b>cpu</b></p>'
        '<p style="margin-left:23%">maximum CPU time (minutes)</p>'
        '<p style="margin-left:17%"><b>-k, --keep</b></p>'
        '<p style="margin-left:23%">Keep (do not delete) input files.</p>'
        "<p>value</p><p>Every item is read from the file at login.</p>"
        "</body></html>"
    )
    lines = _texts(path).splitlines()
    assert "nofile: maximum number of open file descriptors" in lines
    assert "cpu: maximum CPU time (minutes)" in lines
    assert "-k, --keep: Keep (do not delete) input files." in lines
    # A capitalized paragraph after a plain word is no definition of it.
    assert "Every item is read from the file at login." in lines


def test_a_text_file_with_mojibake_is_indexed_readable(tmp_path: Path) -> None:
    # The text a UTF-8 file becomes when some tool on its way read it as Latin-1.
    text = "Uruguay’s beef is sold as “Uruguay Natural”.\n".encode().decode("latin-1")
    path = tmp_path / "uruguay.txt"
    path.write_text(text, encoding="utf-8")
    assert _texts(path) == "Uruguay’s beef is sold as “Uruguay Natural”."


def test_table_rows_as_text() -> None:
    html = "<table><tr><th>Plan</th><th>Price</th></tr><tr><td>X</td><td>9</td></tr></table>"
    assert table_rows_as_text(html) == ["Plan: X; Price: 9"]


def test_a_layout_table_of_terms_reads_term_by_term_with_its_line_breaks() -> None:
    # `man -Thtml` lays a list out as a table: an empty indent cell, the term, its text.
    html = (
        "<table><tr><td/><td>success</td><td/><td>No error occurred and the<br/>requested "
        "entry is returned.</td></tr><tr><td/><td>notfound</td><td/><td>The entry was not<br/>"
        "found. The default action is<br/>continue.</td></tr></table>"
    )
    assert table_rows_as_text(html) == [
        "success: No error occurred and the requested entry is returned.",
        "notfound: The entry was not found. The default action is continue.",
    ]


def test_unsupported_and_mismatched_files(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFileError, match="unsupported file type"):
        load_document(write(tmp_path / "a.xyz", "hello"))
    fake_pdf = write(tmp_path / "fake.pdf", "just text")
    with pytest.raises(UnsupportedFileError, match="not a PDF"):
        load_document(fake_pdf)
    assert sniff_mismatch(".docx", b"hello") is not None
    assert sniff_mismatch(".txt", b"ab\x00cd") is not None
    assert sniff_mismatch(".md", b"# fine") is None


def test_corrupt_pdf_gives_a_load_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\n" + b"\x00garbage" * 50)
    with pytest.raises(LoadError):
        load_document(broken)


def test_temporary_and_hidden_files_are_ignored() -> None:
    for name in ("~$report.docx", ".DS_Store", "upload.part", "x.tmp", "notes.md~"):
        assert is_ignored(name), name
    assert not is_ignored("report.docx")


def test_parsing_needs_no_network() -> None:
    """A fresh process with every non-loopback connection refused parses DOCX, HTML and text
    (the formats for which unstructured loads its spaCy model)."""
    script = textwrap.dedent(
        f"""
        import socket
        real_connect = socket.socket.connect
        def guarded(self, address):
            host = address[0] if isinstance(address, tuple) else address
            if isinstance(host, str) and not host.startswith(("127.", "::1", "/")):
                raise OSError("network blocked by test: " + str(address))
            return real_connect(self, address)
        socket.socket.connect = guarded
        socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(OSError("blocked"))
        from pathlib import Path
        from ingest.loaders import load_document
        from unstructured.nlp.tokenize import sent_tokenize
        for name in ("hr-leave-policy.docx", "incident-escalation-policy.html",
                     "facilities-guide.txt"):
            assert load_document(Path({str(DEMO)!r}) / name).elements, name
        assert len(sent_tokenize("One sentence. Another one.")) == 2
        print("offline-ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert "offline-ok" in result.stdout, result.stderr[-2000:]


def test_titles_are_the_ones_documents_declare(tmp_path: Path) -> None:
    # HTML: <title>, else the first <h1>, never merely the first heading unstructured finds.
    assert load_document(DEMO / "incident-escalation-policy.html").title == (
        "Incident Escalation Policy | Kestrel Telecom"
    )
    body = "<h2>Scope</h2><p>Who may book the boardroom and for how long.</p>"
    h1 = write(tmp_path / "rooms.html", f"<html><body><h1>Room Booking</h1>{body}</body></html>")
    assert load_document(h1).title == "Room Booking"
    # PDF document information and Office core properties, as their authors set them.
    assert load_document(DEMO / "it-security-policy.pdf").title == (
        "Kestrel Telecom Information Technology Security Policy"
    )
    assert load_document(DEMO / "hr-leave-policy.docx").title == "Kestrel Telecom Leave Policy"


def test_a_bold_term_read_as_a_title_is_an_entry_not_a_section() -> None:
    """A manual page printed to PDF sets each term in bold on its own line, which the PDF
    parser calls a title; as a section it would cut its definition off from it."""
    from unstructured.documents.elements import NarrativeText, Title

    from ingest.loaders import _elements

    raw = [
        Title("DESCRIPTION"),
        Title("hash_alg"),
        NarrativeText("This relation specifies the default hash algorithm. Valid: tea."),
        Title("-k --keep"),
        NarrativeText("Keep (don't delete) input files during compression."),
        Title("Examples"),
        NarrativeText("Two examples follow."),
    ]
    elements = _elements(raw)
    texts = [e.text for e in elements]
    assert "hash_alg: This relation specifies the default hash algorithm. Valid: tea." in texts
    assert "-k --keep: Keep (don't delete) input files during compression." in texts
    entry = elements[texts.index("-k --keep: Keep (don't delete) input files during compression.")]
    assert entry.headings == ("DESCRIPTION",)
    assert elements[-1].headings == ("Examples",)  # a real section stays one


def test_a_wrapped_plain_text_email_reads_in_paragraphs_with_its_quotes_unmarked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "forward.eml"
    path.write_text(
        "From: Dana <dana@example.org>\nTo: ops@example.org\nSubject: Fwd: tmux README\n"
        "Date: Tue, 14 May 2024 09:42:17 +0200\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\n\n"
        "Hi all,\n\n"
        "Following up on yesterday's stand-up: we agreed to standardise on tmux\n"
        "rather than screen on the jump hosts. Marco asked where the upstream\n"
        "notes are, so below is the README that ships in the Debian package.\n\n"
        "-------- Forwarded message --------\n"
        "> Welcome to tmux!\n>\n"
        "> tmux is a terminal multiplexer: it enables a number of terminals to be\n"
        "> created, accessed, and controlled from a single screen.\n"
    )
    lines = _texts(path).splitlines()
    assert (
        "Following up on yesterday's stand-up: we agreed to standardise on tmux rather than "
        "screen on the jump hosts. Marco asked where the upstream notes are, so below is the "
        "README that ships in the Debian package." in lines
    )
    assert (
        "tmux is a terminal multiplexer: it enables a number of terminals to be created, "
        "accessed, and controlled from a single screen." in lines
    )


def test_a_sentence_a_pdf_cut_into_lines_is_whole_again() -> None:
    """unstructured's fast PDF path reads some PDFs line by line."""
    from unstructured.documents.elements import ListItem, NarrativeText, Title

    from ingest.loaders import _elements

    def on_page(element: Any, page: int = 2) -> Any:
        element.metadata.page_number = page
        return element

    raw = [
        on_page(Title("Remote access")),
        on_page(ListItem("A VPN session is disconnected after 30 minutes and, at most, after 12")),
        on_page(NarrativeText("hours, after which you must log in again with MFA.")),
        on_page(NarrativeText("Kestrel Telecom - IT Security Policy")),  # a running header
        on_page(NarrativeText("Kestrel Telecom - IT Security Policy"), 3),
        on_page(NarrativeText("are kept in the vault managed by the security team."), 3),
        on_page(NarrativeText("Limits are set per item and are imple-"), 3),
        on_page(NarrativeText("mented by the kernel."), 3),
    ]
    texts = [e.text for e in _elements(raw)]
    assert (
        "A VPN session is disconnected after 30 minutes and, at most, after 12 hours, "
        "after which you must log in again with MFA." in texts
    )
    assert "are kept in the vault managed by the security team." in texts
    assert "Limits are set per item and are implemented by the kernel." in texts
