from __future__ import annotations

import itertools

from ingest.chunker import MAX_CHARS_PER_TOKEN, Chunker, sections
from ingest.loaders import Element, load_document
from retriever.embedder import SentenceTransformerEmbedder
from tests.conftest import DEMO


def _chunker(embedder: SentenceTransformerEmbedder, size: int = 200, overlap: int = 32) -> Chunker:
    return Chunker(embedder.count_tokens, embedder.max_tokens, size, overlap)


def test_every_chunk_fits_the_embedder(embedder: SentenceTransformerEmbedder) -> None:
    chunker = _chunker(embedder, size=400)  # asks for more than the model reads
    for name in ("network-operations-runbook.md", "it-security-policy.pdf"):
        doc = load_document(DEMO / name)
        chunks = chunker.chunk(doc.elements, "doc", name, doc.title, "default")
        assert chunks
        for chunk in chunks:
            # The model reads max_tokens including [CLS] and [SEP].
            assert embedder.count_tokens(chunk.embedding_text()) <= embedder.max_tokens - 2


def test_chunks_keep_headings_pages_and_metadata(embedder: SentenceTransformerEmbedder) -> None:
    doc = load_document(DEMO / "it-security-policy.pdf")
    chunks = _chunker(embedder).chunk(doc.elements, "d1", "/x/p.pdf", doc.title, "hr")
    assert {c.page for c in chunks} >= {1, 2}
    assert all(c.document_id == "d1" and c.collection == "hr" for c in chunks)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_heading_path_in_markdown_chunks(embedder: SentenceTransformerEmbedder) -> None:
    elements = [
        Element("Guide", "Title", None, ()),
        Element("Install", "Title", None, ("Guide",)),
        Element("Run the installer as root.", "NarrativeText", None, ("Guide", "Install")),
    ]
    (chunk,) = _chunker(embedder).chunk(elements, "d", "g.md", "Guide", "default")
    assert chunk.headings == ("Guide", "Install")
    assert chunk.embedding_text().startswith("Guide > Install\n")  # title not repeated


def test_long_sections_split_with_overlap(embedder: SentenceTransformerEmbedder) -> None:
    sentences = [f"Sentence number {i} describes step {i} of the procedure." for i in range(80)]
    elements = [Element(" ".join(sentences), "NarrativeText", None, ())]
    chunks = _chunker(embedder, size=64, overlap=16).chunk(elements, "d", "p", "T", "c")
    assert len(chunks) > 5
    for a, b in itertools.pairwise(chunks):
        tail = a.text.split()[-3:]
        assert " ".join(tail) in b.text  # consecutive chunks share text


def test_chunk_ids_are_stable_and_content_addressed(embedder: SentenceTransformerEmbedder) -> None:
    doc = load_document(DEMO / "facilities-guide.txt")
    first = _chunker(embedder).chunk(doc.elements, "d", "p", doc.title, "c")
    again = _chunker(embedder).chunk(doc.elements, "d", "p", doc.title, "c")
    other = _chunker(embedder).chunk(doc.elements, "e", "p", doc.title, "c")
    assert [c.id for c in first] == [c.id for c in again]
    assert not {c.id for c in first} & {c.id for c in other}
    assert len({c.id for c in first}) == len(first)


def test_heading_without_body_is_kept_as_text() -> None:
    elements = [
        Element("Slide one", "Title", 1, ()),
        Element("Slide two", "Title", 2, ()),
        Element("Body of two", "NarrativeText", 2, ("Slide two",)),
    ]
    result = sections(elements)
    assert [s.parts[0][0] for s in result] == ["Slide one", "Body of two"]


def test_a_passage_is_bounded_in_characters_whatever_the_tokenizer_counts(
    embedder: SentenceTransformerEmbedder,
) -> None:
    # A word the tokenizer reads as one unknown token ([UNK] past 100 characters) once made a
    # passage of any length: every check of an answer then read all of it, for every question
    # that found it (80,000 characters: 9 s a question, growing with the square).
    chunker = _chunker(embedder)
    text = "The build server word is " + "é" * 100_000 + " and the port is 9090."
    chunks = chunker.chunk([Element(text, "NarrativeText", None, ())], "d", "b.txt", "B", "eng")
    assert sum(len(c.text) for c in chunks) >= 100_000  # nothing is lost
    assert max(len(c.text) for c in chunks) <= 200 * MAX_CHARS_PER_TOKEN
    # Ordinary prose is cut by tokens as before.
    doc = load_document(DEMO / "network-operations-runbook.md")
    before = Chunker(embedder.count_tokens, embedder.max_tokens, 200, 32, chars_per_token=None)
    same = before.chunk(doc.elements, "doc", "r.md", doc.title, "default")
    assert [c.text for c in chunker.chunk(doc.elements, "doc", "r.md", doc.title, "default")] == [
        c.text for c in same
    ]
