"""Scanned documents (image-only and mixed PDFs, PNG, multi-page TIFF) read by Tesseract, each
generated here; damaged images, a missing Tesseract or language pack, a page over its budget."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.guards import Limits, check_file
from ingest.loaders import LoadError, UnsupportedFileError, load_document
from ingest.ocr import OcrOptions
from ingest.pipeline import FileOutcome, IngestPipeline
from ingest.workers import ParserPool
from tests.scans import render_page, save_image_pdf, save_mixed_pdf, save_png, save_tiff
from tests.unit.serving import add_user, api_key_app

GENERATOR = (
    "Generator Testing\n\nThe backup generator at the Harbour Street exchange is tested every "
    "Tuesday at six thirty. Technicians record the fuel level on form GEN-7."
)
FERRY = (
    "Ferry Timetable\n\nThe staff ferry to Gull Island leaves the north pier at quarter past "
    "eight. Passes are collected from the marina office."
)
BEACON = (
    "Beacon Maintenance\n\nThe lighthouse beacon lamp is replaced every autumn by the "
    "Kittiwake maintenance crew."
)

ROAMING = (
    "Roaming Charges\n\nCalls from the Faroe Islands are billed at the zone two rate. Data "
    "is billed per megabyte, rounded up, and a daily cap applies to every plan."
)


def pages_of(path: Path, word: str, **kwargs: object) -> set[int | None]:
    doc = load_document(path, **kwargs)  # type: ignore[arg-type]
    return {e.page for e in doc.elements if word.lower() in e.text.lower()}


def test_image_only_pdf_is_read_page_by_page(tmp_path: Path) -> None:
    pdf = save_image_pdf(tmp_path / "scan.pdf", [GENERATOR, FERRY])
    seen: list[tuple[int, int]] = []
    doc = load_document(pdf, progress=lambda done, total: seen.append((done, total)))
    assert pages_of(pdf, "Harbour") == {1}
    assert pages_of(pdf, "marina") == {2}
    # No text layer: nothing read before OCR, then one step per page.
    assert seen == [(0, 2), (1, 2), (2, 2)]
    # Pillow names the PDF after its file ("scan"): no title, so the first heading is.
    assert doc.title == "Generator Testing" and not doc.problems


def test_mixed_pdf_reads_the_text_page_and_ocrs_the_scanned_one(tmp_path: Path) -> None:
    pdf = save_mixed_pdf(tmp_path / "mixed.pdf", ROAMING, BEACON)
    seen: list[tuple[int, int]] = []
    doc = load_document(pdf, progress=lambda done, total: seen.append((done, total)))
    assert pages_of(pdf, "Faroe") == {1}
    assert pages_of(pdf, "Kittiwake") == {2}
    assert seen == [(1, 2), (2, 2)]  # the text page costs no OCR
    assert [e.page for e in doc.elements] == sorted(e.page or 0 for e in doc.elements)


def test_png_and_jpeg_are_documents(tmp_path: Path) -> None:
    png = save_png(tmp_path / "notice.png", FERRY)
    assert pages_of(png, "Gull Island") == {1}
    jpeg = tmp_path / "notice.jpg"
    from PIL import Image

    Image.open(png).save(jpeg, quality=85)
    assert pages_of(jpeg, "marina") == {1}


def test_transparent_and_sideways_images_are_read_upright_on_white(tmp_path: Path) -> None:
    from PIL import Image

    page = render_page(FERRY)
    # Black text on a transparent background (as screenshots and exports have it).
    clear = Image.new("LA", page.size, (0, 0))
    clear.putalpha(page.point(lambda v: 255 - v))
    clear.save(tmp_path / "clear.png")
    assert pages_of(tmp_path / "clear.png", "Gull Island") == {1}
    # A photo stored sideways with an EXIF orientation tag (6: turn 90 degrees clockwise).
    exif = Image.Exif()
    exif[0x0112] = 6
    page.rotate(90, expand=True).save(tmp_path / "phone.jpg", exif=exif, quality=90)
    assert pages_of(tmp_path / "phone.jpg", "marina") == {1}


def test_multi_page_tiff_keeps_its_pages(tmp_path: Path) -> None:
    tiff = save_tiff(tmp_path / "fax.tiff", [GENERATOR, FERRY, BEACON])
    seen: list[tuple[int, int]] = []
    doc = load_document(tiff, progress=lambda done, total: seen.append((done, total)))
    found = {
        word: {e.page for e in doc.elements if word in e.text}
        for word in ("GEN-7", "pier", "Kittiwake")
    }
    assert found == {"GEN-7": {1}, "pier": {2}, "Kittiwake": {3}}
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_damaged_and_mislabelled_images_fail_with_a_reason(tmp_path: Path) -> None:
    png = save_png(tmp_path / "whole.png", FERRY)
    cut = tmp_path / "cut.png"
    cut.write_bytes(png.read_bytes()[:3000])  # header intact, pixels missing
    with pytest.raises(
        LoadError, match=r"no text could be extracted from cut\.png: page 1 is damaged"
    ):
        load_document(cut)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00not really a png" * 20)
    with pytest.raises(LoadError, match=r"garbage\.png is a damaged image"):
        check_file(garbage, Limits())
    with pytest.raises(LoadError, match="not a readable image"):
        load_document(garbage)
    renamed = tmp_path / "photo.jpg"
    renamed.write_bytes(png.read_bytes())
    with pytest.raises(UnsupportedFileError, match=r"named \.jpg but is not a JPG image"):
        load_document(renamed)


def test_image_guards_refuse_bombs_and_too_many_pages(tmp_path: Path) -> None:
    tiff = save_tiff(tmp_path / "three.tif", [GENERATOR, FERRY, BEACON])
    check_file(tiff, Limits())
    with pytest.raises(LoadError, match=r"has 3 pages, over the limit of 2 \(max_pages\)"):
        check_file(tiff, Limits(max_pages=2))
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (16000, 12000), 1).save(bomb)  # a few kB on disk, 192 megapixels
    with pytest.raises(LoadError, match="image bomb"):
        check_file(bomb, Limits())


def test_without_tesseract_a_scan_fails_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = save_png(tmp_path / "notice.png", FERRY)
    pdf = save_image_pdf(tmp_path / "scan.pdf", [FERRY])
    text_pdf = save_mixed_pdf(tmp_path / "text.pdf", ROAMING, None)
    mixed = save_mixed_pdf(tmp_path / "mixed.pdf", ROAMING, BEACON)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no tesseract, no pdftoppm
    for scan in (png, pdf):
        with pytest.raises(LoadError, match=r"apt-get install tesseract-ocr tesseract-ocr-eng"):
            load_document(scan)
    # Everything else reads as before: a PDF's text pages are kept, the others reported.
    assert pages_of(text_pdf, "Faroe") == {1}
    doc = load_document(mixed)
    assert {e.page for e in doc.elements} == {1}
    assert doc.problems and "page(s) 2 not read" in doc.problems[0]
    assert "apt-get install tesseract-ocr" in doc.problems[0]


def test_a_blank_scanned_page_costs_no_ocr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unstructured_pytesseract

    def no_ocr(*args: object, **kwargs: object) -> str:
        raise AssertionError("a blank page was sent to Tesseract")

    monkeypatch.setattr(unstructured_pytesseract, "image_to_string", no_ocr)
    pdf = save_mixed_pdf(tmp_path / "separator.pdf", ROAMING, "")
    doc = load_document(pdf)
    assert {e.page for e in doc.elements} == {1} and not doc.problems


def test_a_missing_language_pack_is_named(tmp_path: Path) -> None:
    png = save_png(tmp_path / "notice.png", FERRY)
    with pytest.raises(LoadError, match="apt-get install tesseract-ocr-klingon"):
        load_document(png, ocr=OcrOptions(languages="eng+klingon"))


def test_a_page_over_its_budget_is_reported_and_the_rest_kept(tmp_path: Path) -> None:
    pdf = save_mixed_pdf(tmp_path / "mixed.pdf", ROAMING, BEACON)
    doc = load_document(pdf, ocr=OcrOptions(page_timeout_s=0.01))
    assert {e.page for e in doc.elements} == {1}
    assert len(doc.problems) == 1 and "page 2" in doc.problems[0]
    assert "ocr_page_timeout_s" in doc.problems[0]


def test_parser_process_reports_pages_as_they_are_read(tmp_path: Path) -> None:
    tiff = save_tiff(tmp_path / "fax.tif", [GENERATOR, FERRY])
    pool = ParserPool(workers=1, timeout_s=120, memory_mb=1024, ocr=OcrOptions())
    try:
        seen: list[tuple[int, int]] = []
        doc = pool.load(tiff, progress=lambda done, total: seen.append((done, total)))
        assert seen == [(1, 2), (2, 2)]
        assert {e.page for e in doc.elements if "marina" in e.text} == {2}
        # The file's time limit still holds over all of its pages.
        slow = ParserPool(workers=1, timeout_s=0.5, memory_mb=1024, ocr=OcrOptions())
        try:
            assert slow.wait_ready()
            with pytest.raises(LoadError, match="parse_timeout_s"):
                slow.load(save_tiff(tmp_path / "long.tif", [GENERATOR] * 6))
        finally:
            slow.close()
    finally:
        pool.close()


def test_pipeline_records_pages_per_document_and_job(
    pipeline: IngestPipeline, tmp_path: Path
) -> None:
    tiff = save_tiff(tmp_path / "fax.tiff", [GENERATOR, FERRY])
    jobs = pipeline.jobs
    seen: list[tuple[str, int, int, str | None]] = []
    real_pages = jobs.pages

    def spy(document_id: str, path: str, done: int, total: int, job_id: str | None = None) -> None:
        seen.append((path, done, total, job_id))
        real_pages(document_id, path, done, total, job_id)
        # While the file is read, its job lists it with its pages.
        reading = jobs.get(job_id or "")
        assert reading and reading["reading"][0]["pages_done"] == done

    jobs.pages = spy  # type: ignore[method-assign]
    job = jobs.start("upload", 1)
    record = pipeline.plan(tiff)
    assert not isinstance(record, FileOutcome)
    (outcome,) = pipeline.index_records([record], job)
    jobs.recorder(job)(outcome.path, outcome)
    assert outcome.status == "indexed"
    assert [(done, total, j) for _, done, total, j in seen] == [(1, 2, job), (2, 2, job)]
    # Done: the file is in the job's files, no longer being read.
    finished = jobs.get(job)
    assert finished and finished["reading"] == [] and finished["files"][0]["status"] == "indexed"
    assert jobs.page_progress() == {}


def test_library_api_shows_pages_to_readers_of_the_collection_only(
    tmp_path: Path, embedder: object
) -> None:
    app = api_key_app(tmp_path / "data", embedder, collection_groups={"hr": ["hr-staff"]})
    try:
        st = app.extensions["enclave"]
        scan = save_png(tmp_path / "contract.png", FERRY)
        record = st.pipeline.registry.register(str(scan), "hr", "0" * 64, 10, 0.0)
        st.pipeline.jobs.pages(record.id, record.path, 3, 12)
        hr = add_user(app, "ann", "ask", ("hr-staff",))
        outsider = add_user(app, "eve", "ask", ("engineers",))
        client = app.test_client()
        listed = client.get("/api/v1/documents", headers=hr).get_json()["documents"]
        assert [d["pages"] for d in listed] == [{"done": 3, "total": 12}]
        one = client.get(f"/api/v1/documents/{record.id}", headers=hr).get_json()
        assert one["pages"] == {"done": 3, "total": 12}
        # Someone who may not read the collection sees neither the document nor its progress.
        assert client.get("/api/v1/documents", headers=outsider).get_json()["documents"] == []
        refused = client.get(f"/api/v1/documents/{record.id}", headers=outsider)
        assert refused.status_code == 404 and "pages" not in refused.get_data(as_text=True)
        assert client.get("/api/v1/documents").status_code == 401
    finally:
        st.shutdown()


def test_a_scan_uploaded_through_the_api_is_searchable(tmp_path: Path, embedder: object) -> None:
    app = api_key_app(tmp_path / "data", embedder, collection_groups={"scans": ["office"]})
    try:
        client = app.test_client()
        ingest = add_user(app, "ian", "ingest", ("office",))
        reader = add_user(app, "rae", "ask", ("office",))
        outsider = add_user(app, "eve", "ask", ("field",))
        png = save_png(tmp_path / "whiteboard.png", FERRY).read_bytes()

        def send(name: str, data: bytes, headers: dict[str, str]) -> Any:
            form = {"file": (io.BytesIO(data), name), "collection": "scans"}
            return client.post("/api/v1/documents", data=form, headers=headers)

        # Same auth and scopes as every upload: no key, or a key that may only ask, is refused.
        assert send("board.png", png, {}).status_code == 401
        assert send("board.png", png, reader).status_code == 403
        mislabelled = send("board.jpg", png, ingest)
        assert mislabelled.status_code == 415
        assert "not a JPG image" in mislabelled.get_json()["error"]["message"]
        accepted = send("board.png", png, ingest)
        assert accepted.status_code == 202, accepted.get_json()
        doc_id = accepted.get_json()["id"]
        for _ in range(600):
            body = client.get(f"/api/v1/documents/{doc_id}", headers=ingest).get_json()
            if body["status"] != "pending":
                break
            time.sleep(0.1)
        assert body["status"] == "indexed" and body["pages"] is None, body
        question = {"question": "When does the staff ferry to Gull Island leave?"}
        asked = client.post("/api/v1/ask", json=question, headers=reader).get_json()
        top = asked["sources"][0]
        assert top["document_id"] == doc_id and top["page"] == 1, top
        original = client.get(f"/api/v1/documents/{doc_id}/file", headers=reader)
        assert original.mimetype == "image/png" and original.data == png
        # Someone outside the collection finds neither the scan's text nor its file.
        refused = client.post("/api/v1/ask", json=question, headers=outsider)
        assert all(s["document_id"] != doc_id for s in refused.get_json()["sources"])
        assert "Gull Island" not in refused.get_data(as_text=True).replace(question["question"], "")
        assert client.get(f"/api/v1/documents/{doc_id}/file", headers=outsider).status_code == 404
    finally:
        app.extensions["enclave"].shutdown()


def test_an_incomplete_scan_is_indexed_and_names_the_page_it_missed(
    pipeline: IngestPipeline, tmp_path: Path
) -> None:
    import functools

    pipeline.loader = functools.partial(load_document, ocr=OcrOptions(page_timeout_s=0.01))
    pdf = save_mixed_pdf(tmp_path / "mixed.pdf", ROAMING, BEACON)
    report = pipeline.ingest([pdf]).to_dict()
    assert report["indexed"] == 1 and report["failures"] == []
    (incomplete,) = report["incomplete"]  # type: ignore[misc]
    assert incomplete["path"].endswith("mixed.pdf")
    assert "page 2" in incomplete["error"] and "ocr_page_timeout_s" in incomplete["error"]
