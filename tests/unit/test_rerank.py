from __future__ import annotations

from retriever.components import Components
from retriever.embedder import SentenceTransformerEmbedder
from retriever.models import bundled_embedder_path
from retriever.rerank import BiEncoderReranker, CrossEncoderReranker
from retriever.search import HybridSearcher
from retriever.types import Chunk, chunk_id


class ReverseReranker:
    """Model-boundary double: prefers whatever the first stage ranked last."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def score(self, query: str, texts: list[str]) -> list[float]:
        self.calls.append((query, len(texts)))
        return [float(i) for i in range(len(texts))]


def _index(components: Components) -> None:
    texts = [
        "Firewall rule FW-7 blocks inbound telnet on all routers.",
        "Routers must never accept remote login over unencrypted protocols.",
        "The canteen serves lunch from noon.",
    ]
    chunks = [
        Chunk(chunk_id(f"d{i}", 0, t), f"d{i}", 0, t, f"/d{i}", "", "c")
        for i, t in enumerate(texts)
    ]
    components.store.upsert(chunks, components.embedder.embed(texts))
    components.keyword.add(chunks)


def _searcher(components: Components, reranker: object, candidates: int) -> HybridSearcher:
    return HybridSearcher(
        components.embedder,
        components.store,
        components.keyword,
        reranker=reranker,
        rerank_candidates=candidates,
    )  # type: ignore[arg-type]


def test_reranker_reorders_only_the_head(components: Components) -> None:
    _index(components)
    plain = [h.chunk.document_id for h in components.searcher.search("telnet routers", 3).hits]
    fake = ReverseReranker()
    reranked = _searcher(components, fake, candidates=2).search("telnet routers", 3).hits
    assert fake.calls == [("telnet routers", 2)]
    assert [h.chunk.document_id for h in reranked] == [plain[1], plain[0], plain[2]]
    assert "fused_score" in reranked[0].extra


def test_bi_encoder_reranker_with_the_bundled_model(components: Components) -> None:
    """The wiring with a real model: the bundled bi-encoder scoring (query, passage) pairs."""
    _index(components)
    searcher = _searcher(components, BiEncoderReranker(components.embedder), candidates=3)
    hits = searcher.search("Is unencrypted remote login to routers allowed?", 3, "bm25").hits
    assert hits[0].chunk.document_id == "d1"
    assert hits[0].score >= hits[-1].score


def test_cross_encoder_loads_from_a_local_path(embedder: SentenceTransformerEmbedder) -> None:
    # No cross-encoder weights ship offline: the bundled MiniLM folder loads as a cross-encoder
    # with a fresh (untrained) scoring head, which proves the loading and scoring path.
    reranker = CrossEncoderReranker(bundled_embedder_path(), max_length=128)
    scores = reranker.score("what is the capital", ["Paris is the capital.", "Cats purr."])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
