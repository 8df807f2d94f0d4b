"""Scanned documents made on the spot: text rendered to page images with Pillow's own font
(the same on every machine), saved as PNG, multi-page TIFF, image-only PDF, or a PDF with a
text page and a scanned page. Used by the OCR tests and benchmarks/ocr.py."""

from __future__ import annotations

import io
import random
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont

DPI = 200
PAGE = (int(8.27 * DPI), int(11.69 * DPI))  # A4 at DPI
MARGIN = DPI  # one inch


def render_page(text: str, font_px: int = 34, noise: bool = False, seed: int = 0) -> Image.Image:
    """A white A4 page with `text` (paragraphs split by blank lines) in black, as a scanner
    would give it (8-bit grey); `noise` adds a slight blur, speckles and a skew."""
    font = ImageFont.load_default(size=font_px)
    page = Image.new("L", PAGE, 255)
    draw = ImageDraw.Draw(page)
    width_chars = int((PAGE[0] - 2 * MARGIN) / (font_px * 0.55))
    y = MARGIN
    for paragraph in text.split("\n\n"):
        for line in textwrap.wrap(" ".join(paragraph.split()), width_chars):
            draw.text((MARGIN, y), line, fill=0, font=font)
            y += int(font_px * 1.5)
        y += font_px
    if noise:
        rng = random.Random(seed)
        page = page.rotate(rng.uniform(-1.0, 1.0), fillcolor=255, resample=Image.Resampling.BICUBIC)
        page = page.filter(ImageFilter.GaussianBlur(0.6))
        pixels = page.load()
        assert pixels is not None
        for _ in range(PAGE[0] * PAGE[1] // 400):
            pixels[rng.randrange(PAGE[0]), rng.randrange(PAGE[1])] = rng.choice((0, 96, 160))
    return page


def save_png(path: Path, text: str, **kwargs: Any) -> Path:
    render_page(text, **kwargs).save(path, dpi=(DPI, DPI))
    return path


def save_tiff(path: Path, pages: Sequence[str], **kwargs: Any) -> Path:
    """A multi-page TIFF, one frame per text (Group 4 fax compression, as scanners write)."""
    images = [render_page(text, **kwargs).convert("1") for text in pages]
    images[0].save(
        path, save_all=True, append_images=images[1:], compression="group4", dpi=(DPI, DPI)
    )
    return path


def save_image_pdf(path: Path, pages: Sequence[str], **kwargs: Any) -> Path:
    """A PDF whose pages are only images: no text layer at all."""
    images = [render_page(text, **kwargs) for text in pages]
    images[0].save(path, "PDF", save_all=True, append_images=images[1:], resolution=DPI)
    return path


def save_mixed_pdf(path: Path, text_page: str, scanned_page: str | None) -> Path:
    """Page 1 has real (extractable) text; page 2 (unless None) is a scanned image."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 7, text_page)
    if scanned_page is not None:
        pdf.add_page()
        buffer = io.BytesIO()
        render_page(scanned_page).save(buffer, "PNG")
        pdf.image(buffer, x=0, y=0, w=pdf.w, h=pdf.h)
    pdf.output(str(path))
    return path
