"""`GET /metrics` (contract section 9): the process's series in the Prometheus text format,
made by prometheus-client, one registry per app (tests build many apps in one process).

Under `serve --workers N` every worker is a process of its own and a scrape reaches one of
them: the supervisor gives the workers a directory of its own in PROMETHEUS_MULTIPROC_DIR,
each worker's series live in memory-mapped files there, and whichever worker answers a
scrape adds up all of them (prometheus-client's multiprocess mode). A worker that dies
leaves its counts behind (a counter never goes back) and the supervisor drops its share of
the live gauges.

Labels come from finite sets only: provider names of the registry (anything else is
"unknown"), our own end reasons, close codes and rejection reasons; never an agent uuid,
a run name or a free-text reason.

Per audio frame nothing is added: the output transport already keeps each call's gaps
between media messages (the run's `logs.outbound_audio` comes from them) and the transcript
the reply latencies (`logs.reply_latency`); `CallFeed` hands what a call gathered to the
histograms every few seconds and at its end, a sorted batch per bucket bound rather than
one observation per frame.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
from bisect import bisect_right
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Final

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from .errors import DatabaseUnavailable
from .keys import METRICS, SETTINGS, STORE
from .providers import PROVIDERS
from .security import parse_ip, same_secret

# No `*_created` series beside every counter and histogram: Prometheus stores each as a
# series of its own, twice the series for nothing an alert reads (multiprocess mode has none).
disable_created_metrics()  # type: ignore[no-untyped-call]

# Where the workers of one supervisor keep their series (prometheus-client reads it at import).
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# Seconds between two outbound media messages of a call while the agent speaks: 20 ms when
# on time; 100 ms is a packetizing provider's packet (Exotel); beyond, a stall.
GAP_BUCKETS: Final = (0.01, 0.02, 0.025, 0.03, 0.04, 0.06, 0.1, 0.25, 0.5, 1.0)
# End of the caller's speech to the agent's first audio after it: the VAD's 0.5 s of
# end-of-turn silence included, ~0.6 s for the scripted agent, seconds for a slow LLM.
REPLY_BUCKETS: Final = (0.3, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# Handshake (first messages, configuration, validation) and validation alone: milliseconds
# when the provider's API is near, the 5 s API timeout and 10 s handshake timeout at most.
HANDSHAKE_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# How often a worker writes its CPU and memory where the others' scrapes read them.
WORKER_SAMPLE_SECONDS: Final = 5.0

# Finite label values: anything else is counted under OTHER.
OTHER: Final = "other"
UNKNOWN_PROVIDER: Final = "unknown"
END_REASONS: Final = frozenset({
    "agent_hangup", "transfer", "transfer_unsupported", "silence_timeout", "max_duration",
    "llm_error", "caller_hangup", "server_shutdown", "server_error", "agent_error",
    "provider_timeout", "message_too_big", "handshake_failed", "server_restarted", "instance_lost",
})
# The close code of a call that ended with its process: no close frame was ever sent.
NO_CLOSE_CODE: Final = "none"
REJECTION_REASONS: Final = frozenset({
    "missing_provider", "unknown_provider", "workflow_not_found", "quota_minutes",
    "quota_concurrent_calls", "database_unavailable", "shutting_down",
})
API_OPERATIONS: Final = frozenset({"validate", "hangup", "transfer"})


class Metrics:
    """The app's series and the registry a scrape reads."""

    def __init__(self, providers: Iterable[str], *, multiprocess_dir: str | None = None) -> None:
        self.providers = frozenset(providers)
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        # Multiprocess: the series write to this process's files in the directory and a
        # scrape collects every process's files; registered nowhere themselves.
        own = None if multiprocess_dir else self.registry
        self.calls_live = Gauge(
            "agent_stream_calls_live", "Calls with a run, now, by provider.", ["provider"],
            registry=own, multiprocess_mode="livesum",
        )
        self.calls_started = Counter(
            "agent_stream_calls_started", "Calls that got a run, by provider.", ["provider"],
            registry=own,
        )
        self.calls_ended = Counter(
            "agent_stream_calls_ended",
            "Calls whose run ended, by provider, the run's state, end reason and close code.",
            ["provider", "state", "end_reason", "close_code"], registry=own,
        )
        self.rejections = Counter(
            "agent_stream_stream_rejections", "Stream connections refused before a run, by reason.",
            ["reason", "provider"], registry=own,
        )
        self.handshake_seconds = Histogram(
            "agent_stream_handshake_seconds",
            "Socket open to a validated provider handshake, by provider.", ["provider"],
            buckets=HANDSHAKE_BUCKETS, registry=own,
        )
        self.validation_seconds = Histogram(
            "agent_stream_validation_seconds",
            "The provider API's answer to a session validation, by provider.", ["provider"],
            buckets=HANDSHAKE_BUCKETS, registry=own,
        )
        self.gap_seconds = Histogram(
            "agent_stream_outbound_audio_gap_seconds",
            "Time between two outbound media messages of a call while the agent speaks.",
            ["provider"], buckets=GAP_BUCKETS, registry=own,
        )
        self.reply_seconds = Histogram(
            "agent_stream_reply_latency_seconds",
            "End of the caller's speech to the agent's first audio after it.", ["provider"],
            buckets=REPLY_BUCKETS, registry=own,
        )
        self.api_requests = Counter(
            "agent_stream_provider_api_requests",
            "Requests to telephony providers' REST APIs, by provider, operation and HTTP "
            "status (timeout, error: no answer).", ["provider", "operation", "status"],
            registry=own,
        )
        self.webhook_deliveries = Counter(
            "agent_stream_webhook_deliveries", "Webhook delivery attempts, by outcome.",
            ["outcome"], registry=own,
        )
        if multiprocess_dir:
            MultiProcessCollector(self.registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
            self.worker_cpu = Gauge(
                "agent_stream_worker_cpu_seconds", "CPU time of each worker process.",
                registry=None, multiprocess_mode="liveall",
            )
            self.worker_memory = Gauge(
                "agent_stream_worker_resident_memory_bytes", "Resident memory of each worker process.",
                registry=None, multiprocess_mode="liveall",
            )
            self._process = ProcessCollector(registry=None)
        else:
            ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    @classmethod
    def from_env(cls, providers: Iterable[str]) -> Metrics:
        """Multiprocess when the supervisor (or the operator) set PROMETHEUS_MULTIPROC_DIR."""
        return cls(providers, multiprocess_dir=os.environ.get(MULTIPROC_ENV) or None)

    def provider(self, name: str | None) -> str:
        """A provider label: a name of the registry, else "unknown"."""
        return name if name in self.providers else UNKNOWN_PROVIDER

    # -- what the calls report ---------------------------------------------------------

    def call_started(self, provider: str) -> None:
        """A call got its run: it is live until `call_ended`, which its `finally` calls."""
        label = self.provider(provider)
        self.calls_started.labels(label).inc()
        self.calls_live.labels(label).inc()

    def call_ended(self, provider: str, state: str, end_reason: str, close_code: int) -> None:
        """A call's run ended (whatever happened): no longer live, counted by how. The
        run's `state` (completed or failed) is what an alert on failing calls wants: a
        close code does not say it (an LLM that fails mid-call still closes with 1000)."""
        label = self.provider(provider)
        self.calls_ended.labels(label, _ended_state(state), _end_reason(end_reason),
                                str(close_code)).inc()
        self.calls_live.labels(label).dec()

    def calls_lost(self, end_reason: str, providers: Iterable[str | None]) -> None:
        """Runs failed because their calls died with a process (`server_restarted`,
        `instance_lost`): ended calls too, with no close code. Their live count went with
        the process that held them."""
        reason = _end_reason(end_reason)
        for provider in providers:
            self.calls_ended.labels(self.provider(provider), "failed", reason, NO_CLOSE_CODE).inc()

    def rejected(self, reason: str, provider: str | None) -> None:
        """A connection refused before any run (`reason`: one of REJECTION_REASONS)."""
        label = reason if reason in REJECTION_REASONS else OTHER
        self.rejections.labels(label, self.provider(provider)).inc()

    def handshake_done(self, provider: str, seconds: float) -> None:
        """A handshake that passed, validation included."""
        self.handshake_seconds.labels(self.provider(provider)).observe(seconds)

    def validated(self, provider: str, seconds: float) -> None:
        """A session validation answered (or failed, or timed out) after `seconds`."""
        self.validation_seconds.labels(self.provider(provider)).observe(seconds)

    def api_request(self, provider: str, operation: str, status: str) -> None:
        """`status`: the HTTP status, or "timeout" / "error" when no answer came."""
        op = operation if operation in API_OPERATIONS else OTHER
        self.api_requests.labels(self.provider(provider), op, status).inc()

    def webhook_outcome(self, outcome: str) -> None:
        """One webhook delivery attempt ended: `outcome` from the deliverer's own finite set."""
        self.webhook_deliveries.labels(outcome).inc()

    def feed(self, provider: str) -> CallFeed:
        """What one call hands to the gap and reply histograms as it goes."""
        label = self.provider(provider)
        return CallFeed(self.gap_seconds.labels(label), self.reply_seconds.labels(label))

    # -- a scrape ----------------------------------------------------------------------

    def exposition(self) -> bytes:
        """Every series, in the text format."""
        if self.multiprocess_dir:
            self.sample_process()
        return generate_latest(self.registry)

    def sample_process(self) -> None:
        """This worker's CPU and memory, into its share of the per-worker gauges
        (multiprocess mode only: every worker runs this every few seconds and when scraped)."""
        for family in self._process.collect():
            for sample in family.samples:
                if sample.name == "process_cpu_seconds_total":
                    self.worker_cpu.set(sample.value)
                elif sample.name == "process_resident_memory_bytes":
                    self.worker_memory.set(sample.value)


def _end_reason(end_reason: str) -> str:
    """An end reason as a label: one of ours (END_REASONS), else other."""
    return end_reason if end_reason in END_REASONS else OTHER


def _ended_state(state: str) -> str:
    """A run's end state as a label: completed or failed (anything else: other)."""
    return state if state in ("completed", "failed") else OTHER


class CallFeed:
    """One call's gaps and replies on their way to the histograms: `take` hands over what
    was measured since it last ran (every few seconds, and once at the end of the call)."""

    def __init__(self, gaps: Histogram, replies: Histogram) -> None:
        self._gaps = gaps
        self._replies = replies
        self._gaps_taken = 0
        self._replies_taken = 0

    def take(self, gaps: Sequence[float], later_gaps: list[float], replies_ms: Sequence[int]) -> None:
        """`gaps` only grows (what is new is past what was taken); `later_gaps` (a long
        call's, past those it keeps) is emptied."""
        new_gaps = sorted([*gaps[self._gaps_taken:], *later_gaps])
        self._gaps_taken = len(gaps)
        later_gaps.clear()
        add_sorted(self._gaps, new_gaps)
        new_replies = sorted(ms / 1000 for ms in replies_ms[self._replies_taken:])
        self._replies_taken = len(replies_ms)
        add_sorted(self._replies, new_replies)


def add_sorted(histogram: Histogram, values: Sequence[float]) -> None:
    """Observe `values` (sorted) at once: one increment per bucket, not one per value.

    prometheus-client (pinned) keeps a labelled histogram's counts per bucket, not
    cumulative, in `_buckets` beside its `_upper_bounds` (the last one +Inf), and the total
    in `_sum`, in memory or in the multiprocess files alike; `observe` does exactly this for
    one value."""
    if not values:
        return
    below = 0
    for bound, bucket in zip(histogram._upper_bounds, histogram._buckets, strict=True):
        upto = bisect_right(values, bound)
        if upto > below:
            bucket.inc(upto - below)
        below = upto
    histogram._sum.inc(sum(values))


# -- the page --------------------------------------------------------------------------------


def is_loopback(remote: str | None) -> bool:
    """The peer's own address (never a forwarded header) is on this machine."""
    address = parse_ip(remote)
    return address is not None and address.is_loopback


def _refused(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=401,
                             headers={"WWW-Authenticate": 'Bearer realm="metrics"'})


# A loopback peer sending one of these is a reverse proxy on this box relaying a client
# from anywhere: that client is not on this machine.
PROXY_HEADERS: Final = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def from_this_machine(request: web.Request) -> bool:
    """A client on this machine: a loopback peer that relays nobody else's request."""
    return is_loopback(request.remote) and not any(h in request.headers for h in PROXY_HEADERS)


async def metrics_page(request: web.Request) -> web.Response:
    """GET /metrics. No token configured: clients on this machine freely, others (and
    anyone a reverse proxy relays) with an API key. A token configured: the token or an
    API key from every client."""
    token = request.app[SETTINGS].metrics_token
    if token is None and from_this_machine(request):
        return _page(request.app[METRICS])
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return _refused(
            "metrics need 'Authorization: Bearer <metrics token or API key>'" if token else
            "metrics from a non-loopback client need 'Authorization: Bearer <API key>'"
        )
    if token is not None and same_secret(given, token):
        return _page(request.app[METRICS])
    try:
        user = await request.app[STORE].user_for_api_key(given)
    except DatabaseUnavailable as exc:
        return web.json_response({"error": str(exc)}, status=503)
    if user is None:
        return _refused("invalid metrics token or API key")
    return _page(request.app[METRICS])


def _page(metrics: Metrics) -> web.Response:
    response = web.Response(body=metrics.exposition())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def forget_worker(pid: int) -> None:
    """A worker ended: its share of the live gauges goes (the supervisor calls this)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's series; under `--workers`, this worker's CPU and memory written every few
    seconds for whichever worker answers the next scrape."""
    app[METRICS] = metrics = Metrics.from_env(PROVIDERS)
    task = None
    if metrics.multiprocess_dir:
        task = asyncio.create_task(_sample_forever(metrics), name="metrics sampler")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _sample_forever(metrics: Metrics) -> None:
    while True:
        metrics.sample_process()
        await asyncio.sleep(WORKER_SAMPLE_SECONDS)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics_page, name="metrics")
