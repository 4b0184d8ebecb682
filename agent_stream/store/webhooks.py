"""Run webhooks and their deliveries (CONTRACT section 9).

Deliveries are never inserted from Python: migration 7's trigger on `workflow_runs` inserts
one per subscribed active webhook in the statement that changes a run's state, so a run
event and its deliveries commit together or not at all, whichever code path ends the run
(a call, a restart, a lost instance). A sender claims due deliveries for a while
(`claimed_by`, `claimed_until`) so that of several instances only one sends an attempt; a
claim that outlives its instance simply expires.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from ..errors import NotFound
from ..models import DueDelivery, Webhook, WebhookDelivery
from .base import StoreBase, check_revision, dumps, from_row, utcnow
from .database import Connection, Row, placeholders

# Due deliveries read at once (each a different webhook's next).
_CANDIDATES: Final = 100
# The order deliveries go in: new events before retries, then the longest due.
_NEXT_FIRST: Final = "retry, next_attempt_at, id"
_DELIVERY_COLUMNS: Final = """d.id, d.webhook_id, d.run_id, d.event, d.event_id, d.state,
    d.attempts, d.created_at, d.next_attempt_at, d.status_code, d.latency_ms, d.error,
    d.last_attempt_at, d.delivered_at"""


class WebhooksStore(StoreBase):
    async def create_webhook(
        self, organization_id: int, *, url: str, events: list[str], secret: str,
        active: bool = True,
    ) -> Webhook:
        """A new webhook; its secret is sealed before it reaches the database."""
        now = utcnow()
        async with self._db.transaction() as db:
            webhook_id = await db.fetchval(
                """INSERT INTO webhooks (organization_id, url, events, secret, active, created_at,
                       updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                (organization_id, url, dumps(events), self._box.seal({"secret": secret}),
                 int(active), now, now),
            )
            return await self._webhook_by_id(db, organization_id, webhook_id)

    async def list_webhooks(self, organization_id: int) -> list[Webhook]:
        rows = await self._all(
            "SELECT * FROM webhooks WHERE organization_id = ? ORDER BY id", (organization_id,)
        )
        return [self._webhook(r) for r in rows]

    async def get_webhook(self, organization_id: int, webhook_id: int) -> Webhook:
        return await self._webhook_by_id(None, organization_id, webhook_id)

    async def _webhook_by_id(
        self, db: Connection | None, organization_id: int, webhook_id: int, *, lock: bool = False
    ) -> Webhook:
        row = await self._one(
            "SELECT * FROM webhooks WHERE id = ? AND organization_id = ?"
            + (self._db.for_update if lock else ""),
            (webhook_id, organization_id), db=db,
        )
        if row is None:
            raise NotFound("webhook not found")
        return self._webhook(row)

    def _webhook(self, row: Row) -> Webhook:
        return from_row(
            Webhook, row, events=json.loads(row["events"]),
            secret=self._box.open(row["secret"]).get("secret", ""), active=bool(row["active"]),
        )

    async def update_webhook(
        self,
        organization_id: int,
        webhook_id: int,
        *,
        url: str | None = None,
        events: list[str] | None = None,
        secret: str | None = None,
        active: bool | None = None,
        revision: int | None = None,
    ) -> Webhook:
        """Change what is given (the secret only when a new one is); with `revision`, a
        webhook changed since it was read at that revision is Stale. Deliveries not yet
        accepted go to the URL, with the secret, as they are when they are sent."""
        async with self._db.transaction() as db:
            current = await self._webhook_by_id(db, organization_id, webhook_id, lock=True)
            check_revision(current.revision, revision, "this webhook")
            await db.execute(
                """UPDATE webhooks SET url = ?, events = ?, secret = COALESCE(?, secret),
                       active = ?, updated_at = ?, revision = revision + 1 WHERE id = ?""",
                (url if url is not None else current.url,
                 dumps(events if events is not None else current.events),
                 self._box.seal({"secret": secret}) if secret is not None else None,
                 int(current.active if active is None else active), utcnow(), webhook_id),
            )
            return await self._webhook_by_id(db, organization_id, webhook_id)

    async def delete_webhook(
        self, organization_id: int, webhook_id: int, *, revision: int | None = None
    ) -> None:
        """Delete it with its deliveries, sent or not."""
        async with self._db.transaction() as db:
            if revision is not None:
                current = await self._webhook_by_id(db, organization_id, webhook_id, lock=True)
                check_revision(current.revision, revision, "this webhook")
            deleted = await db.execute(
                "DELETE FROM webhooks WHERE id = ? AND organization_id = ?",
                (webhook_id, organization_id),
            )
            if deleted == 0:
                raise NotFound("webhook not found")

    async def list_deliveries(
        self, organization_id: int, webhook_id: int, *, limit: int = 50
    ) -> list[WebhookDelivery]:
        """A webhook's last deliveries, newest first (NotFound for another organization's)."""
        await self.get_webhook(organization_id, webhook_id)
        rows = await self._all(
            f"""SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.webhook_id = ?
                ORDER BY d.id DESC LIMIT ?""",
            (webhook_id, limit),
        )
        return [from_row(WebhookDelivery, r) for r in rows]

    # -- the sender's side -------------------------------------------------------------------

    async def due_deliveries(
        self, *, now: str, max_claims_per_webhook: int, per_organization: int
    ) -> list[tuple[int, int, int]]:
        """(delivery, webhook, organization) of pending deliveries due by `now`, unclaimed,
        of active webhooks with fewer than `max_claims_per_webhook` attempts under way on any
        instance: each webhook's next one (first attempts first, then the oldest), at most
        `per_organization` of an organization, first attempts of all before any retry. So
        neither one webhook's backlog nor one organization's many slow webhooks fill the
        list and hold back another's new event. A read: the claim (`claim_deliveries`)
        decides. The busy webhooks are counted once, from the pending rows only (a partial
        index), never per candidate over a webhook's whole history."""
        rows = await self._all(
            f"""SELECT id, webhook_id, organization_id FROM (
                    SELECT id, webhook_id, organization_id, retry, next_attempt_at,
                           ROW_NUMBER() OVER (PARTITION BY organization_id
                                              ORDER BY {_NEXT_FIRST}) AS in_organization
                    FROM (
                        SELECT d.id, d.webhook_id, h.organization_id, d.next_attempt_at,
                               CASE WHEN d.attempts = 0 THEN 0 ELSE 1 END AS retry,
                               ROW_NUMBER() OVER (
                                   PARTITION BY d.webhook_id
                                   ORDER BY CASE WHEN d.attempts = 0 THEN 0 ELSE 1 END,
                                            d.next_attempt_at, d.id) AS in_webhook
                        FROM webhook_deliveries d JOIN webhooks h ON h.id = d.webhook_id
                        WHERE d.state = 'pending' AND d.next_attempt_at <= ? AND h.active = 1
                          AND (d.claimed_until IS NULL OR d.claimed_until < ?)
                          AND d.webhook_id NOT IN (
                              SELECT c.webhook_id FROM webhook_deliveries c
                              WHERE c.state = 'pending' AND c.claimed_until >= ?
                              GROUP BY c.webhook_id HAVING COUNT(*) >= ?)
                    ) next_of_webhook WHERE in_webhook = 1
                ) next_of_organization WHERE in_organization <= ?
                ORDER BY {_NEXT_FIRST} LIMIT ?""",
            (now, now, now, max_claims_per_webhook, per_organization, _CANDIDATES),
        )
        return [(int(r[0]), int(r[1]), int(r[2])) for r in rows]

    async def claim_deliveries(
        self, ids: Sequence[int], *, instance_id: str, now: str, until: str
    ) -> list[DueDelivery]:
        """Claim those of `ids` still due that nobody has claimed since they were read (on
        PostgreSQL a concurrent claim waits for ours, then finds them taken; one another
        instance tried and failed meanwhile is due later, so not sent early): the
        deliveries this instance now sends, with their webhook's URL and secret."""
        if not ids:
            return []
        async with self._db.transaction() as db:
            claimed = await db.fetch(
                f"""UPDATE webhook_deliveries SET claimed_by = ?, claimed_until = ?
                    WHERE id IN ({placeholders(ids)}) AND state = 'pending'
                      AND (claimed_until IS NULL OR claimed_until < ?) AND next_attempt_at <= ?
                    RETURNING id""",
                (instance_id, until, *ids, now, now),
            )
            mine = [int(r[0]) for r in claimed]
            if not mine:
                return []
            rows = await db.fetch(
                f"""SELECT {_DELIVERY_COLUMNS}, d.body, h.organization_id, h.url,
                        h.secret AS sealed_secret, r.name AS run_name, w.uuid AS agent_uuid
                    FROM webhook_deliveries d JOIN webhooks h ON h.id = d.webhook_id
                    LEFT JOIN workflow_runs r ON r.id = d.run_id
                    LEFT JOIN workflows w ON w.id = r.workflow_id
                    WHERE d.id IN ({placeholders(mine)}) ORDER BY d.next_attempt_at, d.id""",
                mine,
            )
        return [
            DueDelivery(
                from_row(WebhookDelivery, r), int(r["organization_id"]), r["url"],
                self._box.open(r["sealed_secret"]).get("secret", ""), r["body"],
                r["run_name"] or "", r["agent_uuid"] or "",
            )
            for r in rows
        ]

    async def keep_delivery_body(self, delivery_id: int, *, instance_id: str, body: str) -> str | None:
        """Fix a delivery's body before its first attempt is sent, so every retry (by any
        instance, after any crash) sends the same bytes: the body now stored (ours, or one
        an earlier attempt fixed). None when the claim is no longer ours: send nothing."""
        row = await self._db.write_returning(
            """UPDATE webhook_deliveries SET body = COALESCE(body, ?)
               WHERE id = ? AND claimed_by = ? AND state = 'pending' RETURNING body""",
            (body, delivery_id, instance_id),
        )
        return None if row is None else str(row[0])

    async def record_attempt(
        self,
        delivery_id: int,
        *,
        instance_id: str,
        state: str,
        next_attempt_at: str | None,
        status_code: int | None,
        latency_ms: int | None,
        error: str | None,
        body: str,
        at: str,
    ) -> bool:
        """An attempt's outcome (`state` delivered, pending for a retry at `next_attempt_at`,
        or failed), the claim released; the body is kept from the first attempt on. False
        when the claim was no longer ours (it expired and another instance took it)."""
        return bool(await self._db.execute(
            """UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1,
                   next_attempt_at = ?, status_code = ?, latency_ms = ?, error = ?,
                   last_attempt_at = ?, delivered_at = CASE WHEN ? = 'delivered' THEN ? END,
                   body = COALESCE(body, ?), claimed_by = NULL, claimed_until = NULL
               WHERE id = ? AND claimed_by = ? AND state = 'pending'""",
            (state, next_attempt_at, status_code, latency_ms, error, at, state, at, body,
             delivery_id, instance_id),
        ))

    async def release_claims(self, instance_id: str, ids: Sequence[int] | None = None) -> int:
        """Give back this instance's claims (`ids`, or all of them: at its start, after a
        crash, or when it stops mid-attempt), so any instance sends them at once."""
        where, params = "claimed_by = ?", list[Any]([instance_id])
        if ids is not None:
            if not ids:
                return 0
            where += f" AND id IN ({placeholders(ids)})"
            params.extend(ids)
        return await self._db.execute(
            f"UPDATE webhook_deliveries SET claimed_by = NULL, claimed_until = NULL WHERE {where}",
            params,
        )

    async def prune_deliveries(self, before: str) -> int:
        """Forget deliveries accepted or given up on before `before` (pending ones stay)."""
        return await self._db.execute(
            "DELETE FROM webhook_deliveries WHERE state != 'pending' AND created_at < ?", (before,)
        )
