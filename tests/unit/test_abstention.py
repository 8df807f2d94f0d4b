"""The evidence checks that decide "not in the documents" before the model is asked, with
the real embedder, Chroma and FTS5 index."""

from __future__ import annotations

import numpy as np
import pytest

from retriever import abstention, grounding
from retriever.abstention import AbstentionThresholds, EvidenceCheck
from retriever.components import Components
from retriever.question import Question
from retriever.types import Chunk, chunk_id
from retriever.word_roles import wording_words

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


def test_a_reworded_question_close_in_meaning_to_a_sentence_is_not_refused(
    components: Components,
) -> None:
    """People ask in their own words: the passages lack the question's words ("vacation",
    "workers") but a sentence says what it asks. Close enough in meaning, that
    outweighs the word checks; a question about something the passages never say does not
    come as close, and is still refused."""
    _index(components)
    reworded = "How many vacation days do full-time workers get?"
    words_only = _check(components, min_key_coverage=0.6, min_coverage=0.5)
    assert _weakness(components, words_only, reworded) is not None
    rescued = _check(components, min_key_coverage=0.6, min_coverage=0.5, reworded_similarity=0.65)
    assert _weakness(components, rescued, reworded) is None
    reason = _weakness(components, rescued, "What is the CEO's annual salary?")
    assert reason is not None and "what the question is about" in reason


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


def _index_in(components: Components, collection: str, passages: dict[str, str]) -> None:
    for name, text in passages.items():
        chunk = Chunk(
            chunk_id(name, 0, text), name, 0, text, f"/{name}.md", name.title(), collection
        )
        components.store.upsert([chunk], components.embedder.embed([chunk.embedding_text()]))
        components.keyword.add([chunk])


GROUPS = {
    "libvirt": "libvirt: access to the system libvirt daemon is controlled by this group.",
    "adm": "adm: members of group adm can read many log files in /var/log.",
    "staff": "staff: allows users to add local modifications to the system in /usr/local.",
}


def _name_check(components: Components) -> EvidenceCheck:
    return EvidenceCheck(
        AbstentionThresholds(names_must_occur=True),
        components.embedder,
        components.keyword.term_weights,
        unmentioned=components.keyword.unmentioned,
    )


def _asked(components: Components, check: EvidenceCheck, question: str, *where: str) -> str | None:
    collections = list(where) or None
    return check.weakness(question, components.searcher.search(question, 4, "hybrid", collections))


def test_a_question_about_a_name_the_documents_never_mention_is_refused(
    components: Components,
) -> None:
    """Every other word of the question is in the passage about libvirt: only the name tells
    that the documents cannot answer it."""
    _index_in(components, "ops", GROUPS)
    check = _name_check(components)
    reason = _asked(components, check, "Which group controls access to the Docker daemon?")
    assert reason == 'the documents do not mention "docker"'
    assert _asked(components, check, "Which group controls access to the Libvirt daemon?") is None
    # Off unless asked for, whatever the documents hold.
    off = EvidenceCheck(
        AbstentionThresholds(),
        components.embedder,
        components.keyword.term_weights,
        unmentioned=components.keyword.unmentioned,
    )
    assert _asked(components, off, "Which group controls access to the Docker daemon?") is None


def test_misspelt_acronyms_title_case_and_one_slip_among_known_names_are_not_refused(
    components: Components,
) -> None:
    _index_in(components, "ops", GROUPS)
    check = _name_check(components)
    # "Libvrt": one letter off a word of the passage found.
    assert _asked(components, check, "Which group controls the Libvrt daemon?") is None
    # Acronyms are often spelled out in the documents; a Title Case question names nothing.
    assert _asked(components, check, "Which group controls the KVM daemon?") is None
    assert _asked(components, check, "Which Group Controls The Hypervisor Daemon?") is None
    # One unknown name beside known ones: more likely a slip of the person asking.
    question = "Can members of Libvirt or Adm manage Qemu machines?"
    assert _asked(components, check, question) is None
    assert _asked(components, check, "Can Podman or Docker use the libvirt daemon?") == (
        'the documents do not mention "podman", "docker"'
    )


SETTINGS = {
    "cluster": "Each new cluster gets the next free port; the default cluster main uses "
    "port 5432 and its settings live in postgresql.conf.",
    "logs": "The log_min_duration_statement setting logs statements slower than a limit.",
}


def test_a_question_naming_code_the_documents_never_write_is_refused(
    components: Components,
) -> None:
    """An identifier is exact: no document writes `max_connections`, so none documents it,
    however much of the rest of the question the passage about the cluster holds."""
    _index_in(components, "ops", SETTINGS)
    check = _name_check(components)
    question = "What is the default max_connections value of the main cluster?"
    assert _asked(components, check, question) == 'the documents do not mention "max_connections"'
    assert _asked(components, check, "Does the main cluster run on macOS?") == (
        'the documents do not mention "macos"'
    )
    # Written in the documents, or one slip away from it: not refused for the name.
    assert _asked(components, check, "What does log_min_duration_statement log?") is None
    assert _asked(components, check, "What does log_min_duration_statment log?") is None
    # A word with digits slipped in is a mangled word, not code ("S08_settlement").
    assert _asked(components, check, "Which port does the default cl08_uster use?") is None


def test_a_name_only_other_collections_hold_is_unknown_to_a_reader(
    components: Components,
) -> None:
    """Whether the documents mention a name is the readable collections' answer: a reader of
    `ops` learns nothing from `hr` documents that name Docker."""
    _index_in(components, "ops", GROUPS)
    check = _name_check(components)
    question = "Which group controls access to the Docker daemon?"
    before = _asked(components, check, question, "ops")
    _index_in(components, "hr", {"docker": "Docker is installed on every HR laptop."})
    assert (
        _asked(components, check, question, "ops")
        == before
        == ('the documents do not mention "docker"')
    )
    assert _asked(components, check, question, "ops", "hr") is None


def test_the_askers_own_verbs_and_adjectives_weigh_little_a_missing_noun_does(
    components: Components, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "stash away for later" is how a person words "carried over": verbs, adverbs and
    adjectives no passage holds must not refuse a question whose nouns a passage holds. A noun
    no passage holds ("pension credits") names what the documents do not cover."""
    _index(components)
    check = _check(components, min_key_coverage=0.6)
    worded = "How many unused leave days can I stash away?"
    assert _weakness(components, check, worded) is None
    reason = _weakness(components, check, "How many pension credits can employees carry over?")
    assert reason is not None and "what the question is about" in reason
    monkeypatch.setattr(grounding, "WORDING_WEIGHT", 1.0)  # weighed as nouns, they refuse
    assert _weakness(components, check, worded) is not None
    monkeypatch.setattr(grounding, "WORDING_WEIGHT", 0.25)
    # Only where a sentence comes near the question in meaning.
    monkeypatch.setattr(abstention, "WORDING_SIMILARITY", 0.99)
    assert _weakness(components, check, worded) is not None


def test_verbs_adverbs_and_adjectives_are_the_questions_wording() -> None:
    words = wording_words("My cron jobs keep spamming me. How do I quietly stop it?")
    assert {"keep", "spamming", "quietly", "stop"} <= words
    assert not {"cron", "jobs"} & words
    # Capitalized inside a sentence, a word is part of a name, however it is tagged.
    assert "open" not in wording_words("Which setting enables TCP Fast Open for a socket?")


def test_the_tagger_loads_without_pytorch_and_leaves_it_importable() -> None:
    """A serving process never needs PyTorch for the tagger (236 MB and 1.6 s more)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from retriever.word_roles import wording_words\n"
        "assert 'keep' in wording_words('Why do my jobs keep failing?')\n"
        "assert 'torch' not in sys.modules\n"
        "import torch\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
