"""OCR throughput (pages per second per core) and word accuracy on generated scans.

    python benchmarks/ocr.py [--pages 6] [--dpi 200 300] [--ocr-only-pages 2] [--out ocr]

Pages of English prose (rag-mini-wikipedia passages, read from ../shared/eval, never copied)
are rendered with Pillow's bundled font at 200 dpi, as clean pages and as noisy ones (a slight
skew, blur and specks, like an office scanner), and wrapped as image-only PDFs. Each page is
then read the way Enclave reads a scanned PDF page (ingest/ocr.py): rendered by pdftoppm at
`--dpi`, one single-threaded Tesseract run. Reported per variant:

- pages/s per core: pages over the CPU time spent on them (this process plus its pdftoppm and
  Tesseract children), so a busy shared machine does not lower it the way wall time would;
  wall-clock pages/s beside it. One parser process keeps one core busy, so `parse_workers`
  parser processes read about that many times as many pages per second.
- word accuracy: 1 - word error rate of the OCR text against the rendered text (words
  lower-cased, punctuation stripped; Levenshtein distance over words).
- the share of the CPU time in rendering and in Tesseract.

For comparison, unstructured's own `ocr_only` strategy reads the first `--ocr-only-pages`
clean pages of the same PDF (one Tesseract thread too), timed the same way.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import PASSAGES, machine, print_table, read_jsonl, write_result  # type: ignore[import-not-found]

from ingest.loaders import use_bundled_spacy_model
from ingest.ocr import OcrOptions, read_image, render_pdf_page
from tests.scans import save_image_pdf

WORDS_PER_PAGE = 220


def page_texts(pages: int) -> list[str]:
    """Consecutive ASCII passages, about WORDS_PER_PAGE words a page."""
    texts: list[str] = []
    current: list[str] = []
    for row in read_jsonl(PASSAGES / "passages.jsonl"):
        passage = " ".join(str(row["passage"]).split())
        if not passage.isascii() or len(passage.split()) < 12:
            continue
        current.append(passage)
        if sum(len(p.split()) for p in current) >= WORDS_PER_PAGE:
            texts.append("\n\n".join(current))
            current = []
            if len(texts) == pages:
                break
    return texts


def words(text: str) -> list[str]:
    return [w for w in re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split() if w]


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words (substitutions, insertions, deletions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp))
        previous = current
    return previous[-1]


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def accuracy(texts: list[str], read: list[str]) -> float:
    errors = total = 0
    for reference, hypothesis in zip(texts, read, strict=True):
        ref = words(reference)
        errors += word_errors(ref, words(hypothesis))
        total += len(ref)
    return round(1 - errors / max(total, 1), 4)


def run_enclave(pdf: Path, texts: list[str], dpi: int) -> dict[str, Any]:
    options = OcrOptions(dpi=dpi, page_timeout_s=600)
    render_cpu = ocr_cpu = 0.0
    read: list[str] = []
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    for number in range(1, len(texts) + 1):
        before = cpu_seconds()
        image = render_pdf_page(pdf, number, options)
        middle = cpu_seconds()
        page = read_image(image, number, options)
        render_cpu, ocr_cpu = render_cpu + middle - before, ocr_cpu + cpu_seconds() - middle
        assert page.problem is None, page.problem
        read.append(page.text)
    wall, cpu = time.perf_counter() - start_wall, cpu_seconds() - start_cpu
    return {
        "pages_per_s_per_core": round(len(texts) / cpu, 3),
        "pages_per_s_wall": round(len(texts) / wall, 3),
        "cpu_s_per_page": round(cpu / len(texts), 2),
        "render_share": round(render_cpu / cpu, 2),
        "tesseract_share": round(ocr_cpu / cpu, 2),
        "word_accuracy": accuracy(texts, read),
    }


def run_ocr_only(pdf: Path, texts: list[str]) -> dict[str, Any]:
    """unstructured's ocr_only strategy over the same pages (it reads every page of the file)."""
    from unstructured.partition.pdf import partition_pdf

    use_bundled_spacy_model()  # unstructured would download its spaCy model otherwise
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    elements = partition_pdf(filename=str(pdf), strategy="ocr_only", languages=["eng"])
    wall, cpu = time.perf_counter() - start_wall, cpu_seconds() - start_cpu
    by_page: dict[int, list[str]] = {}
    for element in elements:
        by_page.setdefault(element.metadata.page_number or 0, []).append(str(element))
    read = [" ".join(by_page.get(n, [])) for n in range(1, len(texts) + 1)]
    return {
        "pages_per_s_per_core": round(len(texts) / cpu, 3),
        "pages_per_s_wall": round(len(texts) / wall, 3),
        "cpu_s_per_page": round(cpu / len(texts), 2),
        "word_accuracy": accuracy(texts, read),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=6, help="pages per variant")
    parser.add_argument("--dpi", type=int, nargs="+", default=[200, 300])
    parser.add_argument("--ocr-only-pages", type=int, default=2, help="0: skip the comparison")
    parser.add_argument("--out", default="ocr")
    args = parser.parse_args()
    # One Tesseract thread: a parser process is one core (the setting Enclave runs it with).
    os.environ["OMP_THREAD_LIMIT"] = "1"
    texts = page_texts(args.pages)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="enclave-ocr-bench-") as folder:
        for noisy in (False, True):
            pdf = save_image_pdf(Path(folder) / f"scan-{noisy}.pdf", texts, noise=noisy)
            for dpi in args.dpi:
                row = {"reader": "enclave", "scan": "noisy" if noisy else "clean", "dpi": dpi}
                rows.append({**row, **run_enclave(pdf, texts, dpi)})
                print_table(rows[-1:])
        if args.ocr_only_pages:
            few = texts[: args.ocr_only_pages]
            pdf = save_image_pdf(Path(folder) / "ocr-only.pdf", few)
            rows.append(
                {
                    "reader": "unstructured ocr_only",
                    "scan": "clean",
                    "dpi": 200,
                    **run_ocr_only(pdf, few),
                }
            )
    print()
    print_table(rows)
    write_result(
        args.out,
        {
            "machine": machine(),
            "pages_per_variant": len(texts),
            "words_per_page": round(sum(len(words(t)) for t in texts) / len(texts)),
            "tesseract_threads": 1,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    sys.exit(main())
