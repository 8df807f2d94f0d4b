"""ONNX Runtime embedders against the torch one, and the index's record of its embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from config.settings import Settings
from retriever.components import Components
from retriever.embedder import (
    SentenceTransformerEmbedder,
    batches_by_length,
    embedder_identity,
    load_embedder,
)
from retriever.models import bundled_embedder_path
from retriever.onnx_embedder import OnnxEmbedder, export_onnx
from retriever.store import ChromaStore, EmbedderMismatchError
from retriever.types import Chunk

TEXTS = [
    "Full-time employees get 25 days of paid annual leave.",
    "The NOC shift lead desk has extension 4410.",
    "What hold time do we use on external BGP sessions?",
    "Vitamin D deficiency is associated with an increased risk of fractures in older adults, "
    "according to a meta-analysis of randomized controlled trials. " * 6,
    "x",
]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def onnx_fp32(model_cache: Path) -> OnnxEmbedder:
    embedder = load_embedder(bundled_embedder_path(), "onnx", 32, model_cache)
    assert isinstance(embedder, OnnxEmbedder)
    return embedder


@pytest.fixture(scope="session")
def onnx_int8(model_cache: Path) -> OnnxEmbedder:
    embedder = load_embedder(bundled_embedder_path(), "onnx-int8", 32, model_cache)
    assert isinstance(embedder, OnnxEmbedder)
    return embedder


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))


def test_onnx_fp32_matches_torch(
    onnx_fp32: OnnxEmbedder, embedder: SentenceTransformerEmbedder
) -> None:
    ours, theirs = onnx_fp32.embed(TEXTS), embedder.embed(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), 384)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert _cosines(ours, theirs).min() > 0.999


def test_onnx_int8_stays_close_to_torch(
    onnx_int8: OnnxEmbedder, embedder: SentenceTransformerEmbedder
) -> None:
    cosines = _cosines(onnx_int8.embed(TEXTS), embedder.embed(TEXTS))
    assert cosines.min() > 0.97
    assert cosines.mean() > 0.99


def test_onnx_order_and_batches_do_not_change_vectors(onnx_fp32: OnnxEmbedder) -> None:
    # More than one batch runs on the bulk session, one text on the small-call session.
    many = TEXTS * (onnx_fp32.batch_size // len(TEXTS) + 1)
    assert len(many) > onnx_fp32.batch_size
    whole = onnx_fp32.embed(many)[: len(TEXTS)]
    one_by_one = np.stack([onnx_fp32.embed([t])[0] for t in TEXTS])
    np.testing.assert_allclose(whole, one_by_one, atol=1e-4)
    assert onnx_fp32.embed([]).shape == (0, 384)


def test_batches_group_texts_of_similar_token_counts() -> None:
    lengths = [5, 200, 7, 190, 6, 210]
    batches = batches_by_length(lengths, 2)
    assert [sorted(lengths[i] for i in b) for b in batches] == [[200, 210], [7, 190], [5, 6]]
    assert sorted(int(i) for b in batches for i in b) == list(range(len(lengths)))


def test_onnx_batches_are_padded_to_their_longest_text_only(onnx_fp32: OnnxEmbedder) -> None:
    # Plain words: many characters, few tokens; formulas: fewer characters, many tokens.
    # Grouped by characters (as sentence-transformers does) both batches would carry a
    # formula and be as wide as it; grouped by tokens only the first one is.
    words, formula, tiny = "word " * 60, "Mg2+/Ca2+-ATPase(β)" * 10, "hi"
    assert len(words) > len(formula) > len(tiny)
    assert onnx_fp32.count_tokens(formula) > 1.5 * onnx_fp32.count_tokens(words)
    half = onnx_fp32.batch_size // 2
    texts = [words] * half + [formula] * 2 * half + [tiny] * half
    widths: list[int] = []
    forward = onnx_fp32.forward

    def recording(batch: list[list[int]], session: object = None) -> np.ndarray:
        widths.append(max(len(row) for row in batch))
        return forward(batch, session)

    onnx_fp32.forward = recording  # type: ignore[method-assign]
    try:
        vectors = onnx_fp32.embed(texts)
    finally:
        del onnx_fp32.forward
    assert widths == [onnx_fp32.count_tokens(formula) + 2, onnx_fp32.count_tokens(words) + 2]
    np.testing.assert_allclose(vectors[0], onnx_fp32.embed([words])[0], atol=1e-4)
    np.testing.assert_allclose(vectors[-1], onnx_fp32.embed([tiny])[0], atol=1e-4)


def test_onnx_counts_tokens_like_the_torch_tokenizer(
    onnx_int8: OnnxEmbedder, embedder: SentenceTransformerEmbedder
) -> None:
    for text in [*TEXTS, "Über-long naïve café — 3.14 [1]", ""]:
        assert onnx_int8.count_tokens(text) == embedder.count_tokens(text)
    assert onnx_int8.max_tokens == embedder.max_tokens == 256


def test_export_is_cached_and_offline(model_cache: Path, onnx_int8: OnnxEmbedder) -> None:
    path = onnx_int8.onnx_path
    assert path.is_relative_to(model_cache) and path.is_file()
    before = path.stat().st_mtime_ns
    model = path.parent.name.rsplit("-r", 1)[0]
    again = export_onnx(bundled_embedder_path(), model, model_cache, quantize=True)
    assert again == path and path.stat().st_mtime_ns == before
    # int8 MatMul weights (the token embedding table stays fp32).
    assert path.stat().st_size < 0.8 * (path.parent / "model.onnx").stat().st_size


def test_identity_names_model_and_backend(
    onnx_int8: OnnxEmbedder, embedder: SentenceTransformerEmbedder
) -> None:
    assert onnx_int8.identity.endswith("/onnx-int8")
    assert embedder.identity.endswith("/torch")
    assert onnx_int8.identity.split("/")[0] == embedder.identity.split("/")[0]
    assert embedder_identity(bundled_embedder_path(), "onnx-int8") == onnx_int8.identity


def _chunk(n: int) -> Chunk:
    return Chunk(f"c{n}", "d", n, f"text {n}", "p", "t", "default")


def test_store_refuses_an_index_built_by_another_embedder(tmp_path: Path) -> None:
    store = ChromaStore(tmp_path, embedder_identity="model-abc/onnx-int8")
    assert store.embedder_identity == "model-abc/onnx-int8"
    store.upsert([_chunk(1)], np.ones((1, 384), dtype=np.float32))
    assert (
        ChromaStore(tmp_path, embedder_identity="model-abc/onnx-int8").count() == 1
    )  # same one: fine
    with pytest.raises(EmbedderMismatchError, match=r"model-abc/onnx-int8.*model-abc/torch"):
        ChromaStore(tmp_path, embedder_identity="model-abc/torch")
    with pytest.raises(EmbedderMismatchError):
        ChromaStore(tmp_path, embedder_identity="other-model/onnx-int8")


def test_an_empty_index_takes_any_embedder(tmp_path: Path) -> None:
    ChromaStore(tmp_path, embedder_identity="model-abc/onnx-int8")
    assert (
        ChromaStore(tmp_path, embedder_identity="model-abc/torch").embedder_identity
        == "model-abc/torch"
    )


def test_an_index_from_before_identities_counts_as_torch(tmp_path: Path) -> None:
    old = ChromaStore(tmp_path)  # no identity recorded, as before this change
    old.upsert([_chunk(1)], np.ones((1, 384), dtype=np.float32))
    with pytest.raises(EmbedderMismatchError, match="not recorded"):
        ChromaStore(tmp_path, embedder_identity="model-abc/onnx")
    assert (
        ChromaStore(tmp_path, embedder_identity="model-abc/torch").embedder_identity
        == "model-abc/torch"
    )


def test_components_record_the_configured_backend_without_loading_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embed_backend="onnx-int8", llm_backend="fake")
    components = Components(settings)
    assert components.store.embedder_identity == embedder_identity(
        bundled_embedder_path(), "onnx-int8"
    )
    assert not components.serving.built  # the model itself (in the index) was not loaded
    torch_side = Components(settings.model_copy(update={"embed_backend": "torch"}))
    components.store.upsert([_chunk(1)], np.ones((1, 384), dtype=np.float32))
    with pytest.raises(EmbedderMismatchError):
        _ = torch_side.store


def test_components_use_an_injected_embedders_identity(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    settings = Settings(data_dir=tmp_path, embed_backend="onnx-int8", llm_backend="fake")
    components = Components(settings, embedder=embedder)
    assert components.store.embedder_identity == embedder.identity
