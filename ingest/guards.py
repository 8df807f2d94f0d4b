"""Checks made before a file reaches a parser: size, zip and XML bombs, encrypted or oversized
PDFs, links out of the inbox. Each failure is a LoadError whose message a person can act on."""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ingest.loaders import ZIP_FORMATS, LoadError, UnsupportedFileError, sniff_mismatch
from ingest.ocr import IMAGE_SUFFIXES

MB = 1024 * 1024
MAX_IMAGE_MEGAPIXELS = 150  # a 600 dpi A3 scan is 70; a small file claiming more is a bomb


@dataclass(frozen=True)
class Limits:
    max_file_mb: int = 100
    max_pages: int = 2000
    max_zip_ratio: float = 100.0
    max_unzipped_mb: int = 512


def check_location(path: Path, root: Path | None, symlinks: str = "same_collection") -> Path:
    """Inside the inbox (`root`), a link (to the file, or a linked folder on its way) may
    lead only within the folder of the file's own collection, so it can never put one
    collection's file into another; with `symlinks = "refuse"`, not at all. A collection
    folder may itself be a link out of the inbox (a share), never into another collection.
    Returns the real path it allowed (links resolved), for `open_checked`."""
    if root is None:
        return path.resolve()
    lexical_root = Path(os.path.normpath(root.absolute()))
    real_root = lexical_root.resolve()
    relative = Path(os.path.normpath(path.absolute())).relative_to(lexical_root)
    target = path.resolve()
    if target == real_root / relative:
        return target  # no link on the way
    if symlinks == "refuse":
        raise LoadError(
            f"{path.name} is a link, and links are refused in the inbox (inbox_symlinks); "
            "copy the file in instead"
        )
    if len(relative.parts) > 1:  # in a collection folder
        name = relative.parts[0]
        folder = (lexical_root / name).resolve()
        if folder.is_relative_to(real_root) and folder != real_root / name:
            allowed = False  # the collection folder is a link to another part of the inbox
        else:
            allowed = target.is_relative_to(folder)
    else:  # the default collection: the inbox's own top level
        name = "the inbox's top level"
        allowed = target.parent == real_root
    if not allowed:
        where = "outside the inbox" if not target.is_relative_to(real_root) else "elsewhere"
        raise LoadError(
            f"{path.name} is a link to a file {where}, outside the folder of its collection "
            f"({name}); links may not cross collections: copy the file in instead"
        )
    return target


def open_checked(path: Path, check: Callable[[Path], Path]) -> BinaryIO:
    """`path` opened for reading when what was opened is a regular file at the real path that
    `check` (`check_location`'s rule, returning the real path it allowed) allows; else
    LoadError, with nothing left open.

    Opened first, checked after, then compared: checking the name and then opening the name
    would let a file or a folder swapped for a link in between hand out another collection's
    file. The open never follows a final link; the descriptor's own path (/proc/self/fd) must
    be the allowed one, or, without /proc, its device and inode those of the allowed path."""
    # O_NONBLOCK: a FIFO put in the file's place cannot hold the open (it is refused below).
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        raise LoadError(f"{path.name} cannot be opened: it is gone or a link") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode):
            raise LoadError(f"{path.name} is not a regular file")
        try:
            allowed = check(path)
        except (OSError, RuntimeError, ValueError):  # RuntimeError: a link loop (resolve)
            raise LoadError(f"{path.name} cannot be located") from None
        if not _opened_at(fd, opened, allowed):
            raise LoadError(f"{path.name} was replaced while it was opened")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _opened_at(fd: int, opened: os.stat_result, allowed: Path) -> bool:
    """Whether the open descriptor `fd` is the file at the real path `allowed`."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}")) == allowed
    except OSError:  # no /proc (not Linux, or not mounted)
        pass
    try:
        return os.path.samestat(opened, os.stat(allowed, follow_symlinks=False))
    except OSError:
        return False


def check_size(path: Path, limits: Limits) -> None:
    size = path.stat().st_size
    if size > limits.max_file_mb * MB:
        raise LoadError(
            f"{path.name} is {size / MB:.0f} MB, over the limit of {limits.max_file_mb} MB "
            "(max_file_mb)"
        )
    if size == 0:
        raise LoadError(f"{path.name} is empty")


def check_zip(path: Path, limits: Limits) -> None:
    """Office files are zip archives: refuse ones that expand far beyond their size."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile:
        raise LoadError(f"{path.name} is damaged: not a readable Office (zip) file") from None
    unpacked = sum(m.file_size for m in members)
    packed = sum(m.compress_size for m in members) or 1
    if unpacked > limits.max_unzipped_mb * MB:
        raise LoadError(
            f"{path.name} expands to {unpacked / MB:.0f} MB, over {limits.max_unzipped_mb} MB "
            "(max_unzipped_mb): possibly a zip bomb"
        )
    if unpacked / packed > limits.max_zip_ratio:
        raise LoadError(
            f"{path.name} expands {unpacked / packed:.0f} times its size, over "
            f"{limits.max_zip_ratio:.0f} (max_zip_ratio): possibly a zip bomb"
        )


def check_pdf(path: Path, limits: Limits) -> None:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted:
            raise LoadError(
                f"{path.name} is an encrypted PDF; save an unprotected copy to index it"
            )
        pages = len(reader.pages)
    except LoadError:
        raise
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise LoadError(f"{path.name} is a damaged PDF: {exc}") from None
    if pages > limits.max_pages:
        raise LoadError(
            f"{path.name} has {pages} pages, over the limit of {limits.max_pages} (max_pages)"
        )


def check_image(path: Path, limits: Limits) -> None:
    """Images are decoded whole for OCR: refuse frames too large to decode, and more frames
    (TIFF pages) than a PDF may have pages. Only the headers are read here."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            frames = int(getattr(image, "n_frames", 1))
    except Image.DecompressionBombError:
        raise LoadError(
            f"{path.name} claims an image over {MAX_IMAGE_MEGAPIXELS} megapixels: possibly an "
            "image bomb"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise LoadError(f"{path.name} is a damaged image: {exc}") from None
    if width * height > MAX_IMAGE_MEGAPIXELS * 1_000_000:
        raise LoadError(
            f"{path.name} is {width}x{height} pixels, over {MAX_IMAGE_MEGAPIXELS} megapixels: "
            "possibly an image bomb; scan at a lower resolution"
        )
    if frames > limits.max_pages:
        raise LoadError(
            f"{path.name} has {frames} pages, over the limit of {limits.max_pages} (max_pages)"
        )


def check_file(
    path: Path,
    limits: Limits,
    root: Path | None = None,
    symlinks: str = "same_collection",
    content: bool = True,
) -> None:
    """The checks on where the file is, its size and type; with `content`, the checks that
    open it too (`check_content`), which otherwise the parser process runs."""
    check_location(path, root, symlinks)
    check_size(path, limits)
    suffix = path.suffix.lower()
    with path.open("rb") as fh:
        mismatch = sniff_mismatch(suffix, fh.read(4096))
    if mismatch:
        raise UnsupportedFileError(mismatch)
    if content:
        check_content(path, limits)


def check_content(path: Path, limits: Limits) -> None:
    """The checks that read a file's structure (zip directory, PDF objects): in the parser
    processes, under their time and memory limits, when there are any. Images: their headers."""
    suffix = path.suffix.lower()
    if suffix in ZIP_FORMATS:
        check_zip(path, limits)
    elif suffix == ".pdf":
        check_pdf(path, limits)
    elif suffix in IMAGE_SUFFIXES:
        check_image(path, limits)
