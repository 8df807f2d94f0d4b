"""A GGUF model rewritten once into a weight type that llama.cpp's fast CPU kernels cover.

llama.cpp evaluates prompts with tiled matrix kernels (llamafile's sgemm, and repacked
layouts) for Q8_0, Q4_0, F16/BF16 and the K-quants, but not for Q4_1, Q5_0 or Q5_1: those
fall back to one dot product at a time. The bundled SmolLM2 ships as Q4_1. Rewritten as
Q8_0 (each block of 32 weights re-expressed with 256 levels instead of 16, so the numbers
are the same to within 1/254 of the block's largest weight), a 1,000-token prompt is
evaluated about 2.5x faster on 2 cores and decoding is no slower; perplexity moved by
under 1% (see benchmarks/results/generate.json). The file is written next to the ONNX
exports of the embedder (`Settings.model_cache_dir`), once (`made_once`).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
from pathlib import Path

from retriever.made_once import made_once

log = logging.getLogger(__name__)

# llama.cpp's `llama_ftype` values (llama.h) of the types without fast CPU kernels.
SLOW_ON_CPU = {3: "Q4_1", 8: "Q5_0", 9: "Q5_1"}
Q8_0 = 7


class ConversionError(Exception):
    """The GGUF could not be rewritten; the message says what to do."""


def file_type(path: Path) -> int | None:
    """The GGUF's `general.file_type` (a `llama_ftype`), read without loading its weights."""
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with suppress_stdout_stderr(disable=False):
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ConversionError(f"llama.cpp could not read {path.name}")
    try:
        buffer = ctypes.create_string_buffer(32)
        length = llama_cpp.llama_model_meta_val_str(model, b"general.file_type", buffer, 32)
        return int(buffer.value) if length > 0 else None
    finally:
        llama_cpp.llama_model_free(model)


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()[:12]


def converted_path(path: Path, cache_dir: Path) -> Path:
    return cache_dir / f"{path.stem}-{_digest(path)}.Q8_0.gguf"


def fast_cpu_gguf(path: Path, cache_dir: Path) -> Path:
    """`path` itself when llama.cpp runs its weight type fast on CPU; otherwise its Q8_0
    rewrite, made first if missing (a file lock keeps concurrent starts from racing)."""
    kind = file_type(path)
    if kind not in SLOW_ON_CPU:
        return path

    def rewrite(out: Path) -> None:
        log.info(
            "rewriting %s (%s) as Q8_0 for llama.cpp's CPU kernels (once)",
            path.name,
            SLOW_ON_CPU[kind],
        )
        _quantize(path, out)

    return made_once(converted_path(path, cache_dir), rewrite)


def _quantize(source: Path, out: Path) -> None:
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = Q8_0
    params.allow_requantize = True
    params.nthread = len(os.sched_getaffinity(0)) or 1
    with suppress_stdout_stderr(disable=False):
        failed = llama_cpp.llama_model_quantize(
            str(source).encode(), str(out).encode(), ctypes.byref(params)
        )
    if failed or not out.is_file():
        raise ConversionError(
            f"llama.cpp could not rewrite {source.name} as Q8_0; "
            "set llm_fast_cpu_weights = false to run it as it is"
        )
