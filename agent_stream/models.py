"""The domain records of Agent Stream: what the store returns and everything else passes
around. Plain frozen dataclasses, no SQL (that is the store's), no behaviour beyond what the
data itself says."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Organization:
    id: int
    name: str
    created_at: str


@dataclass(frozen=True)
class User:
    id: int
    organization_id: int
    email: str
    is_admin: bool
    monthly_minutes_limit: int | None
    max_concurrent_calls: int | None
    created_at: str
    revision: int = 1  # what an edit compares and sets (store/base.py: check_revision)


@dataclass(frozen=True)
class ApiKey:
    id: int
    user_id: int
    name: str
    key_prefix: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


@dataclass(frozen=True)
class Workflow:
    id: int
    uuid: str
    organization_id: int
    owner_user_id: int
    name: str
    status: str
    version: int  # latest definition version
    published_version: int | None
    definition: dict[str, Any]  # latest (draft) definition
    published_definition: dict[str, Any] | None
    definition_id: int
    published_definition_id: int | None
    created_at: str
    updated_at: str
    revision: int = 1

    @property
    def live_definition(self) -> dict[str, Any]:
        """What a call runs: the published version if there is one, else the draft."""
        return self.published_definition or self.definition

    @property
    def live_definition_id(self) -> int:
        return self.published_definition_id or self.definition_id


@dataclass(frozen=True)
class TelephonyConfig:
    """A provider account an organization's calls come from: its fields, the secret ones
    (decrypted, never shown: only hinted), and the account a stream names to select it."""

    id: int
    organization_id: int
    provider: str
    name: str
    account_id: str
    fields: dict[str, str]
    secrets: dict[str, str] = field(repr=False)  # never in a log line or a traceback
    from_numbers: list[str]
    created_at: str
    updated_at: str
    revision: int = 1

    def value(self, field: str) -> str:
        """A field's value, secret or not ('' when unset)."""
        return self.secrets.get(field) or self.fields.get(field) or ""


@dataclass
class ConfigInput:
    """A telephony configuration as checked, to store: given fields only (an update keeps
    what is not given; a secret is only replaced by a new one)."""

    name: str | None = None
    account_id: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    from_numbers: list[str] | None = None


@dataclass(frozen=True)
class TranscriptLine:
    role: str
    text: str
    start_ms: int
    end_ms: int
    interrupted: bool = False


@dataclass(frozen=True)
class Run:
    id: int
    workflow_id: int
    workflow_uuid: str
    organization_id: int
    name: str
    call_type: str
    mode: str
    state: str
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
    recording_path: str | None
    # The serving process that owns the run (store/instances.py); None from before them.
    instance_id: str | None = None
    transcript: list[TranscriptLine] = field(default_factory=list)


@dataclass(frozen=True)
class Rejection:
    id: int
    created_at: str
    provider: str | None
    agent_uuid_short: str
    workflow_id: int | None
    code: int
    reason: str


@dataclass(frozen=True)
class OrgApiKey:
    """An API key as the admin lists it: never the key, only its prefix and owner."""

    key: ApiKey
    owner_email: str


@dataclass(frozen=True)
class AgentActivity:
    last_run_at: str | None
    runs_since: int


@dataclass(frozen=True)
class Bucket:
    """One bar of a distribution: its label, and how many fall in [low, high)."""

    label: str
    low: float
    high: float | None
    count: int


@dataclass(frozen=True)
class LiveCall:
    """A call of the organization going on now (a pending or running run)."""

    run_id: int
    run_name: str
    agent_name: str
    agent_uuid: str
    provider: str
    state: str
    created_at: str
    started_at: str | None


@dataclass(frozen=True)
class Overview:
    """An organization's last days of calls, as the Overview page charts them."""

    days: list[str]  # the UTC days, oldest first, YYYY-MM-DD
    calls_per_day: dict[str, list[int]]  # outcome -> a count per day of `days`
    totals: dict[str, int]  # outcome -> calls of all `days`, and "calls"
    durations: list[Bucket]  # seconds of the calls that were answered
    duration_median: float | None
    duration_p90: float | None
    latencies: list[Bucket]  # milliseconds from a caller's line to the agent's reply
    latency_median: float | None
    latency_p90: float | None
    failures: list[tuple[str, str, int]]  # (end reason, provider, failed calls), most first
    live: list[LiveCall]


@dataclass(frozen=True)
class Webhook:
    """An organization's receiver of run events (CONTRACT section 9)."""

    id: int
    organization_id: int
    url: str
    events: list[str]
    secret: str  # opened from its sealed column: never shown, only signs
    active: bool
    revision: int
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class WebhookDelivery:
    """One run event for one webhook: sent until accepted, or failed after 24 hours."""

    id: int
    webhook_id: int
    run_id: int
    event: str
    event_id: str  # the body's "id" and the Idempotency-Key, the same on every attempt
    state: str  # pending, delivered, failed
    attempts: int
    created_at: str
    next_attempt_at: str | None
    status_code: int | None
    latency_ms: int | None
    error: str | None
    last_attempt_at: str | None
    delivered_at: str | None


@dataclass(frozen=True)
class DueDelivery:
    """A delivery this instance has claimed, with what its attempt needs."""

    delivery: WebhookDelivery
    organization_id: int
    url: str
    secret: str
    body: str | None  # the JSON of the first attempt, when there was one
    run_name: str = ""  # for the log lines about the attempt ("" when the run is gone)
    agent_uuid: str = ""
