"""Words a typesetter kerned apart in a PDF's text layer are read whole (ingest/pdf_spacing.py).

`tests/fixtures/archivist.pdf` is `archivist.1` printed by groff (`groff -man -Tpdf -rHY=0`),
the way `man -Tpdf` prints every manual page: pdfminer alone reads it as "archi ving",
"--k eep-going", "e very". (Its DESCRIPTION paragraph pdfminer reads out of order, so it is
kept as pdfminer reads it.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ingest import pdf_spacing
from ingest.loaders import load_document
from ingest.pdf_spacing import _page, respaced

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "archivist.pdf"
needs_pdftotext = pytest.mark.skipif(
    shutil.which("pdftotext") is None, reason="poppler-utils (pdftotext) is not installed"
)


def _text(path: Path) -> str:
    return "\n".join(e.text for e in load_document(path).elements)


@needs_pdftotext
def test_a_groff_manual_page_is_read_with_its_words_whole() -> None:
    text = _text(FIXTURE)
    for whole in ("archiving utility", "--keep-going", "report every unreadable", "have changed"):
        assert whole in text
    for split in ("archi ving", "k eep", "report e very", "ha ve"):
        assert split not in text
    # Real word gaps, headings and the option's definition are kept.
    assert "The default level is 6, and valid levels go from 1 to 9." in text
    assert "/var/lib/archivist/state" in text


def test_without_pdftotext_the_pdf_is_read_as_pdfminer_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pdf_spacing.shutil, "which", lambda name: None)
    text = _text(FIXTURE)
    assert "archi ving" in text  # what the repair mends: the fixture shows the fault
    assert "The default level is 6" in text


def test_only_spaces_the_reference_lacks_are_taken_out() -> None:
    page = _page("tar - an archiving utility\nthe default level\f")
    mended, end = respaced("tar - an archi ving utility", page, 0)
    assert mended == "tar - an archiving utility"
    assert end == len("tar-anarchivingutility")
    # Read on from where the last element ended; a gap the reference has stays.
    assert respaced("the def ault level", page, end)[0] == "the default level"


def test_text_whose_letters_the_reference_orders_otherwise_is_kept() -> None:
    page = _page("specified explicitly to mke2fs")
    garbled = "specified e to mke2fs xplicitly"
    assert respaced(garbled, page, 0) == (garbled, 0)


def test_ligatures_are_compared_as_letters() -> None:
    page = _page("efficiently")
    assert respaced("ef ﬁciently", page, 0)[0] == "efficiently"
