"""One JSON error body for every error: {"error": {"code", "message"}}.

A blueprint with another convention (the OpenAI-compatible one under /v1/) registers its own
renderer for its path prefix; routing errors under that prefix (404, 405) use it too."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# Codes for errors Werkzeug raises itself.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}

# (status, code, message, extra headers) -> response
ErrorRenderer = Callable[[int, str, str, Mapping[str, str]], ResponseReturnValue]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """The one error body of /api/v1."""

    error: ErrorDetail


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> ResponseReturnValue:
    return jsonify({"error": {"code": code, "message": message}}), status, dict(headers or {})


def register_error_handlers(
    app: Flask, renderers: Mapping[str, ErrorRenderer] | None = None
) -> None:
    """`renderers`: path prefix -> renderer, for routes whose clients expect another shape."""
    by_prefix = dict(renderers or {})

    def render(
        status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> ResponseReturnValue:
        for prefix, renderer in by_prefix.items():
            if request.path.startswith(prefix):
                return renderer(status, code, message, dict(headers or {}))
        return error_response(status, code, message, headers)

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> ResponseReturnValue:
        return render(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> ResponseReturnValue:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = exc.description or exc.name
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"the request is larger than the limit of {limit} bytes"
        return render(status, code, message)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> ResponseReturnValue:
        log.exception("unhandled error")
        return render(500, "internal", "internal error; see the server log")
