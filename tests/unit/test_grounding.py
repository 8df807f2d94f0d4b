from __future__ import annotations

from retriever.answer import verify
from retriever.grounding import extract_answer, split_sentences, support_for

SOURCES = [
    "Full-time employees get 25 working days of paid annual leave. Part-time staff get a "
    "pro-rata share. Up to 5 unused days may be carried over to the next year.",
    "The canteen on floor 2 opens at 08:00 and closes at 15:30 on weekdays.",
]


def test_sentence_spans_point_into_the_text() -> None:
    spans = split_sentences(SOURCES[0])
    assert len(spans) == 3
    for span in spans:
        assert SOURCES[0][span.start : span.end] == span.text


def test_supported_claim_gets_its_source_and_span() -> None:
    found = support_for("Employees get 25 working days of annual leave [1].", SOURCES)
    assert found is not None and found.n == 1 and found.score >= 0.8
    assert SOURCES[0][found.span.start : found.span.end].startswith("Full-time employees")


def test_wrong_number_is_never_supported() -> None:
    assert support_for("Employees get 30 working days of annual leave.", SOURCES) is None
    assert support_for("The canteen closes at 17:00.", SOURCES) is None


def test_verify_keeps_supported_sentences_and_fixes_citations() -> None:
    text = (
        "The canteen opens at 08:00 [1]. "  # supported by source 2, cited wrongly
        "Staff also receive a free gym membership."  # in no source
    )
    checked, supports, dropped = verify(text, SOURCES, threshold=0.6)
    assert checked == "The canteen opens at 08:00 [2]."
    assert [s.n for s in supports] == [2] and dropped == 1


def test_extractive_answer_quotes_the_best_sentence() -> None:
    supports = extract_answer("How many unused leave days can be carried over?", SOURCES, 1)
    assert len(supports) == 1
    assert supports[0].n == 1 and "carried over" in supports[0].span.text
    assert extract_answer("the of and", SOURCES) == []
