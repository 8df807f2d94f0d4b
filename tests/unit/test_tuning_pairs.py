"""Training pairs: from BEIR qrels, from the index's titles and headings, from SLM questions
(and the filter that drops bad ones), and the held-out split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.pipeline import IngestPipeline
from retriever.generation import FakeGenerator
from retriever.tuning.pairs import (
    Pair,
    pairs_from_beir,
    read_pairs,
    sample_chunks,
    split_heldout,
    structure_pairs,
    write_pairs,
)
from retriever.tuning.questions import extract_question, keep_question, question_pairs
from retriever.types import Chunk
from service.tuning import indexed_chunks
from tests.conftest import write


def _beir(folder: Path) -> Path:
    rows = [
        {"_id": "d1", "title": "Aspirin", "text": "Aspirin reduces the risk of heart attack."},
        {"_id": "d2", "title": "", "text": "Vitamin D deficiency weakens bones."},
        {"_id": "d3", "title": "Sleep", "text": "Short sleep impairs memory consolidation."},
    ]
    write(folder / "corpus.jsonl", "\n".join(json.dumps(r) for r in rows))
    queries = [
        {"_id": "q1", "text": "Does aspirin prevent heart attacks?"},
        {"_id": "q2", "text": "What weakens bones?"},
        {"_id": "q3", "text": "Sleep and memory"},
    ]
    write(folder / "queries.jsonl", "\n".join(json.dumps(q) for q in queries))
    write(folder / "qrels" / "train.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    write(folder / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq3\td3\t1\n")
    return folder


def test_beir_train_qrels_become_pairs_with_the_document_as_indexed(tmp_path: Path) -> None:
    pairs = pairs_from_beir(_beir(tmp_path / "beir"), "train")
    assert pairs == [
        Pair(
            "Does aspirin prevent heart attacks?",
            "Aspirin\nAspirin reduces the risk of heart attack.",
            "d1",
        ),
        Pair("What weakens bones?", "Vitamin D deficiency weakens bones.", "d2"),
    ]
    path = tmp_path / "pairs.jsonl"
    assert write_pairs(path, pairs) == 2
    assert read_pairs(path) == pairs
    with pytest.raises(FileNotFoundError):
        pairs_from_beir(tmp_path / "beir", "dev")


def test_a_malformed_pairs_file_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", '{"query": "a", "passage": "b"}\n{"question": "x"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        read_pairs(path)


def _chunk(
    doc: str, index: int, text: str, title: str = "", headings: tuple[str, ...] = ()
) -> Chunk:
    return Chunk(f"{doc}-{index}", doc, index, text, f"{doc}.md", title, "default", None, headings)


def test_titles_and_headings_ask_for_their_sections_first_chunk() -> None:
    body = "Employees accrue twenty five days of paid leave per calendar year, pro rata."
    chunks = [
        _chunk("a", 0, body, "Leave policy", ("Leave policy", "Annual leave")),
        _chunk("a", 1, body + " More.", "Leave policy", ("Leave policy", "Annual leave")),
        _chunk("a", 2, body + " Parents.", "Leave policy", ("Leave policy", "Parental leave")),
        _chunk("b", 0, body, "x", ("Table of contents",)),  # one-word title, generic heading
    ]
    pairs = structure_pairs(chunks)
    assert [(p.query, p.passage_id, p.source) for p in pairs] == [
        ("Leave policy", "a-0", "title"),
        ("Annual leave", "a-0", "heading"),
        ("Parental leave", "a-2", "heading"),
    ]
    # The passage is the chunk's text alone: the query is not handed to the model in it.
    assert all(p.passage.startswith("Employees") for p in pairs)


def test_structure_pairs_from_an_ingested_document(
    pipeline: IngestPipeline, components, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    text = (
        "# Travel policy\n\n## Booking flights\n\nBook economy class for flights under six hours "
        "through the travel desk portal.\n\n## Hotel allowance\n\nThe nightly hotel allowance is "
        "180 euros in capitals and 120 euros elsewhere.\n"
    )
    pipeline.ingest_file(write(tmp_path / "docs" / "travel.md", text))
    pairs = structure_pairs(indexed_chunks(components))
    queries = {p.query for p in pairs}
    assert {"Booking flights", "Hotel allowance"} <= queries
    hotel = next(p for p in pairs if p.query == "Hotel allowance")
    assert "180 euros" in hotel.passage


@pytest.mark.parametrize(
    "question, kept",
    [
        ("What is the nightly hotel allowance in capitals?", True),
        ("How many days of paid leave do employees accrue?", True),
        ("What does the passage say about hotels?", False),  # about the text
        ("What is the answer to this question: what is the hotel allowance?", False),
        ("Hotel allowance?", False),  # too short
        ("What is the capital of France and its population?", False),  # not grounded
        ("The nightly hotel allowance is 180 euros in capitals", False),  # not a question
        ("Is the nightly hotel allowance 180 euros in capitals and 120 euros elsewhere?", False),
    ],
)
def test_question_filter(question: str, kept: bool) -> None:
    passage = (
        "Hotel allowance\nThe nightly hotel allowance is 180 euros in capitals and 120 euros "
        "elsewhere. Employees accrue twenty five days of paid leave per year."
    )
    assert keep_question(question, passage) is kept


def test_question_extraction_strips_labels_and_takes_the_first_question() -> None:
    assert extract_question('Question: "What is the allowance?"\nAnswer: 180') == (
        "What is the allowance?"
    )
    assert extract_question("1. How long is leave? And more?") == "How long is leave?"
    assert extract_question("No question here.") == ""


def test_slm_questions_become_pairs_only_when_they_pass_the_filter() -> None:
    chunks = [
        _chunk("a", 0, "The nightly hotel allowance is 180 euros in capitals.", "Travel"),
        _chunk("b", 0, "Parental leave lasts sixteen weeks at full pay.", "Leave"),
        _chunk("c", 0, "Backups run nightly at two o'clock to the tape library.", "IT"),
    ]
    fake = FakeGenerator()
    fake.enqueue(
        "What is the nightly hotel allowance in capitals?",
        "What does this passage describe?",
        "When do the nightly backups run to the tape library?",
    )
    pairs, written = question_pairs(fake, chunks)
    assert written == 3
    assert [(p.query, p.passage_id, p.source) for p in pairs] == [
        ("What is the nightly hotel allowance in capitals?", "a-0", "question"),
        ("When do the nightly backups run to the tape library?", "c-0", "question"),
    ]
    assert pairs[0].passage == chunks[0].embedding_text()
    assert "Passage:" in fake.history[0][-1]["content"]


def test_heldout_split_keeps_every_pair_of_a_query_on_one_side() -> None:
    pairs = [Pair(f"query {i % 40}", f"passage {i}") for i in range(100)]
    train, heldout = split_heldout(pairs, fraction=0.1)
    assert len({p.query for p in heldout}) == 4
    assert not {p.query for p in train} & {p.query for p in heldout}
    assert len(train) + len(heldout) == 100
    assert split_heldout(pairs) == split_heldout(pairs)  # deterministic


def test_chunk_sample_spreads_over_documents() -> None:
    chunks = [_chunk(d, i, "text") for d in "abcd" for i in range(5)]
    picked = sample_chunks(chunks, 4)
    assert sorted(c.document_id for c in picked) == ["a", "b", "c", "d"]
    assert len(sample_chunks(chunks, 50)) == 20
