"""OpenAPI 3.1 description of /api/v1 (a test checks it matches the routes)."""

from __future__ import annotations

import re
from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(_ERROR, "error") for s in statuses}


_GENERATION = {
    "type": "object",
    "properties": {
        "number": {"type": "integer"},
        "model": {"type": "string"},
        "collection": {"type": "string"},
        "source": {"type": "string"},
        "activated_at": {"type": "number"},
    },
}
_EMBEDDER = {
    "type": "object",
    "properties": {
        "current": _GENERATION,
        "previous": {"oneOf": [_GENERATION, {"type": "null"}]},
        "activation": {
            "type": "object",
            "properties": {
                "phase": {
                    "type": "string",
                    "enum": ["idle", "starting", "embedding", "swapping", "done", "failed"],
                },
                "target": {"type": ["integer", "null"]},
                "done": {"type": "integer"},
                "total": {"type": "integer"},
                "error": {"type": ["string", "null"]},
            },
        },
    },
}
_DOC_ID = {"name": "document_id", "in": "path", "required": True, "schema": {"type": "string"}}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "AskRequest": {
        "type": "object",
        "required": ["question"],
        "properties": {
            "question": {"type": "string", "minLength": 1},
            "top_k": {"type": "integer", "minimum": 1, "maximum": 50},
            "mode": {"type": "string", "enum": ["hybrid", "dense", "bm25"]},
            "answer_mode": {"type": "string", "enum": ["generative", "extractive"]},
            "stream": {
                "type": "boolean",
                "description": "Answer as server-sent events: `sources`, `token`..., then "
                "`done` (the same object as without streaming) or `error`.",
            },
            "timeout_s": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "Seconds this answer may take (capped by `llm_timeout_s`).",
            },
            "conversation_id": {
                "type": "string",
                "description": "Ask within a conversation: a follow-up is made self-contained "
                "for retrieval from the earlier questions, and the question and answer are stored "
                "in it (the answer then carries `conversation_id`, `message_id` and `query`).",
            },
            "collection": {
                "description": "Search only these collections (inbox subfolders).",
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "minItems": 1},
                ],
            },
        },
    },
    "Source": {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "document_id": {"type": "string"},
            "path": {"type": "string"},
            "title": {"type": "string"},
            "page": {"type": ["integer", "null"]},
            "text": {"type": "string"},
            "score": {"type": "number"},
        },
    },
    "AskResponse": {
        "type": "object",
        "required": ["answer", "abstained", "sources", "timings"],
        "properties": {
            "answer": {"type": "string"},
            "abstained": {"type": "boolean"},
            "citations": {"type": "array", "items": {"type": "integer"}},
            "supports": {
                "type": "array",
                "description": "For each answer sentence: the source and the character span "
                "of its supporting sentence in that source's text.",
                "items": {
                    "type": "object",
                    "properties": {
                        "n": {"type": "integer"},
                        "start": {"type": "integer"},
                        "end": {"type": "integer"},
                        "score": {"type": "number"},
                    },
                },
            },
            "answer_mode": {"type": "string"},
            "unsupported_sentences_removed": {"type": "integer"},
            "model_cited": {
                "type": ["boolean", "null"],
                "description": "Whether the model's own text cited a given source.",
            },
            "direct_answer": {
                "type": ["string", "null"],
                "description": "The short answer the text opens with (the phrase or number "
                "asked for), before the quoted evidence; null when Enclave abstained.",
            },
            "abstention_reason": {
                "type": ["string", "null"],
                "description": "Why the passages could not answer, when Enclave abstained "
                "without asking the model.",
            },
            "escalated": {
                "type": ["object", "null"],
                "description": "The larger model that answered (endpoint, model, reason), "
                "when the local answer was escalated under the escalation policy.",
            },
            "sources": {"type": "array", "items": {"$ref": "#/components/schemas/Source"}},
            "conversation_id": {"type": "string", "description": "with `conversation_id` only"},
            "message_id": {
                "type": "string",
                "description": "the stored answer's id (for feedback); with `conversation_id` only",
            },
            "query": {
                "type": "string",
                "description": "the self-contained question retrieval used; with "
                "`conversation_id` only",
            },
            "timings": {
                "type": "object",
                "properties": {
                    k: {"type": "number"}
                    for k in ("retrieve_ms", "generate_ms", "tokens", "tokens_per_s")
                },
            },
        },
    },
    "Document": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "path": {"type": "string"},
            "collection": {"type": "string"},
            "title": {"type": "string"},
            "name": {"type": "string", "description": "file name"},
            "status": {"type": "string", "enum": ["pending", "indexed", "failed", "deleted"]},
            "chunks": {"type": "integer"},
            "error": {"type": ["string", "null"], "description": "why it failed"},
            "size": {"type": "integer", "description": "bytes"},
            "sha256": {"type": "string"},
            "updated_at": {"type": "number"},
            "indexed_at": {"type": ["number", "null"]},
            "pages": {
                "type": ["object", "null"],
                "description": "while pending and being read (a PDF, a scan being OCRed)",
                "properties": {"done": {"type": "integer"}, "total": {"type": "integer"}},
            },
        },
    },
    "Conversation": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "title": {"type": "string"},
            "created_at": {"type": "number"},
            "updated_at": {"type": "number"},
            "messages": {"type": "integer", "description": "in the list: how many"},
        },
    },
    "Message": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "role": {"type": "string", "enum": ["user", "assistant"]},
            "content": {"type": "string"},
            "query": {
                "type": ["string", "null"],
                "description": "user: the self-contained question retrieval used, if rewritten",
            },
            "answer": {
                "description": "assistant: the answer object as `ask` returned it",
                "oneOf": [{"$ref": "#/components/schemas/AskResponse"}, {"type": "null"}],
            },
            "stopped": {"type": "boolean", "description": "the reader stopped the answer"},
            "feedback": {"oneOf": [{"$ref": "#/components/schemas/Feedback"}, {"type": "null"}]},
            "created_at": {"type": "number"},
        },
    },
    "Feedback": {
        "type": "object",
        "properties": {
            "message_id": {"type": "string"},
            "conversation_id": {"type": ["string", "null"]},
            "rating": {"type": "string", "enum": ["up", "down"]},
            "comment": {"type": "string"},
            "question": {"type": "string"},
            "answer": {"type": "string"},
            "abstained": {"type": "boolean"},
            "created_at": {"type": "number"},
        },
    },
}
_CONVERSATION_ID = {
    "name": "conversation_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}


def _limit_param(most: int) -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": most},
    }


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _conversation_paths() -> dict[str, Any]:
    conversation = {"$ref": "#/components/schemas/Conversation"}
    title = {"type": "object", "properties": {"title": {"type": "string", "maxLength": 80}}}
    return {
        "/api/v1/conversations": {
            "get": {
                "operationId": "listConversations",
                "summary": "Conversations, most recently active first",
                "parameters": [_limit_param(500)],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "conversations": {"type": "array", "items": conversation}
                            },
                        },
                        "conversations",
                    ),
                    **_errors(400),
                },
            },
            "post": {
                "operationId": "createConversation",
                "summary": "Start a conversation (titled by its first question unless given)",
                "requestBody": _body(title, required=False),
                "responses": {"201": _json(conversation, "created"), **_errors(400)},
            },
        },
        "/api/v1/conversations/{conversation_id}": {
            "get": {
                "operationId": "getConversation",
                "summary": "A conversation with its messages, answers with their sources",
                "parameters": [_CONVERSATION_ID],
                "responses": {
                    "200": _json(
                        {
                            "allOf": [
                                conversation,
                                {
                                    "type": "object",
                                    "properties": {
                                        "messages": {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Message"},
                                        }
                                    },
                                },
                            ]
                        },
                        "conversation",
                    ),
                    **_errors(404),
                },
            },
            "patch": {
                "operationId": "renameConversation",
                "summary": "Rename a conversation",
                "parameters": [_CONVERSATION_ID],
                "requestBody": _body({**title, "required": ["title"]}),
                "responses": {"200": _json(conversation, "renamed"), **_errors(400, 404)},
            },
            "delete": {
                "operationId": "deleteConversation",
                "summary": "Delete a conversation and its messages (feedback given stays)",
                "parameters": [_CONVERSATION_ID],
                "responses": {"200": _json({"type": "object"}, "deleted"), **_errors(404)},
            },
        },
        "/api/v1/feedback": {
            "get": {
                "operationId": "listFeedback",
                "summary": "Answer ratings and comments, newest first (for administrators)",
                "parameters": [
                    _limit_param(500),
                    {
                        "name": "rating",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["up", "down"]},
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "feedback": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Feedback"},
                                },
                                "counts": {"type": "object"},
                            },
                        },
                        "feedback",
                    ),
                    **_errors(400),
                },
            },
            "post": {
                "operationId": "giveFeedback",
                "summary": "Rate an answer up or down, with an optional comment (a second "
                "rating of the same answer replaces the first)",
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["message_id", "rating"],
                        "properties": {
                            "message_id": {"type": "string"},
                            "rating": {"type": "string", "enum": ["up", "down"]},
                            "comment": {"type": "string", "maxLength": 2000},
                        },
                    }
                ),
                "responses": {
                    "201": _json({"$ref": "#/components/schemas/Feedback"}, "stored"),
                    **_errors(400, 404),
                },
            },
        },
    }


def _document_action_paths() -> dict[str, Any]:
    return {
        "/api/v1/documents/{document_id}/file": {
            "get": {
                "operationId": "getDocumentFile",
                "summary": "The document's original file (PDF, text, Markdown and CSV shown "
                "inline, other formats downloaded); add `#page=N` to open a PDF at a page",
                "parameters": [_DOC_ID],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors(404, 410),
                },
            }
        },
        "/api/v1/documents/{document_id}/reindex": {
            "post": {
                "operationId": "reindexDocument",
                "summary": "Parse and index the document again from its file (retry a failure)",
                "parameters": [_DOC_ID],
                "responses": {
                    "202": _json({"type": "object"}, "pending again"),
                    **_errors(404, 410, 503),
                },
            }
        },
        "/api/v1/ingest/retry-failed": {
            "post": {
                "operationId": "retryFailed",
                "summary": "Index every failed document again from its file, as one job",
                "responses": {
                    "202": _json(
                        {
                            "type": "object",
                            "properties": {
                                "documents": {"type": "array", "items": {"type": "string"}},
                                "count": {"type": "integer"},
                            },
                        },
                        "documents pending again",
                    ),
                    **_errors(503),
                },
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """The description of /api/v1, with the authentication each operation needs (read from
    the routes' scopes in `server/auth.py`, so the two cannot drift apart)."""
    return _with_security(_paths_document())


def _with_security(doc: dict[str, Any]) -> dict[str, Any]:
    from flask import current_app

    from server.auth import PUBLIC, RATE_LIMITED, REQUIRED_SCOPE

    adapter = current_app.url_map.bind("localhost")
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            endpoint, _ = adapter.match(re.sub(r"\{\w+\}", "x", path), method.upper())
            if endpoint in PUBLIC:
                operation["security"] = []
                continue
            scope = REQUIRED_SCOPE.get(str(endpoint), "admin")
            operation["security"] = [{"bearerAuth": []}]
            operation["x-required-scope"] = scope
            operation["responses"].update(_errors(401, 403))
            if endpoint in RATE_LIMITED:
                operation["responses"].update(_errors(429))
    doc["components"]["securitySchemes"] = {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `enclave keys create` (auth modes api_key and "
            "trusted_header); `x-required-scope` is the least scope an operation needs: "
            "ask < ingest < admin. With auth mode none (loopback only) no key is needed.",
        }
    }
    return doc


def _paths_document() -> dict[str, Any]:
    doc_ref = {"$ref": "#/components/schemas/Document"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Enclave API",
            "version": "1",
            "description": "Questions answered from your own documents by an on-prem model.",
        },
        "paths": {
            "/api/v1/ask": {
                "post": {
                    "operationId": "ask",
                    "summary": "Answer a question from the indexed documents, with sources",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/AskRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "answer (JSON), or events when `stream` is true",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/AskResponse"}
                                },
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        "429": {
                            **_json(_ERROR, "busy: every generation slot and queue place taken"),
                            "headers": {
                                "Retry-After": {
                                    "description": "seconds to wait",
                                    "schema": {"type": "integer"},
                                }
                            },
                        },
                        **_errors(400, 502, 503, 504),
                    },
                }
            },
            "/api/v1/documents": {
                "get": {
                    "operationId": "listDocuments",
                    "summary": "List documents and their indexing status",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {"documents": {"type": "array", "items": doc_ref}},
                            },
                            "documents",
                        )
                    },
                },
                "post": {
                    "operationId": "uploadDocument",
                    "summary": "Upload a document; it is indexed in the background",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["file"],
                                    "properties": {"file": {"type": "string", "format": "binary"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "status": {"type": "string"},
                                    "name": {"type": "string", "description": "file name"},
                                },
                            },
                            "accepted",
                        ),
                        **_errors(400, 413, 415, 503),
                    },
                },
            },
            "/api/v1/documents/{document_id}": {
                "get": {
                    "operationId": "getDocument",
                    "summary": "One document's status",
                    "parameters": [_DOC_ID],
                    "responses": {"200": _json(doc_ref, "document"), **_errors(404)},
                },
                "delete": {
                    "operationId": "deleteDocument",
                    "summary": "Remove a document and its chunks from every index; an "
                    "uploaded file is deleted (file: removed), a drop-folder file moved to "
                    "data/trash (file: trash), any other file left in place (file: kept)",
                    "parameters": [_DOC_ID],
                    "responses": {
                        "200": _json({"type": "object"}, "deleted"),
                        **_errors(404, 409),
                    },
                },
            },
            "/api/v1/health": {
                "get": {
                    "operationId": "health",
                    "summary": "200 once the models are loaded, 503 before; only the status "
                    "without credentials, every detail with scope admin",
                    "responses": {
                        "200": _json({"type": "object"}, "ready"),
                        "503": _json({"type": "object"}, "loading or failed"),
                    },
                }
            },
            "/api/v1/ingest/jobs": {
                "get": {
                    "operationId": "listIngestJobs",
                    "summary": "Recent ingestion jobs (CLI runs, inbox scans, uploads) with "
                    "progress, rates and ETA",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                        }
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "jobs": {"type": "array", "items": {"type": "object"}}
                                },
                            },
                            "jobs",
                        ),
                        **_errors(400),
                    },
                }
            },
            "/api/v1/ingest/jobs/{job_id}": {
                "get": {
                    "operationId": "getIngestJob",
                    "summary": "One job with the state of each of its files",
                    "parameters": [
                        {
                            "name": "job_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {"200": _json({"type": "object"}, "job"), **_errors(404)},
                }
            },
            **_document_action_paths(),
            **_conversation_paths(),
            "/api/v1/embedder": {
                "get": {
                    "operationId": "getEmbedder",
                    "summary": "The embedder generation that serves, the one rollback returns "
                    "to, and the progress of an activation",
                    "responses": {"200": _json(_EMBEDDER, "embedder state")},
                }
            },
            "/api/v1/embedder/activate": {
                "post": {
                    "operationId": "activateEmbedder",
                    "summary": "Serve from a tuned model (a folder under the data dir): the "
                    "index is re-embedded into a new collection in the background while the "
                    "current one keeps answering, then swapped in",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["model"],
                                    "properties": {"model": {"type": "string"}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _json(_EMBEDDER, "activation started"),
                        **_errors(400, 409),
                    },
                }
            },
            "/api/v1/embedder/rollback": {
                "post": {
                    "operationId": "rollbackEmbedder",
                    "summary": "Serve from the previous embedder again (its collection is "
                    "caught up first)",
                    "responses": {
                        "202": _json(_EMBEDDER, "rollback started"),
                        **_errors(409),
                    },
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI document")},
                }
            },
        },
        "components": {"schemas": _SCHEMAS},
    }
