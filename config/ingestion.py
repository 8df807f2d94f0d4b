"""How documents are read: following the inbox, parser processes and their limits, OCR,
embedding batches and failed files (ingest/)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from config.section import Section


class IngestionSettings(Section):
    model_config = ConfigDict(title="Ingestion")

    watch: Literal["events", "poll", "off"] = Field(
        "events", description="How serve follows the inbox: file events, polling, or not."
    )
    poll_interval_s: float = Field(2.0, gt=0, le=3600, description="Seconds between scans.")
    settle_s: float = Field(1.0, ge=0, le=600, description="Quiet time before a file is read.")
    parse_workers: int = Field(
        1, ge=0, le=64, description="Parser processes; 0 parses in process (no limits)."
    )
    parse_timeout_s: float = Field(120.0, gt=0, description="Longest parse of one file.")
    parse_memory_mb: int = Field(2048, ge=64, description="Memory a parser may add per file.")
    max_file_mb: int = Field(100, ge=1, description="Largest file indexed.")
    max_pages: int = Field(2000, ge=1, description="Most PDF pages indexed.")
    max_zip_ratio: float = Field(100.0, ge=1, description="Largest unpacked/packed ratio.")
    max_unzipped_mb: int = Field(512, ge=1, description="Largest unpacked Office file.")
    ocr_languages: str = Field(
        "eng",
        pattern=r"^[A-Za-z_]+(\+[A-Za-z_]+)*$",
        description="Tesseract language packs for scans, '+'-joined (eng+deu).",
    )
    ocr_page_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="Longest OCR of one scanned page."
    )
    ocr_dpi: int = Field(
        200, ge=72, le=600, description="Resolution scanned PDF pages are read at."
    )
    ingest_batch_chunks: int = Field(
        1024, ge=1, le=100000, description="Chunks of several files embedded together."
    )
    quarantine: Literal["leave", "move"] = Field(
        "leave", description="Failed inbox files: leave in place or move to quarantine/."
    )
    inbox_symlinks: Literal["same_collection", "refuse"] = Field(
        "same_collection",
        description="Links in the inbox: followed only within their own collection's folder, "
        "or refused.",
    )
