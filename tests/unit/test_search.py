from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from config.settings import Settings
from retriever.components import Components
from retriever.keyword import match_expression
from retriever.question import Question
from retriever.search import reciprocal_rank_fusion
from retriever.types import Chunk, chunk_id


@pytest.fixture
def settings(settings: Settings, database_url: str) -> Settings:
    """Every test here runs with SQLite files, then with PostgreSQL (registry, jobs, keywords)."""
    return settings.model_copy(update={"database_url": database_url})


def _chunk(doc: str, i: int, text: str, collection: str) -> Chunk:
    return Chunk(chunk_id(doc, i, text), doc, i, text, f"/{doc}.md", doc, collection)


def _index(components: Components, chunks: list[Chunk]) -> None:
    vectors = components.embedder.embed([c.embedding_text() for c in chunks])
    components.store.upsert(chunks, vectors)
    components.keyword.add(chunks)


def test_rrf_by_hand() -> None:
    fused = dict(reciprocal_rank_fusion([(["a", "b"], 1.0), (["b", "c"], 2.0)], k=10))
    assert np.isclose(fused["a"], 1 / 11)
    assert np.isclose(fused["b"], 1 / 12 + 2 / 11)
    assert np.isclose(fused["c"], 2 / 12)
    assert list(dict(reciprocal_rank_fusion([(["a", "b"], 1.0), (["b", "c"], 2.0)], k=10))) == [
        "b",
        "c",
        "a",
    ]


def test_match_expression_quotes_terms_and_drops_stopwords() -> None:
    assert match_expression('What is the "ALM-4471" code?') == '"alm" OR "4471" OR "code"'
    assert match_expression("the of and") == ""


def test_match_expression_takes_each_stem_of_the_index_once() -> None:
    # FTS5's Porter stemmer makes one term of "cell"/"cells" and "running"/"runs".
    assert (
        match_expression("Cells, cell counts; running runs") == '"cells" OR "counts" OR "running"'
    )
    assert match_expression("café cafe") == '"café"'  # diacritics removed by the tokenizer


def test_hybrid_finds_exact_codes_and_paraphrases(components: Components) -> None:
    chunks = [
        _chunk("a", 0, "Alarm ZX-9921 means the fibre trunk lost its signal.", "ops"),
        _chunk("b", 0, "Employees may take twenty-five days of paid holiday a year.", "hr"),
        _chunk("c", 0, "The canteen opens at eight in the morning.", "ops"),
    ]
    _index(components, chunks)
    searcher = components.searcher
    assert searcher.search("ZX-9921", 1, "bm25").hits[0].chunk.document_id == "a"
    assert (
        searcher.search("how much vacation do staff get", 1, "dense").hits[0].chunk.document_id
        == "b"
    )
    result = searcher.search("vacation days", 3, "hybrid")
    assert result.hits[0].chunk.document_id == "b"
    assert result.best_dense_similarity is not None


def test_collection_filter_is_inside_both_queries(components: Components) -> None:
    # The best match for the query lives in a collection the caller may not read.
    secret = _chunk("secret", 0, "Salary bands: engineers earn band E4.", "hr")
    filler = [_chunk(f"f{i}", 0, f"Router model {i} runs firmware {i}.", "ops") for i in range(8)]
    _index(components, [secret, *filler])
    query = "salary bands of router firmware engineers"
    assert components.searcher.search(query, 1, "hybrid").hits[0].chunk.document_id == "secret"
    for mode in ("dense", "bm25", "hybrid"):
        hits = components.searcher.search(query, 5, mode, collections=["ops"]).hits
        assert hits, mode
        assert all(h.chunk.collection == "ops" for h in hits), mode
    assert components.searcher.search("salary", 5, "hybrid", collections=[]).hits == []


def test_duplicate_passages_collapse(components: Components) -> None:
    text = "Backups run nightly at 02:00 and are kept for 35 days."
    _index(components, [_chunk("x", 0, text, "c"), _chunk("y", 0, text, "c")])
    hits = components.searcher.search("when do backups run", 5, "hybrid").hits
    assert len([h for h in hits if h.chunk.text == text]) == 1


def test_keyword_index_tracks_deletes(components: Components) -> None:
    chunks = [_chunk("a", 0, "Quokka migration plan", "c"), _chunk("b", 0, "Quokka budget", "c")]
    _index(components, chunks)
    components.keyword.delete_document("a")
    ids = [cid for cid, _ in components.keyword.search("quokka", 10)]
    assert ids == [chunks[1].id]


def test_chroma_deletes_several_documents_in_one_call(components: Components) -> None:
    chunks = [_chunk(doc, i, f"Quokka note {doc}{i}", "c") for doc in "abc" for i in range(2)]
    _index(components, chunks)
    components.store.delete_documents(["a", "c"])
    assert sorted(components.store.collection.get(include=[])["ids"]) == sorted(
        c.id for c in chunks if c.document_id == "b"
    )
    components.store.delete_documents(["b"])
    components.store.delete_documents([])
    assert components.store.collection.count() == 0


def test_a_reader_learns_nothing_from_keyword_statistics_of_what_they_cannot_read(
    components: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents about Lisbon in `hr` change nothing a reader of `eng` gets: the answer's
    sources and their scores, whether it abstains, the search's ranks and BM25 scores, and the
    term weights the abstention check weighed."""
    weighed: list[tuple[list[str], dict[str, float]]] = []
    real = components.keyword.term_weights

    def recording(words: list[str], *collections: Sequence[str] | None) -> dict[str, float]:
        weights = real(words, *collections)
        weighed.append((sorted(words), weights))
        return weights

    monkeypatch.setattr(components.keyword, "term_weights", recording)
    eng = [
        _chunk("lisbon", 0, "Lisbon office opening hours: the office opens at nine.", "eng"),
        _chunk("berlin", 0, "The Berlin office has a new espresso machine.", "eng"),
        _chunk("paris", 0, "Paris office badges are renewed every January.", "eng"),
        _chunk("vpn", 0, "The VPN certificate expires after ninety days.", "eng"),
    ]
    _index(components, eng)
    question = Question(
        "When does the Lisbon office open?",
        collections=("eng",),
        mode="bm25",
        answer_mode="extractive",
    )

    def seen() -> tuple[object, ...]:
        weighed.clear()
        answer = components.answers.ask(question)
        hits = components.searcher.search(question.text, 10, "bm25", ["eng"]).hits
        sources = [(s.document_id, s.score) for s in answer.sources]
        return sources, answer.abstained, [(h.chunk.id, h.score) for h in hits], list(weighed)

    before = seen()
    assert before[0] and not before[1] and before[3]  # answered; the key terms were weighed
    hr = [
        _chunk(f"hr{i}", 0, f"Relocation {i} to Lisbon: Lisbon allowance, Lisbon housing.", "hr")
        for i in range(6)
    ]
    _index(components, hr)
    assert seen() == before
    admin = components.searcher.search(question.text, 20, "bm25")
    assert {h.chunk.collection for h in admin.hits} == {"eng", "hr"}
