"""OCR of scanned pages (PDF pages without a text layer, PNG/JPEG/TIFF images) with Debian's
Tesseract (`tesseract-ocr`) and Poppler (`poppler-utils`), on this machine, page by page.

unstructured 0.27's `ocr_only` strategy reaches the same Tesseract, offline, but it cannot be
given what a parser process needs: it runs Tesseract two or three times a page (a layout pass,
a text pass, a zoomed retry) with no time limit, reads only the first frame of a multi-page
TIFF, reports no progress, and a page that fails fails the whole document. So each page is
rendered here (pdftoppm, one page at a time), read by one Tesseract run through unstructured's
own binding (`unstructured_pytesseract`, which kills Tesseract at the page's budget), and its
text is made into elements by unstructured's text partitioner (titles, paragraphs, list
items) with the page number kept. No layout model is loaded, nothing is downloaded.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})
# The first bytes of each image type: a file named .png must be a PNG.
IMAGE_MAGIC: dict[str, tuple[bytes, ...]] = {
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": (b"\xff\xd8\xff",),
    ".jpeg": (b"\xff\xd8\xff",),
    ".tif": (b"II*\x00", b"MM\x00*"),
    ".tiff": (b"II*\x00", b"MM\x00*"),
}
INSTALL_HINT = (
    "install it with `make ocr` (Debian: apt-get install tesseract-ocr tesseract-ocr-eng)"
)
POPPLER_HINT = "install it with `make ocr` (Debian: apt-get install poppler-utils)"

BLANK_LEVEL = 224  # a grey page with no pixel darker than this has no text

Progress = Callable[[int, int], None]  # (pages done, pages in the document)


class OcrError(Exception):
    """The document cannot be OCRed at all (a missing program or language pack)."""


@dataclass(frozen=True)
class OcrOptions:
    """The OCR settings a parser process needs (plain values: they cross to the workers)."""

    languages: str = "eng"  # Tesseract's form: "eng" or "eng+deu"
    page_timeout_s: float = 60.0
    dpi: int = 200


@dataclass
class OcrPage:
    number: int
    text: str = ""
    problem: str | None = None  # why this page could not be read (the others are kept)


def magic_mismatch(suffix: str, head: bytes) -> str | None:
    """Why the first bytes are not the image type the name says (None when they are)."""
    magics = IMAGE_MAGIC.get(suffix.lower())
    if magics is None or head.startswith(magics):
        return None
    kind = suffix.lower().lstrip(".").upper()
    return f"the file is named {suffix.lower()} but is not a {kind} image"


def _tesseract() -> str:
    path = shutil.which("tesseract")
    if path is None:
        raise OcrError(f"Tesseract (the OCR program) is not installed: {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=8)
def _installed_languages(tesseract: str) -> frozenset[str]:
    out = subprocess.run(
        [tesseract, "--list-langs"], capture_output=True, text=True, timeout=30, check=False
    )
    # The first line is a header ("List of available languages in ...").
    return frozenset(line.strip() for line in out.stdout.splitlines()[1:] if line.strip())


def check_ready(options: OcrOptions) -> None:
    """Raise OcrError, saying what to install, unless Tesseract and its language packs are."""
    tesseract = _tesseract()
    missing = sorted(set(options.languages.split("+")) - _installed_languages(tesseract))
    if missing:
        packages = " ".join(f"tesseract-ocr-{lang}" for lang in missing)
        raise OcrError(
            f"the Tesseract language pack(s) {', '.join(missing)} named in ocr_languages are not "
            f"installed: apt-get install {packages}"
        )


def read_image(image: Any, number: int, options: OcrOptions) -> OcrPage:
    """One page image to text; a page Tesseract cannot read in its budget is a problem."""
    import unstructured_pytesseract
    from unstructured_pytesseract import TesseractError

    # One thread per Tesseract: pages run in parallel across the parser processes instead,
    # and a scan must not take the cores the embedder and the answering model need.
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    if image.mode == "L" and image.getextrema()[0] >= BLANK_LEVEL:
        return OcrPage(number)  # a blank page (a separator sheet): nothing to read
    try:
        text = unstructured_pytesseract.image_to_string(
            image, lang=options.languages, timeout=options.page_timeout_s
        )
    except RuntimeError as exc:  # the binding's timeout
        if "timeout" not in str(exc).lower():
            raise
        return OcrPage(
            number,
            problem=f"page {number}: OCR took longer than {options.page_timeout_s:g} s "
            "(ocr_page_timeout_s)",
        )
    except TesseractError as exc:
        return OcrPage(number, problem=f"page {number}: Tesseract failed: {exc.message}")
    return OcrPage(number, str(text))


def render_pdf_page(path: Path, number: int, options: OcrOptions) -> Any:
    from PIL import Image

    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        raise OcrError(
            f"Poppler's pdftoppm (renders PDF pages for OCR) is not installed: {POPPLER_HINT}"
        )
    command = [pdftoppm, "-f", str(number), "-l", str(number), "-r", str(options.dpi)]
    out = subprocess.run(
        # PGM: raw grey pixels, no PNG compression to pay for twice.
        [*command, "-gray", "-singlefile", str(path)],
        capture_output=True,
        timeout=options.page_timeout_s,
        check=False,
    )
    if out.returncode != 0 or not out.stdout:
        reason = out.stderr.decode(errors="replace").strip().splitlines()
        raise ValueError(reason[-1] if reason else f"pdftoppm exit code {out.returncode}")
    with Image.open(io.BytesIO(out.stdout)) as image:
        return image.convert("L")  # a no-op for PGM; what a Poppler build gives otherwise


def ocr_pdf_pages(
    path: Path, numbers: list[int], options: OcrOptions, on_page: Callable[[], None]
) -> Iterator[OcrPage]:
    """OCR these pages (1-based) of a PDF, one at a time; `on_page` after each."""
    check_ready(options)
    for number in numbers:
        try:
            image = render_pdf_page(path, number, options)
        except subprocess.TimeoutExpired:
            page = OcrPage(
                number,
                problem=f"page {number}: rendering took longer than {options.page_timeout_s:g} s "
                "(ocr_page_timeout_s)",
            )
        except (ValueError, OSError) as exc:
            page = OcrPage(number, problem=f"page {number} could not be rendered: {exc}")
        else:
            with image:
                page = read_image(image, number, options)
        yield page
        on_page()


def _grey(frame: Any) -> Any:
    """A frame as Tesseract reads best: 8-bit grey, upright, transparency on white paper."""
    from PIL import Image, ImageOps

    frame = ImageOps.exif_transpose(frame)  # a phone photo stored sideways
    if frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info:
        paper = Image.new("RGBA", frame.size, "white")
        paper.alpha_composite(frame.convert("RGBA"))
        frame = paper
    return frame.convert("L")


def ocr_image(path: Path, options: OcrOptions, progress: Progress | None = None) -> list[OcrPage]:
    """OCR every frame of an image file (a multi-page TIFF is one page per frame)."""
    from PIL import Image, UnidentifiedImageError

    check_ready(options)
    try:
        image = Image.open(path)
        total = int(getattr(image, "n_frames", 1))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{path.name} is not a readable image: {exc}") from None
    pages: list[OcrPage] = []
    with image:
        for number in range(1, total + 1):
            try:
                image.seek(number - 1)
                frame = _grey(image)
            except (OSError, ValueError, EOFError, SyntaxError) as exc:
                page = OcrPage(number, problem=f"page {number} is damaged: {exc}")
            else:
                page = read_image(frame, number, options)
            pages.append(page)
            if progress:
                progress(number, total)
    return pages
