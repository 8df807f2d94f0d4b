"""Each route's HTTP contract, declared once beside its view by `@route`: who may call it (scope,
public, rate limit), the pydantic models of its query, body and responses, and its summary (the
view's docstring). From that one declaration:

- the request is validated (`parse`): a `ValidationError` becomes the one error body, 400 with
  the code and message the field declares (`Invalid`), `missing_<name>` / `invalid_<name>` else;
- a response model returned by the view is serialized through it (only its fields go out);
- server/auth.py reads scope, public-ness and rate limit from the view (`contract_of`), and a
  view without a contract needs admin (fail closed);
- `/api/v1/openapi.json` is generated (OpenAPI 3.1: pydantic's JSON Schema 2020-12, `$defs` as
  `components/schemas`)."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar, cast

from flask import Blueprint, Flask, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, BeforeValidator, Field, TypeAdapter, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue

from server.errors import ApiError, ErrorBody
from service.identity import Scope

View = TypeVar("View", bound=Callable[..., Any])
REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Invalid:
    """The error a bad value of a field gets (as `Annotated[..., Invalid(...)]` metadata):
    `invalid_<field>` with `message`; a missing field gets `missing_<field>` with `missing`
    if given, else the same error."""

    message: str
    missing: str | None = None


def absent() -> Any:
    """The default of a field that may be absent but is never null: its type is what it is
    when present (the view reads None as "absent"); the schema shows no default."""
    return Field(default=None)


def _digits(value: Any) -> Any:
    if isinstance(value, str):
        if not value.isdigit():
            raise ValueError("not an integer")
        return int(value)
    return value


# An integer in a query string, digits only (no sign, no spaces): after the Field constraints,
# `Annotated[int, Field(ge=1), digits]`.
digits = BeforeValidator(_digits)


@dataclass(frozen=True)
class File:
    """A response that is a file, not JSON."""


@dataclass(frozen=True)
class Contract:
    scope: Scope | None  # None: public (the view checks any access itself)
    rate_limited: bool = False  # counted against the caller's per-minute limit
    page: bool = False  # a web page: without a login, redirect to the sign-in form
    upload: bool = False  # the body may be `max_upload_mb`, not `max_request_kb`
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    form: type[BaseModel] | None = None  # multipart; documented, read by the view
    responses: Mapping[int, Any] = field(default_factory=dict)  # status -> type, or File
    errors: tuple[int, ...] = ()
    stream: tuple[str, ...] = ()  # the 200 response may also be these server-sent events
    docstring: str = ""


def route(
    blueprint: Blueprint,
    rule: str,
    method: str = "GET",
    *,
    scope: Scope | None,
    methods: Iterable[str] = (),
    **contract: Any,
) -> Callable[[View], View]:
    """Register the view for `rule` with its contract. The view gets the parsed `query` and
    `body` as keyword arguments; a model it returns (or `(model, status)`) is serialized."""

    def decorate(view: View) -> View:
        spec = Contract(scope, docstring=view.__doc__ or "", **contract)

        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            if spec.query is not None:
                kwargs["query"] = parse(spec.query, request.args.to_dict())
            if spec.body is not None:
                kwargs["body"] = parse(spec.body, _json_body(spec.body_required))
            return _render(view(*args, **kwargs))

        wrapper.contract = spec  # type: ignore[attr-defined]
        blueprint.add_url_rule(rule, view_func=wrapper, methods=list(methods) or [method])
        return cast(View, wrapper)

    return decorate


def contract_of(app: Flask, endpoint: str | None) -> Contract | None:
    view = app.view_functions.get(endpoint or "")
    spec = getattr(view, "contract", None)
    return spec if isinstance(spec, Contract) else None


def _json_body(required: bool) -> dict[str, Any]:
    bad = ApiError(400, "bad_json", "the request body must be a JSON object")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser recurses: not a body we take
        raise bad from None
    if body is None and not required:
        return {}
    if not isinstance(body, dict):
        raise bad
    return body


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: Any) -> M:
    """`data` as `model`, or the ApiError its first invalid field declares. Validators may
    raise ApiError themselves (a code of their own, as `question_too_long`)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(model, exc) from None


def validation_error(model: type[BaseModel], exc: ValidationError) -> ApiError:
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "body"
    info = model.model_fields.get(name)
    invalid = next((m for m in info.metadata if isinstance(m, Invalid)), None) if info else None
    if error["type"] == "missing" and (invalid is None or invalid.missing):
        message = invalid.missing if invalid and invalid.missing else f"'{name}' is required"
        return ApiError(400, f"missing_{name}", message)
    message = invalid.message if invalid else f"'{name}': {error['msg']}"
    return ApiError(400, f"invalid_{name}", message)


def _render(result: Any) -> ResponseReturnValue:
    status: int | None = None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], int):
        result, status = result
    if isinstance(result, BaseModel):
        body = jsonify(result.model_dump(mode="json", by_alias=True, exclude_unset=True))
    elif dataclasses.is_dataclass(result) and not isinstance(result, type):
        body = jsonify(_adapter(type(result)).dump_python(result, mode="json", by_alias=True))
    elif isinstance(result, dict | list):
        body = jsonify(result)
    else:
        return cast(ResponseReturnValue, result if status is None else (result, status))
    return body if status is None else (body, status)


@functools.cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


# -- the OpenAPI document ---------------------------------------------------------------------

API_PREFIX = "/api/v1"
SECURITY = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key from `enclave keys create` (auth modes api_key and "
        "trusted_header); `x-required-scope` is the least scope an operation needs: "
        "ask < ingest < admin. With auth mode none (loopback only) no key is needed.",
    }
}


class Schemas(GenerateJsonSchema):
    """No generated titles; a default of None on a field that cannot be null (absent means
    "the server's setting") is not shown."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: Any) -> JsonSchemaValue:
        result = super().default_schema(schema)
        nullable = {"type": "null"} in result.get("anyOf", [])
        if result.get("default", 0) is None and not nullable:
            result.pop("default")
        return result

    def model_schema(self, schema: Any) -> JsonSchemaValue:
        result = super().model_schema(schema)
        result.pop("title", None)
        return result

    def dataclass_schema(self, schema: Any) -> JsonSchemaValue:
        result = super().dataclass_schema(schema)
        result.pop("title", None)
        return result


def openapi_document(app: Flask) -> dict[str, Any]:
    """The description of every route under /api/v1, from the routes' contracts."""
    operations: list[tuple[str, str, str, Contract]] = []
    for rule in app.url_map.iter_rules():
        spec = contract_of(app, rule.endpoint)
        if spec is None or not rule.rule.startswith(API_PREFIX):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operations.append((path, method.lower(), rule.endpoint, spec))
    types: set[tuple[Any, JsonSchemaMode]] = {(ErrorBody, "serialization")}
    for *_, spec in operations:
        types |= {(model, "validation") for model in (spec.body, spec.form) if model}
        types |= {(k, "serialization") for k in spec.responses.values() if not isinstance(k, File)}
    inputs = [(kind, mode, _adapter(kind)) for kind, mode in sorted(types, key=str)]
    refs, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF, schema_generator=Schemas)
    schemas = dict(definitions.get("$defs", {}))
    paths: dict[str, dict[str, Any]] = {}
    for path, method, endpoint, spec in operations:
        paths.setdefault(path, {})[method] = _operation(app, endpoint, spec, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Enclave API",
            "version": "1",
            "description": "Questions answered from your own documents by an on-prem model.",
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": SECURITY},
    }


def _json(schema: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(
    app: Flask, endpoint: str, spec: Contract, refs: Mapping[Any, Any]
) -> dict[str, Any]:
    name = endpoint.rsplit(".", 1)[-1]
    summary, _, description = spec.docstring.strip().partition("\n\n")
    operation: dict[str, Any] = {
        "operationId": re.sub(r"_(\w)", lambda m: m.group(1).upper(), name),
        "summary": " ".join(summary.split()),
    }
    if description.strip():
        operation["description"] = " ".join(description.split())
    rule = next(r for r in app.url_map.iter_rules(endpoint))
    parameters = [
        {"name": arg, "in": "path", "required": True, "schema": {"type": "string"}}
        for arg in sorted(rule.arguments)
    ]
    if spec.query is not None:
        query = _adapter(spec.query).json_schema(schema_generator=Schemas)
        for arg, schema in query.get("properties", {}).items():
            required = arg in query.get("required", [])
            parameters.append({"name": arg, "in": "query", "required": required, "schema": schema})
    if parameters:
        operation["parameters"] = parameters
    if spec.body is not None:
        operation["requestBody"] = {
            "required": spec.body_required,
            "content": {"application/json": {"schema": refs[(spec.body, "validation")]}},
        }
    if spec.form is not None:
        form = refs[(spec.form, "validation")]
        operation["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": form}},
        }
    responses: dict[str, Any] = {}
    for status, kind in spec.responses.items():
        if isinstance(kind, File):
            content = {"application/octet-stream": {"schema": {"type": "string"}}}
            responses[str(status)] = {"description": "the file", "content": content}
            continue
        responses[str(status)] = _json(refs[(kind, "serialization")], _description(status))
        if spec.stream and status == 200:
            event = {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"enum": list(spec.stream)},
                    "data": {"type": "string", "contentMediaType": "application/json"},
                },
            }
            responses["200"]["content"]["text/event-stream"] = {"schema": event}
    errors = set(spec.errors)
    if spec.query is not None or spec.body is not None:
        errors.add(400)
    if spec.scope is not None:
        errors |= {401, 403}
        operation["security"] = [{"bearerAuth": []}]
        operation["x-required-scope"] = spec.scope
    else:
        operation["security"] = []
    if spec.rate_limited:
        errors.add(429)
    if not spec.upload and (spec.body is not None or spec.form is not None):
        errors.add(413)
    error = refs[(ErrorBody, "serialization")]
    for status in sorted(errors):
        responses.setdefault(str(status), _json(error, _description(status)))
    if 429 in errors:
        responses["429"]["headers"] = {
            "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
        }
    operation["responses"] = responses
    return operation


def _description(status: int) -> str:
    return HTTPStatus(status).phrase
