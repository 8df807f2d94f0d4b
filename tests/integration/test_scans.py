"""Scanned documents through the real `enclave` command: ingested by the parser processes
(OCR under their limits), then found by `enclave ask` with the page they are on."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.live import enclave
from tests.scans import save_image_pdf, save_mixed_pdf, save_png, save_tiff

# Each fact is on one page of one generated scan; the words are rare so retrieval is exact.
FACTS = {
    ("contract.pdf", 2): (
        "Zanzibar Lease\n\nThe Zanzibar warehouse lease renews on the fourth of March and the "
        "deposit is eleven thousand euros.",
        "When does the Zanzibar warehouse lease renew?",
    ),
    ("mixed.pdf", 2): (
        "Quokka Fleet\n\nThe Quokka delivery vans are serviced at the Tamarind depot every "
        "ninety days.",
        "Where are the Quokka delivery vans serviced?",
    ),
    ("whiteboard.png", 1): (
        "Sprint Notes\n\nThe Pelican release freezes code on Thursday; the Marmoset team owns "
        "the database migration.",
        "Which team owns the database migration for the Pelican release?",
    ),
    ("fax.tiff", 3): (
        "Fax Cover\n\nThe Ocelot tender closes at noon on Friday; bids go to the Vermilion "
        "procurement office.",
        "Where do bids for the Ocelot tender go?",
    ),
}
FILLER = "Cover Page\n\nThis page intentionally lists nothing of note about the matter."
TEXT_PAGE = (
    "Fleet Policy\n\nVans are booked through the transport desk. Drivers check tyres, lights "
    "and fluids before every shift and report faults the same day."
)


def test_scans_are_ingested_and_answered_with_their_page(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    text = {name: fact[0] for (name, _), fact in FACTS.items()}
    save_image_pdf(docs / "contract.pdf", [FILLER, text["contract.pdf"]])
    save_mixed_pdf(docs / "mixed.pdf", TEXT_PAGE, text["mixed.pdf"])
    save_png(docs / "whiteboard.png", text["whiteboard.png"])
    save_tiff(docs / "fax.tiff", [FILLER, FILLER, text["fax.tiff"]])
    broken = docs / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50)
    data = str(tmp_path / "data")
    env = {"ENCLAVE_LLM_BACKEND": "fake"}

    result = enclave("ingest", str(docs), "--data", data, "--json", env=env)
    assert result.returncode == 1, result.stderr  # one file failed
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["indexed"] == 4, summary
    (failure,) = summary["failures"]
    assert failure["path"].endswith("broken.jpg") and "damaged image" in failure["error"]

    for (name, page), (_, question) in FACTS.items():
        asked = enclave("ask", question, "--data", data, "--json", env=env)
        assert asked.returncode == 0, asked.stderr
        top = json.loads(asked.stdout.strip().splitlines()[-1])["sources"][0]
        assert (Path(top["path"]).name, top["page"]) == (name, page), (question, top)
