"""Conversations (the chat's history) and answer feedback under /api/v1."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from flask import Blueprint
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from server.access import current, visible_answer
from server.contract import REF, Invalid, absent, digits, route
from server.errors import ApiError
from server.state import state
from service.conversations import TITLE_CHARS

conversations_api = Blueprint("conversations_api", __name__, url_prefix="/api/v1")
MAX_COMMENT_CHARS = 2000
Rating = Literal["up", "down"]
Limit = Annotated[
    int,
    Field(ge=1, le=500, description="How many, at most."),
    digits,
    Invalid("'limit' must be an integer from 1 to 500"),
]


Title = Annotated[
    str,
    Field(max_length=TITLE_CHARS, pattern=r"\S", description="Not only spaces."),
    Invalid(f"'title' must be a non-empty string of at most {TITLE_CHARS} characters"),
]


class ConversationsQuery(BaseModel):
    limit: Limit = 100


class NewConversation(BaseModel):
    model_config = ConfigDict(strict=True)

    title: Annotated[
        Title | None, Field(description="Default: its first question, once asked.")
    ] = None


class Rename(BaseModel):
    model_config = ConfigDict(strict=True)

    title: Title


class FeedbackQuery(BaseModel):
    rating: Annotated[Rating, Invalid("'rating' must be one of up, down")] = absent()
    limit: Limit = 100


class NewFeedback(BaseModel):
    model_config = ConfigDict(strict=True)

    message_id: Annotated[
        str, Field(min_length=1), Invalid("'message_id' must be an answer's message id")
    ]
    rating: Annotated[Rating, Invalid("'rating' must be one of up, down")]
    comment: Annotated[
        str,
        Field(max_length=MAX_COMMENT_CHARS),
        Invalid(f"'comment' must be a string of at most {MAX_COMMENT_CHARS} characters"),
    ] = ""


class Conversation(BaseModel):
    id: str
    title: str
    created_at: float
    updated_at: float
    owner: Annotated[str, Field(description="Its owner (empty: auth mode none's caller).")]
    messages: Annotated[int, Field(description="In the list: how many messages.")] = absent()


class Rated(BaseModel):
    rating: Rating
    comment: str


class Message(BaseModel):
    id: str
    conversation_id: str
    role: Literal["user", "assistant"]
    content: str
    query: Annotated[
        str | None,
        Field(description="user: the self-contained question retrieval used, if rewritten"),
    ]
    answer: Annotated[
        dict[str, Any] | None,
        WithJsonSchema({"anyOf": [{"$ref": REF.format(model="AskResponse")}, {"type": "null"}]}),
        Field(
            description="assistant: the answer object as `ask` returned it (a stopped one "
            "as far as it got)"
        ),
    ]
    stopped: Annotated[bool, Field(description="The reader stopped the answer.")]
    feedback: Rated | None
    created_at: float


class ConversationDetail(Conversation):
    messages: list[Message]  # type: ignore[assignment]


class ConversationList(BaseModel):
    conversations: list[Conversation]


class Feedback(BaseModel):
    message_id: str
    conversation_id: str | None
    rating: Rating
    comment: str
    question: str
    answer: str
    abstained: bool
    created_at: float


class FeedbackList(BaseModel):
    feedback: list[Feedback]
    counts: Annotated[dict[str, int], Field(description="Ratings by kind, of all answers.")]


class ConversationDeleted(BaseModel):
    id: str
    deleted: bool


def _owner() -> str:
    """Conversations belong to the caller; the anonymous caller of auth mode none owns ''."""
    principal = current()
    return "" if principal.via == "none" else principal.name


def _conversation(conversation_id: str) -> dict[str, Any]:
    """The caller's conversation with that id; another's is 404, as if it did not exist."""
    conversation = state().conversations.get(conversation_id)
    if conversation is None or conversation.get("owner", "") != _owner():
        raise ApiError(
            404, "conversation_not_found", f"no conversation with id '{conversation_id}'"
        )
    return conversation


@route(
    conversations_api,
    "/conversations",
    scope="ask",
    query=ConversationsQuery,
    responses={200: ConversationList},
)
def list_conversations(query: ConversationsQuery) -> ConversationList:
    """Conversations, most recently active first."""
    recent = state().conversations.recent(query.limit, owner=_owner())
    return ConversationList.model_validate({"conversations": recent})


@route(
    conversations_api,
    "/conversations",
    "POST",
    scope="ask",
    body=NewConversation,
    body_required=False,
    responses={201: Conversation},
)
def create_conversation(body: NewConversation) -> tuple[Conversation, int]:
    """Start a conversation (titled by its first question unless given)."""
    store = state().conversations
    conversation = store.create(body.title or "", owner=_owner())
    cap = state().settings.max_conversations_per_user
    if cap:  # a bounded history per user: the least recently used beyond the cap go
        store.prune(_owner(), cap)
    return Conversation.model_validate(conversation), 201


@route(
    conversations_api,
    "/conversations/<conversation_id>",
    scope="ask",
    responses={200: ConversationDetail},
    errors=(404,),
)
def get_conversation(conversation_id: str) -> ConversationDetail:
    """A conversation with its messages, answers with their sources."""
    conversation = _conversation(conversation_id)
    # History follows the permission rule as it is now, not as it was when answered.
    messages = [visible_answer(m) for m in state().conversations.messages(conversation_id)]
    return ConversationDetail.model_validate({**conversation, "messages": messages})


@route(
    conversations_api,
    "/conversations/<conversation_id>",
    "PATCH",
    scope="ask",
    body=Rename,
    responses={200: Conversation},
    errors=(404,),
)
def rename_conversation(conversation_id: str, body: Rename) -> Conversation:
    """Rename a conversation."""
    _conversation(conversation_id)
    return Conversation.model_validate(state().conversations.rename(conversation_id, body.title))


@route(
    conversations_api,
    "/conversations/<conversation_id>",
    "DELETE",
    scope="ask",
    responses={200: ConversationDeleted},
    errors=(404,),
)
def delete_conversation(conversation_id: str) -> ConversationDeleted:
    """Delete a conversation and its messages (feedback given stays)."""
    _conversation(conversation_id)
    state().conversations.delete(conversation_id)
    return ConversationDeleted(id=conversation_id, deleted=True)


@route(
    conversations_api,
    "/feedback",
    "POST",
    scope="ask",
    body=NewFeedback,
    responses={201: Feedback},
    errors=(404,),
)
def give_feedback(body: NewFeedback) -> tuple[Feedback, int]:
    """Rate an answer up or down, with an optional comment (a second rating of the same
    answer replaces the first)."""
    message_id = body.message_id
    message = state().conversations.message(message_id)
    conversation = state().conversations.get(message["conversation_id"]) if message else None
    if conversation is None or conversation.get("owner", "") != _owner():  # one's own only
        raise ApiError(404, "message_not_found", f"no answer with id '{message_id}'")
    try:
        entry = state().conversations.set_feedback(message_id, body.rating, body.comment)
    except KeyError:
        raise ApiError(404, "message_not_found", f"no answer with id '{message_id}'") from None
    # The answer as the caller may see it now (hidden if it cites what they no longer read).
    stored = message["answer"] if message else None
    shown = visible_answer(
        {"content": entry["answer"], "answer": json.loads(stored) if stored else None}
    )
    return Feedback.model_validate({**entry, "answer": shown["content"]}), 201


@route(
    conversations_api,
    "/feedback",
    scope="admin",
    query=FeedbackQuery,
    responses={200: FeedbackList},
)
def list_feedback(query: FeedbackQuery) -> FeedbackList:
    """Answer ratings and comments, newest first (for administrators)."""
    store = state().conversations
    return FeedbackList.model_validate(
        {"feedback": store.feedback(query.limit, query.rating), "counts": store.feedback_counts()}
    )
