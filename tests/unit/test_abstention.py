"""The evidence checks that decide "not in the documents" before the model is asked, with
the real embedder, Chroma and FTS5 index."""

from __future__ import annotations

import numpy as np

from retriever.abstention import AbstentionThresholds, EvidenceCheck
from retriever.components import Components
from retriever.question import Question
from retriever.types import Chunk, chunk_id

PASSAGES = {
    "leave": "Full-time employees get 25 working days of paid annual leave. Up to 5 unused "
    "days may be carried over to the next year.",
    "canteen": "The canteen on floor 2 opens at 08:00 and closes at 15:30 on weekdays.",
    "salary": "Salary reviews take place every April. Managers propose increases to HR.",
    "board": "The CEO chairs the monthly management board meeting.",
}


def _index(components: Components) -> None:
    for i, (name, text) in enumerate(PASSAGES.items()):
        chunk = Chunk(chunk_id(name, i, text), name, 0, text, f"/{name}.md", name.title(), "c")
        components.store.upsert([chunk], components.embedder.embed([chunk.embedding_text()]))
        components.keyword.add([chunk])


def _check(components: Components, **thresholds: float) -> EvidenceCheck:
    return EvidenceCheck(
        AbstentionThresholds(**thresholds),
        components.embedder,
        components.keyword.term_weights,
    )


def _weakness(components: Components, check: EvidenceCheck, question: str) -> str | None:
    return check.weakness(question, components.searcher.search(question, 4, "hybrid"))


def test_a_question_no_single_passage_is_about_is_refused(components: Components) -> None:
    _index(components)
    check = _check(components, min_key_coverage=0.6)
    # "CEO" and "salary" are each somewhere, never together.
    reason = _weakness(components, check, "What is the CEO's annual salary?")
    assert reason is not None and "what the question is about" in reason
    assert _weakness(components, check, "How many days of annual leave do employees get?") is None


def test_a_passage_on_topic_without_an_answering_sentence_is_refused(
    components: Components,
) -> None:
    _index(components)
    check = _check(components, min_sentence_similarity=0.4)
    similarity = check.best_sentence_similarity(
        "When does the canteen open?", components.searcher.search("canteen", 4, "hybrid").hits
    )
    assert similarity > 0.6
    reason = _weakness(components, check, "How much is the monthly home-working allowance?")
    assert reason is not None and "no sentence answers" in reason
    assert _weakness(components, check, "When does the canteen open?") is None


def test_checks_that_are_off_never_refuse(components: Components) -> None:
    _index(components)
    check = _check(components)
    assert _weakness(components, check, "What is the monthly home-working allowance?") is None
    empty = components.searcher.search("anything", 4, "hybrid", ["no-such-collection"])
    assert check.weakness("anything", empty) == "nothing in the documents matches the question"


def test_the_answer_says_why_it_abstained(components: Components) -> None:
    _index(components)
    answer = components.answers.ask(Question("What is the CEO's annual salary?"))
    assert answer.abstained
    assert answer.to_dict()["abstention_reason"]


def test_an_identifier_found_whole_outweighs_the_embedder(components: Components) -> None:
    text = "asn1_der_decoding() decodes a DER-encoded ASN.1 structure into a tree of nodes."
    chunk = Chunk(chunk_id("asn", 0, text), "asn", 0, text, "/libtasn1.html", "Libtasn1", "c")
    components.store.upsert([chunk], components.embedder.embed([chunk.embedding_text()]))
    components.keyword.add([chunk])
    # Thresholds no embedding of this passage can reach: only the exact identifier passes.
    check = _check(components, min_relevance=0.99, min_sentence_similarity=0.99)
    assert _weakness(components, check, "What does asn1_der_decoding do?") is None
    refused = _weakness(components, check, "What does asn1_der_encoding do?")
    assert refused is not None and "cosine" in refused


def test_cosines_reuse_the_vectors_of_texts_already_embedded(components: Components) -> None:
    embedded: list[list[str]] = []
    real = components.embedder

    class Counting:
        dimension = real.dimension

        def embed(self, texts: list[str]) -> np.ndarray:
            embedded.append(list(texts))
            return real.embed(texts)

        def count_tokens(self, text: str) -> int:
            return real.count_tokens(text)

    check = EvidenceCheck(AbstentionThresholds(), Counting(), lambda words, collections: {})
    question = "How many days of annual leave do employees get?"
    sentences = ["Employees get 25 days of annual leave.", "The canteen opens at 08:00."]
    first = check.cosines(question, sentences)
    again = check.cosines(question, [*sentences, "Leave requests go to the manager."])
    assert embedded == [[question, *sentences], ["Leave requests go to the manager."]]
    vectors = real.embed([question, *sentences])
    assert np.allclose(first, vectors[1:] @ vectors[0], atol=1e-5)
    assert np.allclose(again[:2], first) and first[0] > first[1]
