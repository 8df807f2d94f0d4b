"""The request and response models of /api/v1/ask (and of MCP's `search`, which takes the same
retrieval options). The answer's own fields are declared once, on
`retriever.answer_types.Answer`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from retriever.answer_types import Answer
from retriever.question import AnswerMode, Mode
from server.common import check_question
from server.contract import Invalid, absent

CollectionName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


def _question(value: str) -> str:
    return check_question(value)  # empty_question, question_too_long (the server's limit)


TopK = Annotated[
    int,
    Field(ge=1, le=50, description="How many passages (default: the server's `top_k`)."),
    Invalid("'top_k' must be an integer from 1 to 50"),
]
SearchMode = Annotated[
    Mode,
    Field(
        description="hybrid (default: the server's `retrieval_mode`), dense (meaning) or "
        "bm25 (exact words)."
    ),
    Invalid("'mode' must be one of hybrid, dense, bm25"),
]
Collections = Annotated[
    CollectionName | Annotated[list[CollectionName], Field(min_length=1)] | None,
    Field(
        description="Search only this collection or these collections (inbox subfolders; "
        "default: every collection you may read)."
    ),
    Invalid("'collection' must be a name or a non-empty list of names"),
]


class _Retrieval(BaseModel):
    """What a question and a search share: strict JSON types, the collection filter (each
    declares `collection` itself: a field of a base class would be checked first)."""

    model_config = ConfigDict(strict=True)

    def collections(self) -> list[str] | None:
        collection: str | list[str] | None = getattr(self, "collection", None)
        return [collection] if isinstance(collection, str) else collection


class AskRequest(_Retrieval):
    """A question. Fields are checked in this order; the first bad one is the error."""

    question: Annotated[
        str,
        AfterValidator(_question),
        Field(min_length=1, description="The question (at most `max_question_chars`)."),
        Invalid("'question' must be a string", missing="'question' is required"),
    ]
    top_k: TopK = absent()  # absent: the server's setting (null is not accepted)
    mode: SearchMode = absent()
    answer_mode: Annotated[
        AnswerMode,
        Field(
            description="generative (the model writes) or extractive (the best supported "
            "sentences, quoted); default: the server's `answer_mode`."
        ),
        Invalid("'answer_mode' must be one of generative, extractive"),
    ] = absent()
    collection: Collections = None
    stream: Annotated[
        bool,
        Field(
            description="Answer as server-sent events: `sources`, `token`..., then `done` "
            "(the same object as without streaming) or `error`."
        ),
        Invalid("'stream' must be true or false"),
    ] = False
    timeout_s: Annotated[
        float | None,
        Field(gt=0, description="Seconds this answer may take (capped by `llm_timeout_s`)."),
        Invalid("'timeout_s' must be a positive number"),
    ] = None
    conversation_id: Annotated[
        str | None,
        Field(
            description="Ask within a conversation: a follow-up is made self-contained for "
            "retrieval from the earlier questions, and the question and answer are stored in "
            "it (the answer then carries `conversation_id`, `message_id` and `query`)."
        ),
        Invalid("'conversation_id' must be a string"),
    ] = None


class SearchArguments(_Retrieval):
    """MCP `search`: passages for a query, no model."""

    query: Annotated[
        str,
        AfterValidator(_question),
        Field(min_length=1, description="What to look for"),
        Invalid("'query' must be a string", missing="'query' is required"),
    ]
    top_k: TopK = absent()
    mode: SearchMode = absent()
    collection: Collections = None


@dataclass
class AskResponse(Answer):
    """The answer (`Answer`'s fields); asked within a conversation, also where it was stored."""

    __pydantic_config__ = ConfigDict(json_schema_serialization_defaults_required=False)

    conversation_id: Annotated[str | None, Field(description="With `conversation_id` only.")] = None
    message_id: Annotated[
        str | None,
        Field(description="The stored answer's id (for feedback); with `conversation_id` only."),
    ] = None
    query: Annotated[
        str | None,
        Field(
            description="The self-contained question retrieval used; with `conversation_id` only."
        ),
    ] = None
