"""The background sender of webhook deliveries: claims due ones, POSTs them, records how it went.

A run's state change inserts its deliveries in the same transaction (store/webhooks.py), so
this sender only reads the database: woken at once when this process wrote a run event,
otherwise every `POLL_SECONDS` (other instances' events, retries that came due). It claims
what its senders can take, a few per organization and per webhook at a time, so a slow or
dead receiver holds one sender for at most `ATTEMPT_TIMEOUT_SECONDS` and never anyone
else's deliveries; calls never wait for it. A failed attempt is retried after about
1, 2, 4, 8 ... seconds (with jitter, at most `MAX_RETRY_SECONDS` apart) until
`RETRY_FOR_SECONDS` after the event, then the delivery is failed.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import aiohttp

from ..api import run_json
from ..errors import DatabaseUnavailable, NotFound
from ..logs import CALL_FIELDS
from ..models import DueDelivery
from ..security import short_uuid
from ..store import Store
from ..store.base import iso, utcnow
from .signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, shown_url, signature
from .targets import private_literal

log = logging.getLogger(__name__)

# How often due deliveries are looked for when nothing woke the sender up.
POLL_SECONDS: Final = 1.0
# One attempt, from connecting to the receiver's status line.
ATTEMPT_TIMEOUT_SECONDS: Final = 10.0
# Attempts under way at once in this process, and deliveries claimed ahead of them.
SENDERS: Final = 8
QUEUE_SIZE: Final = 2 * SENDERS
# At most this many attempts to one webhook at once, on all instances together.
MAX_IN_FLIGHT_PER_WEBHOOK: Final = 2
# At most this many attempts of one organization at once in this process.
MAX_IN_FLIGHT_PER_ORGANIZATION: Final = 4
# Retries: the first after about this long, each next one twice as late, with this much
# jitter either way, never more than MAX_RETRY_SECONDS apart, until RETRY_FOR_SECONDS.
FIRST_RETRY_SECONDS: Final = 1.0
MAX_RETRY_SECONDS: Final = 3600.0
RETRY_JITTER: Final = 0.2
RETRY_FOR_SECONDS: Final = 24 * 3600.0
# A claim outlives its attempt's timeout by this much; after it, another instance may send.
CLAIM_MARGIN_SECONDS: Final = 30.0
# Deliveries accepted or failed are forgotten after this long (checked this often).
KEEP_DELIVERIES_DAYS: Final = 30
PRUNE_EVERY_SECONDS: Final = 3600.0
# At shutdown, how long attempts under way may finish (an answered one is not sent again).
STOP_GRACE_SECONDS: Final = 5.0
# How much of a receiver's error is kept.
ERROR_CHARS: Final = 200

# What an attempt came to, for the metrics: delivered, retry (will be tried again), failed.
Outcome = str
OutcomeCallback = Callable[[Outcome], None]


def retry_delay(attempts: int) -> float:
    """Seconds until the next attempt after `attempts` failed ones (1 s, 2 s, 4 s, ...)."""
    delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(0, attempts - 1))
    return float(delay * random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER))


def _error_text(exc: BaseException) -> str:
    """An attempt's failure as the deliveries list shows it: never the URL's query."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {ATTEMPT_TIMEOUT_SECONDS:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}"
    if isinstance(exc, aiohttp.ClientError):
        return f"connection failed: {type(exc).__name__}"
    return type(exc).__name__


class WebhookSender:
    """Delivers this database's webhooks from one serving process (an instance)."""

    def __init__(
        self, store: Store, http: aiohttp.ClientSession, instance_id: str,
        *, allow_private: bool = False, on_outcome: OutcomeCallback | None = None,
    ) -> None:
        self._store = store
        self._http = http  # with a PublicOnlyResolver unless `allow_private`
        self._instance = instance_id
        self._allow_private = allow_private
        # Told of each attempt's outcome (a metrics counter); must not raise.
        self.on_outcome = on_outcome
        self._wake = asyncio.Event()
        self._queue: asyncio.Queue[DueDelivery] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._claimed: dict[int, DueDelivery] = {}  # claimed, not yet recorded
        self._database_down = False
        self._pruned_at = 0.0
        self._stopping = False
        self._under_way = 0  # attempts being sent
        self._idle = asyncio.Event()  # set while none is
        self._idle.set()

    def poke(self) -> None:
        """A run event was written here: look for deliveries now."""
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: claim due deliveries and send them; on the way out, give back
        the claims of attempts not finished, so another instance (or the next start) sends
        them at once."""
        with contextlib.suppress(DatabaseUnavailable):
            await self._store.release_claims(self._instance)  # what a crash of ours left
        senders = [asyncio.create_task(self._sender(), name=f"webhook sender {n}")
                   for n in range(SENDERS)]
        try:
            while True:
                self._wake.clear()
                await self._dispatch()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await self._wake.wait()
        finally:
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
            # every claim of ours: those queued or cut off, and one a claim in flight when
            # the cancel came may have written without our knowing
            with contextlib.suppress(DatabaseUnavailable):
                await self._store.release_claims(self._instance)

    async def stop_claiming(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """At shutdown: claim nothing more, start no queued attempt, and give the attempts
        under way up to `grace` seconds to finish and be recorded, so a receiver that
        answers is not sent the same event again. Those still going then are cut off by
        the cancel; the queued ones' claims are given back by `run`."""
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()

    async def _dispatch(self) -> None:
        """Claim what the senders can take (fairly) and queue it; a database that does not
        answer is waited out."""
        if self._stopping:
            return
        try:
            await self._prune()
            free = QUEUE_SIZE - len(self._claimed)
            if free <= 0:
                return
            now = datetime.now(UTC)
            due = await self._store.due_deliveries(
                now=iso(now), max_claims_per_webhook=MAX_IN_FLIGHT_PER_WEBHOOK,
                per_organization=MAX_IN_FLIGHT_PER_ORGANIZATION,
            )
            picked: list[int] = []
            webhooks: set[int] = set()
            organizations = Counter(d.organization_id for d in self._claimed.values())
            for delivery_id, webhook_id, organization_id in due:
                if len(picked) >= free:
                    break
                if (delivery_id in self._claimed or webhook_id in webhooks
                        or organizations[organization_id] >= MAX_IN_FLIGHT_PER_ORGANIZATION):
                    continue  # its turn comes when one of its attempts is done
                picked.append(delivery_id)
                webhooks.add(webhook_id)
                organizations[organization_id] += 1
            until = now + timedelta(seconds=ATTEMPT_TIMEOUT_SECONDS + CLAIM_MARGIN_SECONDS)
            claimed = await self._store.claim_deliveries(
                picked, instance_id=self._instance, now=iso(now), until=iso(until)
            )
        except DatabaseUnavailable as exc:
            if not self._database_down:
                log.warning("webhook deliveries wait: the database does not answer: %s", exc)
            self._database_down = True
            return
        except Exception:
            log.exception("looking for webhook deliveries failed")
            return
        if self._database_down:
            log.info("webhook deliveries resume: the database answers again")
            self._database_down = False
        for due_delivery in claimed:
            self._claimed[due_delivery.delivery.id] = due_delivery
            self._queue.put_nowait(due_delivery)  # never full: claimed no more than it holds

    async def _prune(self) -> None:
        if time.monotonic() - self._pruned_at < PRUNE_EVERY_SECONDS and self._pruned_at:
            return
        self._pruned_at = time.monotonic()
        before = datetime.now(UTC) - timedelta(days=KEEP_DELIVERIES_DAYS)
        await self._store.prune_deliveries(iso(before))

    async def _sender(self) -> None:
        while True:
            due = await self._queue.get()
            if self._stopping:
                continue  # left claimed: run() gives every claim of ours back
            self._under_way += 1
            self._idle.clear()
            try:
                await self._attempt(due)
            except asyncio.CancelledError:
                raise  # still claimed: run() gives the claim back
            except DatabaseUnavailable as exc:  # its claim expires; it is sent again then
                log.warning("webhook delivery %d: outcome not recorded: %s", due.delivery.id, exc)
            except Exception:
                log.exception("webhook delivery %d failed", due.delivery.id)
            finally:
                self._under_way -= 1
                if not self._under_way:
                    self._idle.set()
            self._claimed.pop(due.delivery.id, None)
            self.poke()  # a sender is free, and this webhook's next delivery may go

    async def _first_body(self, due: DueDelivery) -> str | None:
        """The JSON of a first attempt: the event and the run as the API shows it now (every
        later attempt sends the same, stored). None when the run no longer exists."""
        try:
            run = await self._store.get_run_by_id(due.delivery.run_id)
        except NotFound:
            return None
        d = due.delivery
        return json.dumps({"event": d.event, "id": d.event_id, "created_at": d.created_at,
                           "run": run_json(run)})

    async def _attempt(self, due: DueDelivery) -> None:
        """One POST, its outcome recorded: delivered (2xx), retried, or failed for good. Its
        log lines name the run and agent as a call's lines do."""
        fields = {"run": due.run_name, "agent": short_uuid(due.agent_uuid)} if due.run_name else {}
        about_this_run = CALL_FIELDS.set(fields)
        try:
            await self._send(due)
        finally:
            CALL_FIELDS.reset(about_this_run)

    async def _send(self, due: DueDelivery) -> None:
        d = due.delivery
        body = due.body
        if body is None and (rendered := await self._first_body(due)) is not None:
            body = await self._store.keep_delivery_body(d.id, instance_id=self._instance,
                                                        body=rendered)
            if body is None:
                log.info("webhook delivery %d: claimed by another instance meanwhile", d.id)
                return
        status: int | None = None
        error: str | None = None
        started = time.monotonic()
        if body is None:
            error = "the run no longer exists"
        elif not self._allow_private and (refused := private_literal(due.url)):
            error = f"cannot connect: {refused}"
        else:
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "Agent-Stream-Webhooks/1",
                SIGNATURE_HEADER: signature(due.secret, body.encode(), timestamp),
                IDEMPOTENCY_HEADER: d.event_id,
            }
            try:
                async with asyncio.timeout(ATTEMPT_TIMEOUT_SECONDS):
                    async with self._http.post(
                        due.url, data=body.encode(), headers=headers, allow_redirects=False
                    ) as response:
                        status = response.status
                if not 200 <= response.status < 300:
                    error = f"HTTP {response.status}"
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
                error = _error_text(exc)
        latency_ms = round((time.monotonic() - started) * 1000)
        now = datetime.now(UTC)
        deadline = datetime.fromisoformat(d.created_at) + timedelta(seconds=RETRY_FOR_SECONDS)
        next_attempt: str | None = None
        if error is None:
            state, outcome = "delivered", "delivered"
        elif body is None or now >= deadline:
            state, outcome = "failed", "failed"
        else:
            state, outcome = "pending", "retry"
            next_attempt = iso(min(now + timedelta(seconds=retry_delay(d.attempts + 1)), deadline))
        await self._store.record_attempt(
            d.id, instance_id=self._instance, state=state, next_attempt_at=next_attempt,
            status_code=status, latency_ms=latency_ms, error=(error or None) and error[:ERROR_CHARS],
            body=body or "", at=utcnow(),
        )
        log.info("webhook %d %s of run %d to %s: %s (attempt %d, %d ms)%s", d.webhook_id, d.event,
                 d.run_id, shown_url(due.url), error or f"HTTP {status}", d.attempts + 1, latency_ms,
                 "" if outcome != "retry" else f", next at {next_attempt}")
        if self.on_outcome is not None:
            self.on_outcome(outcome)
