"""Conversations (the chat's history) and answer feedback under /api/v1."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from server.access import current, visible_answer
from server.common import json_body
from server.errors import ApiError
from server.state import state
from service.conversations import RATINGS, TITLE_CHARS

conversations_api = Blueprint("conversations_api", __name__, url_prefix="/api/v1")
MAX_COMMENT_CHARS = 2000


def _limit(default: int, most: int) -> int:
    value = request.args.get("limit", str(default))
    if not value.isdigit() or not 1 <= int(value) <= most:
        raise ApiError(400, "invalid_limit", f"'limit' must be an integer from 1 to {most}")
    return int(value)


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


def _title(body: dict[str, Any], required: bool) -> str:
    title = body.get("title")
    if title is None and not required:
        return ""
    if not isinstance(title, str) or not title.strip() or len(title) > TITLE_CHARS:
        raise ApiError(
            400,
            "invalid_title",
            f"'title' must be a non-empty string of at most {TITLE_CHARS} characters",
        )
    return title


@conversations_api.get("/conversations")
def list_conversations() -> ResponseReturnValue:
    recent = state().conversations.recent(_limit(100, 500), owner=_owner())
    return jsonify({"conversations": recent})


@conversations_api.post("/conversations")
def create_conversation() -> ResponseReturnValue:
    body = request.get_json(silent=True) or {}
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the request body must be a JSON object")
    store = state().conversations
    conversation = store.create(_title(body, required=False), owner=_owner())
    cap = state().settings.max_conversations_per_user
    if cap:  # a bounded history per user: the least recently used beyond the cap go
        store.prune(_owner(), cap)
    return jsonify(conversation), 201


@conversations_api.get("/conversations/<conversation_id>")
def get_conversation(conversation_id: str) -> ResponseReturnValue:
    conversation = _conversation(conversation_id)
    # History follows the permission rule as it is now, not as it was when answered.
    messages = [visible_answer(m) for m in state().conversations.messages(conversation_id)]
    return jsonify({**conversation, "messages": messages})


@conversations_api.patch("/conversations/<conversation_id>")
def rename_conversation(conversation_id: str) -> ResponseReturnValue:
    _conversation(conversation_id)
    title = _title(json_body(), required=True)
    return jsonify(state().conversations.rename(conversation_id, title))


@conversations_api.delete("/conversations/<conversation_id>")
def delete_conversation(conversation_id: str) -> ResponseReturnValue:
    _conversation(conversation_id)
    state().conversations.delete(conversation_id)
    return jsonify({"id": conversation_id, "deleted": True})


@conversations_api.post("/feedback")
def give_feedback() -> ResponseReturnValue:
    body = json_body()
    message_id, rating, comment = (
        body.get("message_id"),
        body.get("rating"),
        body.get("comment", ""),
    )
    if not isinstance(message_id, str) or not message_id:
        raise ApiError(400, "invalid_message_id", "'message_id' must be an answer's message id")
    if rating not in RATINGS:
        raise ApiError(400, "invalid_rating", f"'rating' must be one of {', '.join(RATINGS)}")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT_CHARS:
        raise ApiError(
            400,
            "invalid_comment",
            f"'comment' must be a string of at most {MAX_COMMENT_CHARS} characters",
        )
    message = state().conversations.message(message_id)
    conversation = state().conversations.get(message["conversation_id"]) if message else None
    if conversation is None or conversation.get("owner", "") != _owner():  # one's own only
        raise ApiError(404, "message_not_found", f"no answer with id '{message_id}'")
    try:
        entry = state().conversations.set_feedback(message_id, rating, comment)
    except KeyError:
        raise ApiError(404, "message_not_found", f"no answer with id '{message_id}'") from None
    return jsonify(entry), 201


@conversations_api.get("/feedback")
def list_feedback() -> ResponseReturnValue:
    rating = request.args.get("rating")
    if rating is not None and rating not in RATINGS:
        raise ApiError(400, "invalid_rating", f"'rating' must be one of {', '.join(RATINGS)}")
    store = state().conversations
    return jsonify(
        {"feedback": store.feedback(_limit(100, 500), rating), "counts": store.feedback_counts()}
    )
