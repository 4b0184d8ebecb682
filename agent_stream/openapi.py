"""The OpenAPI 3.1 description of the management API, built from the routes themselves.

A handler says what it takes and answers with `@operation(...)`: the pydantic models that
validate its request (`api_schemas.py`) and describe its answers. `document(app)` walks the
app's router, so a route registered anywhere (any module's `setup_routes`) is described by
its own decorator, and the schemas are the very models requests are checked against: no
second copy to drift. A route under `/api/` that is not a management operation (a
WebSocket, a provider's callback) says so with `@undocumented(reason)`.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema

OPENAPI_VERSION: Final = "3.1.0"
API_PREFIX: Final = "/api/"
SECURITY_SCHEME: Final = "apiKey"
REF_TEMPLATE: Final = "#/components/schemas/{model}"
# The attributes a decorated handler carries.
_OPERATION: Final = "__openapi_operation__"
_UNDOCUMENTED: Final = "__openapi_undocumented__"

# What `request`, `query` and an answer's `model` may be: a model, or a type pydantic
# validates (a discriminated union of models) with the name its schema is given.
Schema = type[BaseModel] | tuple[str, TypeAdapter[Any]]
H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True)
class Header:
    """A request or response header of an operation."""

    name: str
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Answer:
    """One response of an operation: a JSON model, another media type (a WAV), or nothing."""

    description: str
    model: Schema | None = None
    media_type: str = "application/json"
    schema: Mapping[str, Any] | None = None  # for a media type without a model
    headers: tuple[Header, ...] = ()


@dataclass(frozen=True)
class Operation:
    """What a handler takes and answers, as its decorator said."""

    summary: str
    responses: Mapping[int, Answer]
    request: Schema | None = None
    request_required: bool = True
    query: type[BaseModel] | None = None
    headers: tuple[Header, ...] = ()
    auth: bool = True
    tags: tuple[str, ...] = ()
    description: str = ""
    examples: tuple[Mapping[str, Any], ...] = ()  # request bodies it takes


def operation(
    summary: str,
    *,
    responses: Mapping[int, Answer],
    request: Schema | None = None,
    request_required: bool = True,
    query: type[BaseModel] | None = None,
    headers: tuple[Header, ...] = (),
    auth: bool = True,
    tags: tuple[str, ...] = (),
    description: str = "",
    examples: tuple[Mapping[str, Any], ...] = (),
) -> Callable[[H], H]:
    """Describe a handler for the API document (the handler itself is not changed)."""
    described = Operation(summary, responses, request, request_required, query, headers, auth,
                          tags, description, examples)

    def mark(handler: H) -> H:
        setattr(handler, _OPERATION, described)
        return handler

    return mark


def undocumented(reason: str) -> Callable[[H], H]:
    """Mark a handler under /api/ as deliberately not part of the management API document."""

    def mark(handler: H) -> H:
        setattr(handler, _UNDOCUMENTED, reason)
        return handler

    return mark


def operation_of(handler: object) -> Operation | None:
    found = getattr(handler, _OPERATION, None)
    return found if isinstance(found, Operation) else None


def undocumented_reason(handler: object) -> str | None:
    found = getattr(handler, _UNDOCUMENTED, None)
    return found if isinstance(found, str) else None


# -- the document -------------------------------------------------------------------------------


class _Schemas:
    """Gathers every schema the operations name, then renders them once into
    `components.schemas` (pydantic names them and shares their sub-models)."""

    def __init__(self) -> None:
        self._models: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
        self._adapters: dict[str, tuple[TypeAdapter[Any], JsonSchemaMode]] = {}

    def ref(self, schema: Schema, mode: JsonSchemaMode) -> dict[str, Any]:
        """A placeholder for `schema`, resolved by `resolve` once every schema is known."""
        if isinstance(schema, tuple):
            name, adapter = schema
            self._adapters[name] = (adapter, mode)
            return {"$ref": REF_TEMPLATE.format(model=name)}
        self._models[(schema, mode)] = None
        return {"__model__": (schema, mode)}

    def render(self) -> tuple[dict[tuple[type[BaseModel], JsonSchemaMode], Any], dict[str, Any]]:
        """Each model's schema (usually a $ref) and the components they refer to."""
        keys = list(self._models)
        refs, definitions = models_json_schema(
            keys, ref_template=REF_TEMPLATE, schema_generator=_Generator
        )
        components: dict[str, Any] = dict(definitions.get("$defs", {}))
        for name, (adapter, mode) in self._adapters.items():
            schema = adapter.json_schema(mode=mode, ref_template=REF_TEMPLATE,
                                         schema_generator=_Generator)
            components.update(schema.pop("$defs", {}))
            components[name] = schema
        return {key: refs[key] for key in keys}, components


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema 2020-12, which OpenAPI 3.1 takes as it is."""


def _resolve(value: Any, refs: Mapping[tuple[type[BaseModel], JsonSchemaMode], Any]) -> Any:
    """The document with every placeholder replaced by its model's schema."""
    if isinstance(value, dict):
        if "__model__" in value:
            return refs[value["__model__"]]
        return {k: _resolve(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, refs) for v in value]
    return value


def _parameters(op: Operation, path: str, schemas: _Schemas) -> list[dict[str, Any]]:
    """Path variables (from the route), query fields (from the query model), headers."""
    params: list[dict[str, Any]] = []
    for name in _path_variables(path):
        params.append({"name": name, "in": "path", "required": True,
                       "schema": _PATH_SCHEMAS.get(name, {"type": "string"})})
    if op.query is not None:
        query = op.query.model_json_schema(ref_template=REF_TEMPLATE, schema_generator=_Generator)
        required = set(query.get("required", ()))
        for name, schema in query.get("properties", {}).items():
            schema = _not_null(dict(schema))
            described = schema.pop("description", "")
            schema.pop("title", None)
            param = {"name": name, "in": "query", "required": name in required, "schema": schema}
            if described:
                param["description"] = described
            params.append(param)
    for header in op.headers:
        params.append({"name": header.name, "in": "header", "required": header.required,
                       "description": header.description, "schema": dict(header.schema)})
    return params


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query value is text, never null: an optional one is simply left out."""
    options = schema.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        schema.pop("anyOf")
        if schema.get("default", 0) is None:
            schema.pop("default")
        schema = (rest[0] | schema) if len(rest) == 1 else {"anyOf": rest} | schema
    return schema


# Path variables every route names the same way.
_PATH_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    "uuid": {"type": "string", "description": "the workflow's (agent's) uuid"},
}


def _path_variables(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/")
            if part.startswith("{") and part.endswith("}")]


def _answer(status: int, answer: Answer, schemas: _Schemas) -> dict[str, Any]:
    body: dict[str, Any] = {"description": answer.description}
    if answer.model is not None:
        body["content"] = {answer.media_type: {"schema": schemas.ref(answer.model, "serialization")}}
    elif answer.schema is not None:
        body["content"] = {answer.media_type: {"schema": dict(answer.schema)}}
    if answer.headers:
        body["headers"] = {
            h.name: {"description": h.description, "schema": dict(h.schema)} for h in answer.headers
        }
    return body


def _operation_object(
    op: Operation, method: str, path: str, name: str | None, schemas: _Schemas,
    common: Mapping[int, Answer],
) -> dict[str, Any]:
    body: dict[str, Any] = {"summary": op.summary}
    if op.description:
        body["description"] = op.description
    if name:
        body["operationId"] = name
    if op.tags:
        body["tags"] = list(op.tags)
    params = _parameters(op, path, schemas)
    if params:
        body["parameters"] = params
    if op.request is not None:
        media: dict[str, Any] = {"schema": schemas.ref(op.request, "validation")}
        if op.examples:
            media["examples"] = {f"example{n}": {"value": dict(example)}
                                 for n, example in enumerate(op.examples, 1)}
        body["requestBody"] = {"required": op.request_required,
                               "content": {"application/json": media}}
    answers = dict(op.responses)
    for status, answer in common.items():
        if status == 401 and not op.auth:
            continue
        if status in (408, 413) and op.request is None:
            continue
        answers.setdefault(status, answer)
    body["responses"] = {
        str(status): _answer(status, answer, schemas) for status, answer in sorted(answers.items())
    }
    body["security"] = [{SECURITY_SCHEME: []}] if op.auth else []
    return body


def build_document(
    app: web.Application, *, title: str, version: str, description: str,
    common: Mapping[int, Answer],
) -> dict[str, Any]:
    """The OpenAPI document of every described route of `app` under /api/ (`common`
    answers are added to every operation that can give them: 401 where a key is needed,
    408 and 413 where a body is read)."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if not isinstance(path, str) or not path.startswith(API_PREFIX) or route.method == "HEAD":
            continue
        op = operation_of(route.handler)
        if op is None:
            continue
        method = route.method.lower()
        paths.setdefault(path, {})[method] = _operation_object(
            op, method, path, route.name, schemas, common
        )
    refs, components = schemas.render()
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "paths": _resolve(paths, refs),
        "components": {
            "schemas": _resolve(components, refs),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http", "scheme": "bearer",
                    "description": "An API key (`python app.py create-api-key`) as "
                                   "`Authorization: Bearer <api key>`.",
                },
            },
        },
    }


def undescribed_routes(app: web.Application) -> list[str]:
    """Routes under /api/ neither described nor marked undocumented (a test keeps this empty)."""
    missing = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("formatter") or info.get("path")
        if not isinstance(path, str) or not path.startswith(API_PREFIX) or route.method == "HEAD":
            continue
        if operation_of(route.handler) is None and undocumented_reason(route.handler) is None:
            missing.append(f"{route.method} {path}")
    return missing


DocumentBuilder = Callable[[web.Application], dict[str, Any]]


def serve_document(builder: DocumentBuilder) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler answering the document `builder` makes of the app, built on the first
    request (every route is registered by then, and none changes while the app runs) and
    kept: one handler per app, as each app's `setup_routes` makes its own."""
    built: dict[str, bytes] = {}

    async def openapi_json(request: web.Request) -> web.Response:
        if "document" not in built:
            built["document"] = json.dumps(builder(request.app), ensure_ascii=False).encode()
        return web.Response(body=built["document"], content_type="application/json")

    return openapi_json
