"""The bundled Q4_1 GGUF is rewritten once as Q8_0 for llama.cpp's CPU kernels."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import load_settings
from retriever.components import build_generator
from retriever.gguf_convert import Q8_0, ConversionError, fast_cpu_gguf, file_type
from retriever.model_process import ModelProcessGenerator
from retriever.models import bundled_llm_path


def test_the_bundled_model_is_rewritten_once_as_q8_0(tmp_path: Path) -> None:
    bundled = bundled_llm_path()
    assert file_type(bundled) == 3  # Q4_1: no tiled CPU kernels in llama.cpp

    converted = fast_cpu_gguf(bundled, tmp_path)
    assert converted != bundled and converted.parent == tmp_path
    assert file_type(converted) == Q8_0
    written = converted.stat().st_mtime_ns

    assert fast_cpu_gguf(bundled, tmp_path) == converted  # found, not written again
    assert converted.stat().st_mtime_ns == written
    assert fast_cpu_gguf(converted, tmp_path) == converted  # Q8_0 is run as it is
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".gguf"] == [converted.name]


def test_a_file_llama_cpp_cannot_read_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ConversionError, match=r"could not read broken\.gguf"):
        fast_cpu_gguf(broken, tmp_path / "models")


@pytest.mark.parametrize("fast", [True, False])
def test_the_generator_runs_the_rewrite_when_settings_ask(tmp_path: Path, fast: bool) -> None:
    settings = load_settings(data_dir=tmp_path, llm_backend="llamacpp", llm_fast_cpu_weights=fast)
    generator = build_generator(settings)
    assert isinstance(generator, ModelProcessGenerator)
    generator.close()
    name = bundled_llm_path().name
    if generator.spec.profile == "fast":
        assert generator.name == (f"{name} (run as Q8_0)" if fast else name)
    else:  # the self-test's fast settings crashed (Xeons with AMX): the GGUF as shipped
        assert generator.name == f"{name} (safe CPU settings)"
    if fast:
        assert any(settings.model_cache_dir.glob("*.Q8_0.gguf"))
