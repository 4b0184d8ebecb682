"""The management API's request and response schemas, once: pydantic models that validate
each request body and query, and that the OpenAPI document (`openapi.py`) is generated from.

A telephony configuration's body is one model per provider, built from the provider's own
field declarations (`Provider.fields`), chosen by `provider`. A workflow definition's shape
is described here; its graph (unknown node ids, reachability, ...) is checked by
`workflow.validate_definition`, which lists every problem at once.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Final, Literal, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    TypeAdapter,
    ValidationError,
    create_model,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from . import strict_json
from .plain_text import CONTROL_CHARACTERS
from .providers import ALIASES, PROVIDERS
from .providers.base import ConfigField, Provider
from .providers.configs import check_config
from .webhooks.checks import (
    DEFAULT_DELIVERIES,
    MAX_DELIVERIES,
    MAX_SECRET_CHARS,
    MAX_URL_CHARS,
    MIN_SECRET_CHARS,
)
from .webhooks.checks import EVENTS as WEBHOOK_EVENTS
from .workflow import (
    DTMF_DIGITS,
    ENGINES,
    NODE_KINDS,
    STARTER_DEFINITION,
    STT_PROVIDERS,
    TTS_PROVIDERS,
)

MAX_TEXT: Final = 200  # a workflow's name
MAX_ROW_ID: Final = 2**63 - 1  # what SQLite and PostgreSQL's bigint hold
MAX_PAGE: Final = 200
DEFAULT_PAGE: Final = 50
MAX_OFFSET: Final = 10**9
RUN_STATES: Final = ("pending", "running", "completed", "failed")
WORKFLOW_STATUSES: Final = ("draft", "published", "archived")
# A configuration's phone numbers (the same rule as providers/configs.py).
NUMBER_PATTERN: Final = r"^\s*\+?[0-9*#]{2,20}\s*$"
# One line of text: no control characters (a NUL is no text PostgreSQL stores), not blank.
_LINE_PATTERN: Final = (
    rf"^[^{CONTROL_CHARACTERS}]*[^\s{CONTROL_CHARACTERS}][^{CONTROL_CHARACTERS}]*$"
)
NAME_MESSAGE: Final = "must be one line of text, not blank"


def row_id(raw: str) -> int | None:
    """A row id as a URL path carries it (ASCII digits, `strict_json.whole_number`) within
    what the databases hold, or None."""
    value = strict_json.whole_number(raw, max_digits=19)
    return value if value is not None and 0 < value <= MAX_ROW_ID else None


# -- validation and its messages -----------------------------------------------------------------


class Body(BaseModel):
    """A JSON body: types are checked as sent (no "1" for 1); unknown keys are ignored."""

    model_config = ConfigDict(strict=True)
    # What to say when a field is wrong, instead of the generic message (by field name).
    messages: ClassVar[Mapping[str, str]] = {"name": NAME_MESSAGE}


M = TypeVar("M", bound=BaseModel)


class Invalid(Exception):
    """A body or query its schema refuses: the first problem, and all of them by field."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        first = problems[0]
        super().__init__(f"'{first['field']}': {first['message']}" if first["field"]
                         else first["message"])
        self.message = str(self)
        self.problems = problems


def validated(model: type[M], data: Mapping[str, Any], *, strict: bool = True) -> M:
    """`data` as `model`, or Invalid naming each field that is wrong and what is wrong."""
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise Invalid(_problems(exc, model.messages if issubclass(model, Body) else {})) from None


def validated_config(data: Mapping[str, Any]) -> ConfigBody:
    """A new telephony configuration's body, as the model of the provider it names."""
    try:
        found: ConfigBody = CONFIG_CREATE.validate_python(data, strict=True)
        return found
    except ValidationError as exc:
        tag = data.get("provider")
        model = CREATE_MODELS.get(tag) if isinstance(tag, str) else None
        raise Invalid(_problems(exc, model.messages if model else {}, tagged=True)) from None


def _problems(
    exc: ValidationError, messages: Mapping[str, str], *, tagged: bool = False
) -> list[dict[str, str]]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = error["loc"][1:] if tagged and error["loc"] else error["loc"]
        field = _field_path(loc) or ("provider" if tagged else "")
        problems.append({"field": field, "message": _message(error, messages, loc)})
    return problems


def _field_path(loc: tuple[int | str, ...]) -> str:
    """("from_numbers", 0) as "from_numbers[0]"."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def configurable_providers() -> list[str]:
    """The provider names (and aliases) a configuration may name."""
    return sorted(n for n, p in (PROVIDERS | ALIASES).items() if p.needs_configuration)


# Errors a field's own message does not replace: what is wrong is plain already.
_GENERIC_KINDS: Final = frozenset({"string_type", "string_too_long", "list_type"})


def _message(error: ErrorDetails, messages: Mapping[str, str], loc: tuple[int | str, ...]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    name = loc[0] if loc else ""
    if kind == "missing":
        return "is required"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"provider must be one of: {', '.join(configurable_providers())}"
    if isinstance(name, str) and name in messages and kind not in _GENERIC_KINDS:
        return messages[name]
    generic = {
        "string_type": "must be text (a JSON string)",
        "int_type": "must be an integer",
        "int_parsing": "must be an integer",
        "bool_type": "must be true or false",
        "list_type": "must be a list",
        "dict_type": "must be a JSON object",
        "model_type": "must be a JSON object",
        "model_attributes_type": "must be a JSON object",
        "none_required": "must be null",
    }
    if kind in generic:
        return generic[kind]
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return {"greater_than_equal": f"must be at least {ctx.get('ge')}",
                "less_than_equal": f"must be at most {ctx.get('le')}",
                "greater_than": f"must be more than {ctx.get('gt')}",
                "less_than": f"must be less than {ctx.get('lt')}"}[kind]
    if kind in ("literal_error", "enum"):
        return f"must be one of: {ctx.get('expected')}"
    return str(error["msg"])


def _not_blank(value: str) -> str:
    """Stripped; blank (Python's idea of space, which a schema pattern cannot quite say) is
    refused."""
    stripped = value.strip()
    if not stripped:
        raise PydanticCustomError("blank", "must not be blank")
    return stripped


# -- common pieces -------------------------------------------------------------------------------

Name = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT, pattern=_LINE_PATTERN,
          description="One line of text, not blank (stored stripped)."),
    AfterValidator(_not_blank),
]
# One line, perhaps empty: no control character (an id, a model, a key, an address).
OneLine = Annotated[str, Field(pattern=rf"^[^{CONTROL_CHARACTERS}]*$")]
Revision = Annotated[
    int,
    Field(ge=1, le=MAX_ROW_ID,
          description="The revision the edit was made from (the `revision` you read): a "
                      "stale one is refused with 409."),
]
REVISION_MESSAGE: Final = "must be a positive integer (the revision you read)"


class FieldProblem(BaseModel):
    """What is wrong with one field of a body."""

    field: str
    message: str


class Error(BaseModel):
    """Every 4xx (and 5xx) answer: what is wrong, and for a body each problem."""

    error: str = Field(description="What is wrong, in one sentence.")
    problems: list[str] | list[FieldProblem] | None = Field(
        None, description="Every problem: a definition's as sentences, a body's by field."
    )


# -- workflow definitions (contract section 6) ---------------------------------------------------


class Node(BaseModel):
    """A node of the workflow graph."""

    id: OneLine = Field(min_length=1)
    kind: Literal[NODE_KINDS]  # type: ignore[valid-type]
    say: str | None = Field(None, description="Spoken verbatim; {{caller_number}} and other "
                                              "context keys are substituted.")
    prompt: str | None = Field(None, description="What drives the LLM engine at this node.")
    destination: OneLine | None = Field(None, description="Where a transfer node transfers "
                                                      "(required for kind transfer).")
    interruptible: bool | None = None


class Edge(BaseModel):
    """An edge: taken on one of its phrases, its DTMF digit or (LLM) its condition."""

    model_config = ConfigDict(populate_by_name=True)

    from_: OneLine = Field(alias="from", description="A node id.")
    to: OneLine = Field(description="A node id.")
    phrases: list[str] = Field(default_factory=list)
    dtmf: Literal[tuple(sorted(DTMF_DIGITS))] | None = None  # type: ignore[valid-type]
    condition: str | None = None
    fallback: bool | None = Field(None, description="Taken after one unanswered re-prompt.")


class LLMSettings(BaseModel):
    """An OpenAI-compatible chat endpoint; `api_key` is answered only as `api_key_hint`."""

    base_url: OneLine | None = Field(None, description="An http(s) URL without credentials.")
    model: OneLine | None = None
    api_key: OneLine | None = Field(None, json_schema_extra={"writeOnly": True})


def _optional(kind: Any) -> Any:
    """`kind | None` of a type made at run time."""
    return kind | None


def _tagged(models: Any) -> Any:
    """One of `models`, told apart by their `provider`."""
    return Annotated[Union[tuple(models)], Field(discriminator="provider")]  # noqa: UP007


def _speech_settings(section: str, providers: tuple[str, ...]) -> Any:
    model = create_model(
        f"{section.upper()}Settings",
        __doc__=f"A {section.upper()} provider; `api_key` is answered only as `api_key_hint`.",
        provider=(_optional(Literal[providers]), None),
        base_url=(OneLine | None, Field(None, description="An http(s) URL without credentials.")),
        model=(OneLine | None, None),
        voice=(OneLine | None, None),
        api_key=(OneLine | None, Field(None, json_schema_extra={"writeOnly": True})),
    )
    return Annotated[
        model | str | None,
        Field(description="An object, or just a provider's name (case and spaces ignored)."),
    ]


STT = _speech_settings("stt", STT_PROVIDERS)
TTS = _speech_settings("tts", TTS_PROVIDERS)


class WorkflowSettings(BaseModel):
    """How the agent sounds and which engine and vendors it uses."""

    language: OneLine | None = None
    voice: OneLine | None = None
    max_duration_seconds: float | None = Field(default=None, gt=0)
    silence_timeout_seconds: float | None = Field(default=None, gt=0)
    engine: Literal[ENGINES] | None = None  # type: ignore[valid-type]
    llm: LLMSettings | None = None
    stt: STT = None  # type: ignore[valid-type]
    tts: TTS = None  # type: ignore[valid-type]


class Definition(BaseModel):
    """A workflow definition (contract section 6). Saving one checks its graph too: every
    problem is answered at once in `problems`."""

    version: int | None = None
    global_prompt: str | None = None
    settings: WorkflowSettings = Field(default_factory=lambda: WorkflowSettings())
    nodes: list[Node] = Field(min_length=1, description="Exactly one of kind start.")
    edges: list[Edge] = Field(default_factory=list)


# Validated by workflow.validate_definition (every problem at once), described by the model.
DefinitionField = Annotated[Definition | None, SkipValidation]


# -- workflows -----------------------------------------------------------------------------------


class WorkflowCreate(Body):
    """A new workflow (agent); without a definition it gets the starter agent."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "Front desk"}, {"name": "Front desk", "definition": STARTER_DEFINITION},
    ]})

    name: Name
    definition: DefinitionField = None


class WorkflowPatch(Body):
    """An edit: what is given changes. A new definition is a new version."""

    messages = {"status": "can be set to draft or archived; use /publish to publish",
                "revision": REVISION_MESSAGE, "name": NAME_MESSAGE}

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "Night shift"}, {"status": "archived"}, {"status": "draft"},
    ]})

    name: Name | None = None
    definition: DefinitionField = None
    status: Literal["draft", "archived"] | None = None
    revision: Revision | None = None


class PublishBody(Body):
    """Publishing takes no body; one may carry the revision the publish was decided on."""

    messages = {"revision": REVISION_MESSAGE}

    revision: Revision | None = None


class Workflow(BaseModel):
    """A workflow (agent); its uuid never changes. LLM and speech keys only as hints."""

    uuid: str
    name: str
    status: Literal[WORKFLOW_STATUSES]  # type: ignore[valid-type]
    version: int = Field(description="The latest definition's version.")
    published_version: int | None
    definition: Definition
    created_at: str
    updated_at: str
    revision: int


class WorkflowList(BaseModel):
    workflows: list[Workflow]


# -- telephony configurations (contract section 7) -----------------------------------------------


# A configuration's name: one line (empty or left out: named after the account).
ConfigName = OneLine


class ConfigBody(Body):
    """A telephony configuration's body (one model per provider)."""

    provider: str
    name: ConfigName | None = Field(None, description="Defaults to the account id, or the "
                                                      "provider (at most 120 characters kept).")
    from_numbers: list[Annotated[str, Field(pattern=NUMBER_PATTERN)]] | None = Field(
        None, description="Numbers of this account (digits, optional leading +): a call to one "
                          "of them selects this configuration."
    )


class ConfigPatchBody(Body):
    """An edit of a configuration: a secret left out is kept; an optional field sent empty
    is cleared."""

    name: ConfigName | None = None
    from_numbers: list[Annotated[str, Field(pattern=NUMBER_PATTERN)]] | None = None
    revision: Revision | None = None


_NUMBERS_MESSAGE: Final = "must be a list of phone numbers (digits, an optional leading +)"


def _field(spec: ConfigField, *, required: bool) -> tuple[Any, Any]:
    """A provider's configuration field as a model field: its length, its pattern (as the
    provider checks it: stripped), secret ones write-only."""
    extra: dict[str, Any] = {"writeOnly": True, "format": "password"} if spec.secret else {}
    info = Field(
        ... if required else None,
        max_length=spec.max_length,
        pattern=rf"^\s*(?:{spec.pattern})\s*$" if spec.pattern else None,
        description=(spec.help or spec.label) + (" Secret: answered only as has_"
                                                 f"{spec.name} and a hint." if spec.secret else ""),
        json_schema_extra=extra or None,
    )
    return (str if required else str | None), info


def _title(provider: Provider) -> str:
    return provider.name.capitalize()


def _messages(provider: Provider) -> dict[str, str]:
    said = {"from_numbers": _NUMBERS_MESSAGE, "revision": REVISION_MESSAGE,
            "name": "must be one line of text (no control characters)"}
    for spec in provider.fields:
        if spec.pattern_message:
            said[spec.name] = spec.pattern_message
    return said


def _create_model(provider: Provider) -> type[ConfigBody]:
    names = (provider.name, *provider.aliases)
    model = create_model(  # type: ignore[call-overload]
        f"{_title(provider)}ConfigurationCreate",
        __base__=ConfigBody,
        __doc__=f"A new {provider.title} configuration.",
        provider=(Literal[names], ...),
        **{spec.name: _field(spec, required=spec.required) for spec in provider.fields},
    )
    model.messages = _messages(provider)
    example = _example(provider)
    if example is not None:
        model.model_config["json_schema_extra"] = {"examples": [example]}
        model.model_rebuild(force=True)
    return model  # type: ignore[no-any-return]


def _example(provider: Provider) -> dict[str, Any] | None:
    """A configuration of `provider` the API takes (its CLI stand-in's), for the document's
    examples; none where the stand-in is no valid configuration (a generated key)."""
    if type(provider).stand_in_secrets is not Provider.stand_in_secrets:
        return None  # a key made for the occasion: no example worth showing
    example = {"provider": provider.name,
               **provider.stand_in_fields("http://pbx.example.com:8088"),
               **provider.stand_in_secrets()}
    for spec in provider.fields:
        if spec.required and spec.name not in example:
            return None
    _, problems = check_config(provider, example, creating=True, blank_keeps_secret=False)
    return None if problems else example


def _patch_model(provider: Provider) -> type[ConfigPatchBody]:
    model = create_model(  # type: ignore[call-overload]
        f"{_title(provider)}ConfigurationPatch",
        __base__=ConfigPatchBody,
        __doc__=f"An edit of a {provider.title} configuration.",
        **{spec.name: _field(spec, required=False) for spec in provider.fields},
    )
    model.messages = _messages(provider)
    return model  # type: ignore[no-any-return]


def _answer_model(provider: Provider) -> type[BaseModel]:
    fields: dict[str, Any] = {
        "id": (int, ...),
        "provider": (Literal[provider.name], ...),
        "name": (str, ...),
    }
    for spec in provider.fields:
        if spec.secret:
            fields[f"has_{spec.name}"] = (bool, Field(description=f"Whether a {spec.label.lower()} is set."))
            if spec.hint_shown:
                fields[f"{spec.name}_hint"] = (str, Field(description="Its last four characters "
                                                                      "after dots, or empty."))
        else:
            fields[spec.name] = (str | None, Field(description=spec.help or spec.label))
    fields |= {"from_numbers": (list[str], ...), "created_at": (str, ...),
               "updated_at": (str, ...), "revision": (int, ...)}
    return create_model(
        f"{_title(provider)}Configuration",
        __doc__=f"A {provider.title} configuration: secrets never, only whether each is set.",
        **fields,
    )


_CONFIGURABLE: Final = [p for p in PROVIDERS.values() if p.needs_configuration]
CREATE_MODELS: Final[dict[str, type[ConfigBody]]] = {}
for _provider in _CONFIGURABLE:
    _model = _create_model(_provider)
    for _name in (_provider.name, *_provider.aliases):
        CREATE_MODELS[_name] = _model
PATCH_MODELS: Final = {p.name: _patch_model(p) for p in _CONFIGURABLE}
ANSWER_MODELS: Final = {p.name: _answer_model(p) for p in _CONFIGURABLE}

# A body each provider takes (where its CLI stand-in is one), for the document's examples.
CONFIG_EXAMPLES: Final = tuple(
    example for p in _CONFIGURABLE if (example := _example(p)) is not None
)
_ANSWER: Final = _tagged(ANSWER_MODELS.values())
CONFIG_CREATE: Final[TypeAdapter[Any]] = TypeAdapter(_tagged(dict.fromkeys(CREATE_MODELS.values())))
CONFIG_PATCH: Final[TypeAdapter[Any]] = TypeAdapter(
    Union[tuple(PATCH_MODELS.values())]  # type: ignore[arg-type]  # noqa: UP007
)
CONFIG_ANSWER: Final[TypeAdapter[Any]] = TypeAdapter(_ANSWER)


class TelephonyConfigurationList(BaseModel):
    telephony_configurations: list[_ANSWER]  # type: ignore[valid-type]


# -- runs ----------------------------------------------------------------------------------------


class RunsQuery(BaseModel):
    """Which runs, newest first, a page at a time."""

    workflow_uuid: str | None = Field(None, description="Only this workflow's runs (404 when "
                                                        "it is not the organization's).")
    state: Literal[RUN_STATES] | None = None  # type: ignore[valid-type]
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="Runs in the page.")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Runs skipped before the page.")


class TranscriptLine(BaseModel):
    role: Literal["agent", "caller"]
    text: str
    start_ms: int
    end_ms: int
    interrupted: bool


class RunSummary(BaseModel):
    """A run (one call) as listed."""

    id: int
    name: str
    workflow_uuid: str
    call_type: str
    mode: str = Field(description="The provider that carried the call.")
    state: Literal[RUN_STATES]  # type: ignore[valid-type]
    initial_context: dict[str, Any]
    gathered_context: dict[str, Any]
    logs: dict[str, Any]
    created_at: str
    started_at: str | None
    ended_at: str | None
    duration_seconds: float | None
    end_reason: str | None
    close_code: int | None
    error: str | None
    instance_id: str | None = Field(description="The serving process that owns the run.")
    has_recording: bool


class Run(RunSummary):
    """A run with its transcript."""

    transcript: list[TranscriptLine]


class RunList(BaseModel):
    runs: list[RunSummary]
    total: int
    limit: int
    offset: int


class Rejection(BaseModel):
    """A stream connection refused with 1008."""

    created_at: str
    provider: str | None
    agent: str = Field(description="The agent uuid, shortened (a stream URL is a credential).")
    code: int
    reason: str


class RejectionList(BaseModel):
    rejections: list[Rejection]


# -- health --------------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]
    instance: str = Field(description="Which process answered: host:port:worker.")


class Ready(BaseModel):
    status: Literal["ready"]


class NotReady(BaseModel):
    status: Literal["draining", "unavailable"]
    error: str


# -- webhooks (contract section 9) ---------------------------------------------------------------

WebhookEvent = Literal[WEBHOOK_EVENTS]  # type: ignore[valid-type]
WebhookUrl = Annotated[
    str,
    Field(min_length=1, max_length=MAX_URL_CHARS, pattern=r"^\s*[Hh][Tt][Tt][Pp][Ss]?://",
          description="Where deliveries are POSTed: http:// or https://, with a host, no "
                      "user or password, no #fragment."),
]
WebhookEvents = Annotated[
    list[WebhookEvent], Field(min_length=1, description="The run events it receives.")
]
WebhookSecret = Annotated[
    str,
    Field(min_length=MIN_SECRET_CHARS, max_length=MAX_SECRET_CHARS, json_schema_extra={
        "writeOnly": True},
        description="Signs every delivery (HMAC-SHA256); one line, no spaces at either end. "
                    "Never answered again, only `secret_hint`."),
]
_WEBHOOK_MESSAGES: Final = {
    "url": "must be an http:// or https:// URL",
    "events": f"must be a non-empty list of: {', '.join(WEBHOOK_EVENTS)}",
    "secret": f"must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters",
    "revision": REVISION_MESSAGE,
}


class WebhookCreate(Body):
    """A new receiver of run events; without a secret, one is generated and answered once."""

    messages = _WEBHOOK_MESSAGES
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"url": "https://crm.example.com/hooks/agent-stream",
         "events": ["run.completed", "run.failed"]},
    ]})

    url: WebhookUrl
    events: WebhookEvents
    secret: WebhookSecret | None = None
    active: bool | None = Field(None, description="false: paused (no deliveries). Default true.")


class WebhookPatch(Body):
    """An edit: what is given changes; the secret is kept unless a new one is given."""

    messages = _WEBHOOK_MESSAGES
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"active": False}, {"events": ["run.failed"]},
    ]})

    url: WebhookUrl | None = None
    events: WebhookEvents | None = None
    secret: WebhookSecret | None = None
    active: bool | None = Field(None, description="false pauses it, true resumes it.")
    revision: Revision | None = None


class Webhook(BaseModel):
    """A webhook as answered: its secret only as a hint."""

    id: int
    url: str
    events: list[WebhookEvent]
    active: bool
    has_secret: bool
    secret_hint: str
    created_at: str
    updated_at: str
    revision: int


class NewWebhook(Webhook):
    """The creation's answer: `secret` is there, once, when the server generated it."""

    secret: str | None = Field(None, description="The generated secret; shown only this once.")


class WebhookList(BaseModel):
    webhooks: list[Webhook]


class DeliveriesQuery(BaseModel):
    limit: int = Field(DEFAULT_DELIVERIES, ge=1, le=MAX_DELIVERIES,
                       description="Deliveries in the answer, newest first.")


class Delivery(BaseModel):
    """One run event sent (or being sent) to one webhook."""

    id: int
    event: WebhookEvent
    event_id: str = Field(description="The body's `id` and the Idempotency-Key.")
    run_id: int
    status: Literal["pending", "delivered", "failed"]
    status_code: int | None = Field(description="The receiver's answer to the last attempt.")
    attempts: int
    latency_ms: int | None
    error: str | None
    created_at: str
    last_attempt_at: str | None
    next_attempt_at: str | None
    delivered_at: str | None


class DeliveryList(BaseModel):
    deliveries: list[Delivery]
