"""`Question`: what a caller asks of `AnswerService`, built once and checked where it is built;
and the service honouring each of its fields (real embedder and Chroma, fake model)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from retriever.answer_types import SourcesEvent, TokenEvent
from retriever.components import Components
from retriever.generation import FakeGenerator
from retriever.question import Question
from retriever.types import Chunk, chunk_id

LEAVE = "Parental leave lasts 16 weeks at full pay. It may be split into two blocks."
BACKUPS = "Backups run every night at 02:00 and are kept for 35 days."


def _index(components: Components, text: str, path: str, collection: str) -> None:
    chunk = Chunk(chunk_id(path, 0, text), path, 0, text, path, path.strip("/"), collection)
    components.store.upsert([chunk], components.embedder.embed([chunk.embedding_text()]))
    components.keyword.add([chunk])


def test_defaults_leave_every_option_to_the_service() -> None:
    q = Question("How long is parental leave?")
    assert (q.collections, q.top_k, q.mode, q.answer_mode) == (None, None, None, None)
    assert (q.max_tokens, q.timeout_s, q.actor) == (None, None, "anonymous")


def test_a_question_cannot_change_once_built() -> None:
    q = Question("hi", collections=["hr", "eng"])
    assert q.collections == ("hr", "eng")  # the caller's list, copied into a tuple
    with pytest.raises(dataclasses.FrozenInstanceError):
        q.top_k = 3  # type: ignore[misc]
    assert hash(q) == hash(Question("hi", collections=("hr", "eng")))


def test_one_collection_name_is_one_name_not_its_letters() -> None:
    assert Question("hi", collections="hr").collections == ("hr",)
    assert Question("hi", collections=[]).collections == ()  # nothing readable: nothing found


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"text": ""}, "needs some text"),
        ({"text": "   "}, "needs some text"),
        ({"top_k": 0}, "top_k must be a whole number of at least 1"),
        ({"top_k": True}, "top_k must be"),
        ({"top_k": 2.5}, "top_k must be"),
        ({"max_tokens": -1}, "max_tokens must be"),
        ({"timeout_s": 0}, "timeout_s must be a number of seconds above 0"),
        ({"timeout_s": math.nan}, "timeout_s must be"),
        ({"timeout_s": "10"}, "timeout_s must be"),
        ({"mode": "fuzzy"}, "mode must be one of hybrid, dense, bm25"),
        ({"answer_mode": "poetic"}, "answer_mode must be one of generative, extractive"),
        ({"collections": ["hr", ""]}, "collections must be names"),
        ({"collections": ["hr", 3]}, "collections must be names"),
    ],
)
def test_invalid_fields_are_refused_where_the_question_is_built(
    fields: dict[str, object], message: str
) -> None:
    values: dict[str, object] = {"text": "How long is parental leave?", **fields}
    with pytest.raises(ValueError, match=message):
        Question(**values)  # type: ignore[arg-type]


def test_collections_limit_what_is_found(components: Components) -> None:
    _index(components, LEAVE, "/hr/leave.md", "hr")
    _index(components, BACKUPS, "/eng/backups.md", "eng")
    inside = components.answers.ask(Question("How long is parental leave?", collections=["hr"]))
    assert [s.path for s in inside.sources] == ["/hr/leave.md"] and not inside.abstained
    outside = components.answers.ask(Question("How long is parental leave?", collections=["eng"]))
    assert all(s.path != "/hr/leave.md" for s in outside.sources)
    assert outside.abstained
    nothing = components.answers.ask(Question("How long is parental leave?", collections=[]))
    assert nothing.abstained and nothing.sources == []


def test_top_k_mode_and_answer_mode_reach_retrieval_and_the_answer(
    components: Components,
) -> None:
    _index(components, LEAVE, "/hr/leave.md", "hr")
    _index(components, BACKUPS, "/eng/backups.md", "eng")
    fake = components.generator
    assert isinstance(fake, FakeGenerator)
    asked = Question("How long is parental leave?", top_k=1, mode="dense", answer_mode="extractive")
    answer = components.answers.ask(asked)
    assert [s.path for s in answer.sources] == ["/hr/leave.md"]  # one source, not two
    assert answer.mode == "extractive" and fake.history == []  # no model asked
    both = components.answers.ask(Question("How long is parental leave?", top_k=2))
    assert len(both.sources) == 2


def test_max_tokens_lowers_the_model_limit(components: Components) -> None:
    _index(components, LEAVE, "/hr/leave.md", "hr")
    fake = components.generator
    assert isinstance(fake, FakeGenerator)
    fake.enqueue("Parental leave lasts 16 weeks at full pay [1].")
    events = list(components.answers.stream(Question("How long is parental leave?", max_tokens=3)))
    assert isinstance(events[0], SourcesEvent)
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert "".join(t.text for t in tokens) == "Parental leave lasts"  # 3 of the reply's words
