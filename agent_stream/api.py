"""The JSON management API (contract section 3), scoped to the API key's organization."""
from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from . import api_schemas as schemas
from . import recordings, strict_json
from .api_schemas import Invalid, validated, validated_config
from .errors import (
    RETRY_AFTER_SECONDS,
    Conflict,
    DatabaseUnavailable,
    NotFound,
    RequestTooSlow,
    Stale,
)
from .keys import CALLS, RECORDINGS, SETTINGS, STORE
from .models import ConfigInput, Run, TelephonyConfig, User, Workflow
from .openapi import Answer, Header, Schema, build_document, operation, serve_document
from .providers import provider_named
from .providers.base import Provider
from .providers.configs import check_config, needs_no_configuration, save_config, secret_hints
from .recordings.serving import recording_response
from .security import redact_path
from .store import Store
from .workflow import merge_secrets, redact_secrets, starter_definition, validate_definition

log = logging.getLogger(__name__)

MAX_PAGE: Final = schemas.MAX_PAGE
DEFAULT_PAGE: Final = schemas.DEFAULT_PAGE
RUN_STATES: Final = schemas.RUN_STATES
# One entity tag of an If-Match list (RFC 9110 8.8.3): optional W/, then a quoted opaque tag.
_ENTITY_TAG: Final = re.compile(r'(W/)?"([^"\x00-\x20\x7f]*)"')
ANY_TAG: Final = frozenset({"*"})

# Headers of an aiohttp HTTP error that its JSON answer keeps.
_KEPT_HEADERS: Final = frozenset({"Allow", "Retry-After"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# What a 400 lists: a definition's problems as sentences, a configuration's by field.
Problems = list[str] | list[dict[str, str]]


class ApiError(Exception):
    """Bad input: answered with `status` and a JSON error, never a 500."""

    def __init__(self, status: int, message: str, problems: Problems | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems


def _error(
    status: int,
    message: str,
    problems: Problems | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if problems:
        body["problems"] = problems
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors to 4xx JSON; an unexpected error is logged once and answered 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.message, exc.problems)
    except Invalid as exc:
        return _error(400, exc.message, exc.problems)
    except NotFound as exc:
        return _error(404, str(exc))
    except Conflict as exc:
        return _error(409, str(exc))
    except RequestTooSlow as exc:
        return _error(408, str(exc))
    except DatabaseUnavailable as exc:
        if not request.path.startswith("/api/"):
            raise
        log.warning("%s %s: %s", request.method, redact_path(request.path, request.match_info), exc)
        return _error(503, str(exc), headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        kept = {k: v for k, v in exc.headers.items() if k in _KEPT_HEADERS}  # 405's Allow
        return _error(exc.status, exc.reason, headers=kept)
    except Exception:
        path = redact_path(request.path, request.match_info)
        log.exception("unhandled error on %s %s", request.method, path)
        return _error(500, "internal server error")


# -- helpers -------------------------------------------------------------------------------


async def api_user(request: web.Request) -> User:
    """The user behind `Authorization: Bearer <api key>`, or 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <api key>'")
    user = await request.app[STORE].user_for_api_key(key.strip())
    if user is None:
        raise ApiError(401, "invalid or revoked API key")
    return user


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json(loads=strict_json.loads)
    except (ValueError, RecursionError, LookupError):  # bad JSON, too deep, unknown charset
        raise ApiError(400, "request body must be JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    if strict_json.unpaired_surrogate(body):
        raise ApiError(400, "request body has an unpaired surrogate (\\uD800-\\uDFFF)")
    return body


def _definition(definition: Any) -> dict[str, Any] | None:
    """A definition given in a body, once its graph holds together (every problem listed)."""
    if definition is None:
        return None
    problems = validate_definition(definition)
    if problems:
        raise ApiError(400, _invalid_definition(problems), problems)
    return definition  # type: ignore[no-any-return]


def _invalid_definition(problems: list[str]) -> str:
    """The 400's sentence: the first problem, and how many more `problems` lists."""
    more = f" (and {len(problems) - 1} more: see problems)" if len(problems) > 1 else ""
    return f"invalid workflow definition: {problems[0]}{more}"


def etag(revision: int) -> str:
    """A resource's strong ETag: its revision, which every edit bumps (If-Match compares
    strongly, so a weak tag could never match)."""
    return f'"{revision}"'


def one_resource(body: dict[str, Any], revision: int, *, status: int = 200) -> web.Response:
    """The answer about one editable resource, with the ETag an edit sends back in If-Match."""
    return web.json_response(body, status=status, headers={"ETag": etag(revision)})


def _if_match(request: web.Request) -> frozenset[str] | None:
    """If-Match's strong entity tags (None without the header, ANY_TAG for `*`); weak ones
    never match (strong comparison) and are dropped; anything else is a 400."""
    headers = request.headers.getall("If-Match", [])
    if not headers:
        return None
    value = ", ".join(headers).strip()
    if value == "*":
        return ANY_TAG
    tags: set[str] = set()
    position = 0
    while position < len(value):
        if value[position] in " \t,":  # empty list elements are allowed
            position += 1
            continue
        match = _ENTITY_TAG.match(value, position)
        end = match.end() if match else position
        rest = value[end:].lstrip(" \t")
        if match is None or (rest and not rest.startswith(",")):
            raise ApiError(400, 'If-Match must be * or entity tags such as "3" (the ETag you read)')
        if not match.group(1):
            tags.add(match.group(2))
        position = end
    return frozenset(tags)


@dataclass(frozen=True)
class EditCheck:
    """What an edit says it was made from: If-Match's entity tags (a mismatch is 412) and
    the body's "revision" (a mismatch is 409). Neither: the edit applies as it always did."""

    tags: frozenset[str] | None
    body_revision: int | None

    def expected(self, current: int, what: str) -> int | None:
        """The revision the store compares and sets against, or a 412 right away when
        If-Match names another one than `current`."""
        if self.tags is not None and self.tags != ANY_TAG and str(current) not in self.tags:
            raise ApiError(
                412, f'{what} was changed since the ETag you sent in If-Match (it is now '
                     f'{etag(current)}): read it again and make the change again'
            )
        if self.body_revision is not None:
            return self.body_revision
        return current if self.tags is not None and self.tags != ANY_TAG else None

    def refused(self, exc: Stale) -> ApiError:
        """The store refused the edit as stale: 409 for the body's revision, 412 for an
        If-Match that matched when it was read (the resource changed in between)."""
        return ApiError(409 if self.body_revision is not None else 412, str(exc))


def edit_check(request: web.Request, revision: int | None) -> EditCheck:
    """If-Match (checked for form here) and the body's "revision" (by its schema)."""
    return EditCheck(_if_match(request), revision)


async def delete_unless_changed(
    request: web.Request,
    current_revision: Callable[[], Awaitable[int]],
    delete: Callable[[int | None], Awaitable[None]],
    what: str,
) -> web.Response:
    """204 once `delete` ran; with If-Match, only if `what` is still at the revision the
    caller read (412 otherwise, also when someone changes it in between)."""
    check = edit_check(request, None)
    revision = None
    if check.tags is not None:
        revision = check.expected(await current_revision(), what)
    try:
        await delete(revision)
    except Stale as exc:
        raise check.refused(exc) from None
    return web.Response(status=204)


def _id(request: web.Request, key: str) -> int:
    """A row id from the path; anything else is simply not found."""
    value = schemas.row_id(request.match_info[key])
    if value is None:
        raise NotFound("not found")
    return value


# -- JSON shapes ---------------------------------------------------------------------------


def workflow_json(workflow: Workflow) -> dict[str, Any]:
    return {
        "uuid": workflow.uuid,
        "name": workflow.name,
        "status": workflow.status,
        "version": workflow.version,
        "published_version": workflow.published_version,
        "definition": redact_secrets(workflow.definition),  # no LLM API key in clear
        "created_at": workflow.created_at,
        "updated_at": workflow.updated_at,
        "revision": workflow.revision,
    }


def telephony_json(config: TelephonyConfig) -> dict[str, Any]:
    """A configuration's fields; its secrets never: only whether each is set and its hint."""
    provider = provider_named(config.provider)
    body: dict[str, Any] = {"id": config.id, "provider": config.provider, "name": config.name}
    if provider is not None:
        for spec in provider.fields:
            if not spec.secret:
                body[spec.name] = config.fields.get(spec.name) or None
        body |= secret_hints(provider, config)
    body |= {
        "from_numbers": config.from_numbers,
        "created_at": config.created_at,
        "updated_at": config.updated_at,
        "revision": config.revision,
    }
    return body


def run_json(run: Run, *, transcript: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": run.id,
        "name": run.name,
        "workflow_uuid": run.workflow_uuid,
        "call_type": run.call_type,
        "mode": run.mode,
        "state": run.state,
        "initial_context": run.initial_context,
        "gathered_context": run.gathered_context,
        "logs": run.logs,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "duration_seconds": run.duration_seconds,
        "end_reason": run.end_reason,
        "close_code": run.close_code,
        "error": run.error,
        "instance_id": run.instance_id,
        "has_recording": recordings.listed(run.recording_path),
    }
    if transcript:
        body["transcript"] = [
            {"role": t.role, "text": t.text, "start_ms": t.start_ms, "end_ms": t.end_ms,
             "interrupted": t.interrupted}
            for t in run.transcript
        ]
    return body


# -- what the operations answer (openapi.py describes each handler from these) ---------------

_ERROR: Final = schemas.Error
_ETAG: Final = Header("ETag", 'The revision as a strong entity tag ("3"): send it back in '
                              "If-Match to edit only what you read.")
# What _if_match takes: *, or a comma-separated list of entity tags (empty elements, and so an
# empty list that matches nothing, allowed as RFC 9110 5.6.1 says).
_ONE_TAG: Final = r'[ \t]*((W/)?"[^"\x00-\x20\x7f]*")?[ \t]*'
_IF_MATCH_PATTERN: Final = rf"^([ \t]*\*[ \t]*|{_ONE_TAG}(,{_ONE_TAG})*)$"
IF_MATCH: Final = Header(
    "If-Match", 'The ETag you read ("3"), a list of them, or *: the edit is refused with 412 '
                "when the resource changed since. A weak tag never matches.",
    {"type": "string", "pattern": _IF_MATCH_PATTERN})
_RETRY_AFTER: Final = Header("Retry-After", "Seconds to wait before trying again.",
                             {"type": "string", "pattern": "^[0-9]+$"})
COMMON_ANSWERS: Final = {
    401: Answer("Missing, invalid or revoked API key.", _ERROR),
    408: Answer("The request body did not arrive in time.", _ERROR),
    413: Answer("The request body is larger than 1 MiB.", _ERROR),
    503: Answer("The database does not answer right now; try again.", _ERROR,
                headers=(_RETRY_AFTER,)),
}
BAD_REQUEST: Final = Answer("The body, query or a header is malformed: `error` says which field and "
                     "what is wrong, `problems` lists every problem.", _ERROR)
MISSING: Final = Answer("Not found in the caller's organization.", _ERROR)
STALE_BODY: Final = Answer("`revision` is not the current one (or a uniqueness rule).", _ERROR)
STALE_TAG: Final = Answer("If-Match names another revision than the current one.", _ERROR)


def one_answer(description: str, model: Schema) -> Answer:
    return Answer(description, model, headers=(_ETAG,))


_WORKFLOW: Final = schemas.Workflow
_CONFIG: Final = ("TelephonyConfiguration", schemas.CONFIG_ANSWER)
_WORKFLOWS: Final = ("Workflows",)
_TELEPHONY: Final = ("Telephony configurations",)
_RUNS: Final = ("Runs",)
_SERVICE: Final = ("Service",)


# -- handlers ------------------------------------------------------------------------------


@operation("Liveness", auth=False, tags=_SERVICE,
           responses={200: Answer("The process runs.", schemas.Health)})
async def health(request: web.Request) -> web.Response:
    """Up, and which process answered: with `--workers` the port is several processes."""
    return web.json_response({"status": "ok", "instance": request.app[SETTINGS].instance_id})


@operation(
    "Readiness for a load balancer", auth=False, tags=_SERVICE,
    responses={
        200: Answer("The database answers and the process takes new calls.", schemas.Ready),
        503: Answer("Draining for a shutdown, or the database does not answer.",
                    schemas.NotReady, headers=(_RETRY_AFTER,)),
    },
)
async def ready(request: web.Request) -> web.Response:
    """Whether a load balancer should send this process new calls: not while it drains for
    a shutdown, nor while its database does not answer (it recovers by itself)."""
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if not request.app[CALLS].accepting:
        return web.json_response({"status": "draining", "error": "the server is shutting down"},
                                 status=503, headers=retry)
    try:
        await request.app[STORE].check_ready()
    except DatabaseUnavailable as exc:
        return web.json_response({"status": "unavailable", "error": str(exc)}, status=503,
                                 headers=retry)
    return web.json_response({"status": "ready"})


@operation(
    "Create a workflow (agent)", request=schemas.WorkflowCreate, tags=_WORKFLOWS,
    responses={201: one_answer("Created, with its uuid.", _WORKFLOW), 400: BAD_REQUEST},
)
async def create_workflow(request: web.Request) -> web.Response:
    user = await api_user(request)
    body = validated(schemas.WorkflowCreate, await json_body(request))
    definition = _definition(body.definition)
    definition = merge_secrets(definition, None) if definition else starter_definition()
    workflow = await request.app[STORE].create_workflow(
        organization_id=user.organization_id, owner_user_id=user.id, name=body.name,
        definition=definition,
    )
    return one_resource(workflow_json(workflow), workflow.revision, status=201)


@operation("List the organization's workflows", tags=_WORKFLOWS,
           responses={200: Answer("Newest first.", schemas.WorkflowList)})
async def list_workflows(request: web.Request) -> web.Response:
    user = await api_user(request)
    workflows = await request.app[STORE].list_workflows(user.organization_id)
    return web.json_response({"workflows": [workflow_json(w) for w in workflows]})


@operation("Read a workflow", tags=_WORKFLOWS,
           responses={200: one_answer("The workflow.", _WORKFLOW), 404: MISSING})
async def get_workflow(request: web.Request) -> web.Response:
    user = await api_user(request)
    workflow = await request.app[STORE].get_workflow(
        user.organization_id, request.match_info["uuid"]
    )
    return one_resource(workflow_json(workflow), workflow.revision)


@operation(
    "Edit a workflow", request=schemas.WorkflowPatch, headers=(IF_MATCH,), tags=_WORKFLOWS,
    responses={200: one_answer("The edited workflow.", _WORKFLOW), 400: BAD_REQUEST, 404: MISSING,
               409: STALE_BODY, 412: STALE_TAG},
)
async def patch_workflow(request: web.Request) -> web.Response:
    """Edit; with If-Match or "revision", only if nobody changed it since it was read."""
    user = await api_user(request)
    body = validated(schemas.WorkflowPatch, await json_body(request))
    check = edit_check(request, body.revision)
    store: Store = request.app[STORE]
    definition = _definition(body.definition)
    current = await store.get_workflow(user.organization_id, request.match_info["uuid"])
    revision = check.expected(current.revision, "the workflow")
    if definition is not None:  # a missing or masked LLM API key keeps the stored one
        definition = merge_secrets(definition, current.definition)
    try:
        workflow = await store.update_workflow(
            user.organization_id, current.uuid, name=body.name, definition=definition,
            status=body.status, revision=revision,
        )
    except Stale as exc:
        raise check.refused(exc) from None
    return one_resource(workflow_json(workflow), workflow.revision)


@operation(
    "Publish the latest version", request=schemas.PublishBody, request_required=False,
    headers=(IF_MATCH,), tags=_WORKFLOWS,
    responses={200: one_answer("Published (the uuid never changes).", _WORKFLOW), 400: BAD_REQUEST,
               404: MISSING, 409: Answer("Archived, or `revision` is not the current one.",
                                          _ERROR),
               412: STALE_TAG},
)
async def publish_workflow(request: web.Request) -> web.Response:
    """Publish the latest version; a body is optional (only its "revision" is read)."""
    user = await api_user(request)
    body = validated(schemas.PublishBody, await json_body(request) if request.body_exists else {})
    check = edit_check(request, body.revision)
    store: Store = request.app[STORE]
    current = await store.get_workflow(user.organization_id, request.match_info["uuid"])
    revision = check.expected(current.revision, "the workflow")
    if current.status == "archived":
        raise ApiError(409, "an archived workflow cannot be published; set status to draft first")
    problems = validate_definition(current.definition)
    if problems:
        raise ApiError(400, _invalid_definition(problems), problems)
    try:
        workflow = await store.publish_workflow(
            user.organization_id, current.uuid, revision=revision
        )
    except Stale as exc:
        raise check.refused(exc) from None
    return one_resource(workflow_json(workflow), workflow.revision)


def _checked_config(
    provider: Provider, body: dict[str, Any], *, creating: bool
) -> ConfigInput:
    """The body as a configuration of `provider`, or a 400 naming every problem."""
    given, problems = check_config(provider, body, creating=creating, blank_keeps_secret=False)
    if problems:
        first = problems[0]
        raise ApiError(
            400, f"'{first.field}': {first.message}",
            [{"field": p.field, "message": p.message} for p in problems],
        )
    return given


@operation(
    "Store a provider account", tags=_TELEPHONY,
    request=("TelephonyConfigurationCreate", schemas.CONFIG_CREATE),
    examples=schemas.CONFIG_EXAMPLES,
    description="The fields are the provider's (contract section 7), chosen by `provider`. "
                "Secrets are never answered: only `has_{field}` and `{field}_hint`.",
    responses={201: one_answer("Stored.", _CONFIG), 400: BAD_REQUEST,
               409: Answer("The organization already has a configuration of this account.",
                           _ERROR)},
)
async def create_telephony(request: web.Request) -> web.Response:
    user = await api_user(request)
    body = await json_body(request)
    named = body.get("provider")
    provider = provider_named(named) if isinstance(named, str) else None
    if provider is not None and (refusal := needs_no_configuration(provider)) is not None:
        raise ApiError(400, refusal)
    provider = provider_named(validated_config(body).provider)
    assert provider is not None  # the schema names only configurable providers
    given = _checked_config(provider, body, creating=True)
    config = await save_config(request.app[STORE], provider, user.organization_id, given)
    return one_resource(telephony_json(config), config.revision, status=201)


@operation("List the organization's telephony configurations", tags=_TELEPHONY,
           responses={200: Answer("Every configuration, secrets only as hints.",
                                  schemas.TelephonyConfigurationList)})
async def list_telephony(request: web.Request) -> web.Response:
    user = await api_user(request)
    configs = await request.app[STORE].list_telephony_configs(user.organization_id)
    return web.json_response({"telephony_configurations": [telephony_json(c) for c in configs]})


@operation("Read a telephony configuration", tags=_TELEPHONY,
           responses={200: one_answer("The configuration.", _CONFIG), 404: MISSING})
async def get_telephony(request: web.Request) -> web.Response:
    user = await api_user(request)
    config = await request.app[STORE].get_telephony_config(user.organization_id, _id(request, "id"))
    return one_resource(telephony_json(config), config.revision)


@operation(
    "Edit a telephony configuration", tags=_TELEPHONY,
    request=("TelephonyConfigurationPatch", schemas.CONFIG_PATCH), headers=(IF_MATCH,),
    description="The fields of the configuration's provider; a secret left out is kept, an "
                "optional field sent empty is cleared. `provider` cannot change.",
    responses={200: one_answer("The edited configuration.", _CONFIG), 400: BAD_REQUEST,
               404: MISSING, 409: STALE_BODY, 412: STALE_TAG},
)
async def patch_telephony(request: web.Request) -> web.Response:
    """Edit; with If-Match or "revision", only if nobody changed it since it was read."""
    user = await api_user(request)
    body = await json_body(request)
    if "provider" in body:
        raise ApiError(400, "'provider' cannot be changed; create a new configuration")
    tags = _if_match(request)
    store: Store = request.app[STORE]
    current = await store.get_telephony_config(user.organization_id, _id(request, "id"))
    provider = provider_named(current.provider)
    if provider is None or current.provider not in schemas.PATCH_MODELS:
        raise ApiError(409, f"provider {current.provider!r} is no longer supported")
    check = EditCheck(tags, validated(schemas.PATCH_MODELS[current.provider], body).revision)
    revision = check.expected(current.revision, "the telephony configuration")
    given = _checked_config(provider, body, creating=False)
    try:
        config = await save_config(
            store, provider, user.organization_id, given, config_id=current.id, revision=revision
        )
    except Stale as exc:
        raise check.refused(exc) from None
    return one_resource(telephony_json(config), config.revision)


@operation(
    "Delete a telephony configuration", headers=(IF_MATCH,), tags=_TELEPHONY,
    responses={204: Answer("Deleted."), 400: BAD_REQUEST, 404: MISSING, 412: STALE_TAG},
)
async def delete_telephony(request: web.Request) -> web.Response:
    """Delete; with If-Match, only if nobody changed it since it was read."""
    user = await api_user(request)
    store: Store = request.app[STORE]
    config_id = _id(request, "id")

    async def current_revision() -> int:
        return (await store.get_telephony_config(user.organization_id, config_id)).revision

    async def delete(revision: int | None) -> None:
        await store.delete_telephony_config(user.organization_id, config_id, revision=revision)

    return await delete_unless_changed(request, current_revision, delete,
                                       "the telephony configuration")


@operation(
    "List runs (calls)", query=schemas.RunsQuery, tags=_RUNS,
    responses={200: Answer("A page of runs, newest first, without transcripts.", schemas.RunList),
               400: BAD_REQUEST, 404: Answer("`workflow_uuid` is not the organization's.", _ERROR)},
)
async def list_runs(request: web.Request) -> web.Response:
    user = await api_user(request)
    query = validated(schemas.RunsQuery, {k: request.query[k] for k in request.query}, strict=False)
    store: Store = request.app[STORE]
    if query.workflow_uuid:  # 404 across organizations
        await store.get_workflow(user.organization_id, query.workflow_uuid)
    runs, total = await store.list_runs(
        user.organization_id, workflow_uuid=query.workflow_uuid or None, state=query.state,
        limit=query.limit, offset=query.offset,
    )
    return web.json_response({
        "runs": [run_json(r, transcript=False) for r in runs],
        "total": total,
        "limit": query.limit,
        "offset": query.offset,
    })


@operation("Read a run", tags=_RUNS,
           responses={200: Answer("The run with its transcript.", schemas.Run), 404: MISSING})
async def get_run(request: web.Request) -> web.Response:
    user = await api_user(request)
    run = await request.app[STORE].get_run(user.organization_id, _id(request, "id"))
    return web.json_response(run_json(run))


_WAV: Final = {"type": "string", "contentMediaType": "audio/wav"}


@operation(
    "A run's recording", tags=_RUNS,
    description="Stereo WAV: the caller left, the agent right. Range requests are answered.",
    headers=(Header("Range", "One byte range (players seek)."),),
    responses={
        200: Answer("The WAV.", media_type="audio/wav", schema=_WAV),
        206: Answer("The byte range asked for.", media_type="audio/wav", schema=_WAV,
                    headers=(Header("Content-Range", "Which bytes of how many."),)),
        404: Answer("No such run, or it has no recording.", _ERROR),
        416: Answer("The range asked for is outside the recording.",
                    headers=(Header("Content-Range", "bytes */SIZE"),)),
    },
)
async def get_run_recording(request: web.Request) -> web.StreamResponse:
    """The WAV of a run, from the recordings store (range requests answered for players)."""
    user = await api_user(request)
    run = await request.app[STORE].get_run(user.organization_id, _id(request, "id"))
    return await recording_response(request, request.app[RECORDINGS], run.recording_path)


@operation("Refused stream connections (1008)", tags=_RUNS,
           responses={200: Answer("The organization's latest, newest first.",
                                  schemas.RejectionList)})
async def list_rejections(request: web.Request) -> web.Response:
    """Stream connections refused with 1008 for this organization's agents."""
    user = await api_user(request)
    rejections = await request.app[STORE].list_rejections(organization_id=user.organization_id)
    return web.json_response({
        "rejections": [
            {"created_at": r.created_at, "provider": r.provider, "agent": r.agent_uuid_short,
             "code": r.code, "reason": r.reason}
            for r in rejections
        ]
    })


def api_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of every described route of `app`."""
    return build_document(
        app, title="Agent Stream management API", version="1",
        description="Agents (workflows), telephony configurations, runs and their recordings, "
                    "refused streams, and webhooks with their deliveries, scoped to the API "
                    "key's organization. Errors are JSON `{\"error\": ...}`.",
        common=COMMON_ANSWERS,
    )


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/health", health, name="health")
    r.add_get("/api/v1/ready", ready, name="ready")
    r.add_get("/api/v1/openapi.json", operation(
        "This document (OpenAPI 3.1)", auth=False, tags=_SERVICE,
        responses={200: Answer("The OpenAPI document.", schema={"type": "object"})},
    )(serve_document(api_document)), name="api_openapi")
    r.add_post("/api/v1/workflows", create_workflow, name="api_workflows_create")
    r.add_get("/api/v1/workflows", list_workflows, name="api_workflows")
    r.add_get("/api/v1/workflows/{uuid}", get_workflow, name="api_workflow")
    r.add_patch("/api/v1/workflows/{uuid}", patch_workflow, name="api_workflow_patch")
    r.add_post("/api/v1/workflows/{uuid}/publish", publish_workflow, name="api_workflow_publish")
    r.add_post("/api/v1/telephony-configurations", create_telephony, name="api_telephony_create")
    r.add_get("/api/v1/telephony-configurations", list_telephony, name="api_telephony")
    r.add_get("/api/v1/telephony-configurations/{id}", get_telephony, name="api_telephony_one")
    r.add_patch("/api/v1/telephony-configurations/{id}", patch_telephony, name="api_telephony_patch")
    r.add_delete("/api/v1/telephony-configurations/{id}", delete_telephony, name="api_telephony_delete")
    r.add_get("/api/v1/workflow-runs", list_runs, name="api_runs")
    r.add_get("/api/v1/workflow-runs/{id}", get_run, name="api_run")
    r.add_get("/api/v1/workflow-runs/{id}/recording", get_run_recording, name="api_run_recording")
    r.add_get("/api/v1/stream-rejections", list_rejections, name="api_rejections")
    from .webhooks import api as webhooks_api  # here: it imports this module's helpers

    webhooks_api.add_routes(r)
