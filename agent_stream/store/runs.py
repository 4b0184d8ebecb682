"""Runs (one per call): quota-checked creation, their JSON merged key by key, their end
written once, transcripts, and the stream rejections shown beside them."""
from __future__ import annotations

import json
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Final

from ..errors import NotFound, QuotaExceeded
from ..models import Rejection, Run, TranscriptLine, User, Workflow
from .base import StoreBase, call_json, call_text, from_row, month_start, seconds_between, utcnow
from .database import Connection, IntegrityViolation, Row

RUN_NAME_PREFIX: Final = "WR-AGS-"
# A run of `r` that is open: ACTIVE_STATES (base.py), as SQL.
OPEN_RUN_SQL: Final = "r.state IN ('pending', 'running')"


@dataclass(frozen=True)
class FailedRun:
    """A run failed because its call was lost: whose it was, and the call's provider."""

    instance_id: str | None
    provider: str | None


_RUN_SELECT: Final = """
    SELECT r.*, w.uuid AS workflow_uuid, w.organization_id AS organization_id
    FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id
"""

def _run(row: Row, transcript: list[TranscriptLine] | None = None, **known: Any) -> Run:
    """A run from its row (joined with its workflow's uuid and organization, or `known`)."""
    return from_row(
        Run, row, **known,
        initial_context=json.loads(row["initial_context"]),
        gathered_context=json.loads(row["gathered_context"]),
        logs=json.loads(row["logs"]),
        transcript=transcript or [],
    )


class RunsStore(StoreBase):
    async def minutes_used_this_month(self, user_id: int) -> float:
        return await self._seconds_used(None, user_id) / 60.0

    async def _seconds_used(self, db: Connection | None, user_id: int) -> float:
        """Call seconds of the owner's runs this month, those still running counted so far."""
        now, since = utcnow(), month_start()
        owned = """FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id
                   WHERE w.owner_user_id = ? AND r.created_at >= ?"""
        ended = await self._one(f"SELECT SUM(r.duration_seconds) {owned}", (user_id, since), db=db)
        running = await self._all(
            f"SELECT r.started_at {owned} AND r.duration_seconds IS NULL AND r.started_at IS NOT NULL",
            (user_id, since), db=db,
        )
        return float(ended[0] or 0.0 if ended else 0.0) + sum(
            max(0.0, seconds_between(r["started_at"], now)) for r in running
        )

    async def start_run(
        self,
        workflow: Workflow,
        owner: User,
        *,
        mode: str,
        call_type: str = "inbound",
        initial_context: dict[str, Any],
        gathered_context: dict[str, Any],
        logs: dict[str, Any],
        over_run_ids: Collection[int] = (),
    ) -> Run:
        """Check the owner's quota and create the pending run in one statement that holds
        the owner's row while it counts (`Database.has_free_slot`), so two simultaneous calls
        on any instances cannot both take the last slot, and the next one waits for one round
        trip only. `over_run_ids` are runs whose calls are over though their end is not
        written yet: they hold no slot."""
        # the owner as just read by the caller: the minutes quota is checked before, and the
        # owner's row is held only for the count of live runs and the insert, which every new
        # call of this owner waits for (none when there is no limit)
        max_minutes, max_calls = owner.monthly_minutes_limit, owner.max_concurrent_calls
        if max_minutes is not None and await self._seconds_used(None, owner.id) / 60.0 >= max_minutes:
            raise QuotaExceeded(f"quota exceeded: {max_minutes} monthly call minutes used",
                                kind="quota_minutes")
        free, free_params = "1 = 1", ()
        if max_calls is not None:
            free, free_params = self._db.has_free_slot(owner.id, sorted(set(over_run_ids)))
        for attempt in range(10):
            name = RUN_NAME_PREFIX + f"{secrets.randbelow(10**8):08d}"
            try:
                row = await self._db.write_returning(
                    f"""INSERT INTO workflow_runs (workflow_id, definition_id, name, call_type,
                            mode, state, initial_context, gathered_context, logs, created_at,
                            instance_id)
                        SELECT ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ? WHERE {free}
                        RETURNING *""",
                    (workflow.id, workflow.live_definition_id, name, call_type, mode,
                     call_json(initial_context), call_json(gathered_context), call_json(logs), utcnow(),
                     self.instance_id, *free_params),
                )
                break
            except IntegrityViolation:  # the name is taken (1 in 10^8 a run): another one
                if attempt == 9:
                    raise
        if row is None:
            raise QuotaExceeded(f"quota exceeded: {max_calls} concurrent calls already running",
                                kind="quota_concurrent_calls")
        # a run just made has no transcript yet: its row is all there is to read
        return _run(row, workflow_uuid=workflow.uuid, organization_id=workflow.organization_id)

    async def mark_run_running(
        self, run_id: int, logs: dict[str, Any] | None = None, *, started_at: str | None = None
    ) -> None:
        """`started_at` is when the call started running (a write retried later keeps it)."""
        await self._db.execute(
            f"""UPDATE workflow_runs SET state = 'running', started_at = ?,
                    logs = {self._db.merge_json("logs")} WHERE id = ? AND state = 'pending'""",
            (started_at or utcnow(), call_json(logs or {}), run_id),
        )
        self._run_event_written()

    async def merge_run_context(
        self,
        run_id: int,
        *,
        initial_context: dict[str, Any] | None = None,
        gathered_context: dict[str, Any] | None = None,
        logs: dict[str, Any] | None = None,
    ) -> None:
        """Merge keys into the run's JSON columns (RFC 7396 merge patch, nested keys kept),
        in one statement: another instance's merge cannot interleave with it."""
        merge = self._db.merge_json
        await self._db.execute(
            f"""UPDATE workflow_runs SET initial_context = {merge("initial_context")},
                    gathered_context = {merge("gathered_context")}, logs = {merge("logs")}
                WHERE id = ?""",
            (call_json(initial_context or {}), call_json(gathered_context or {}),
             call_json(logs or {}), run_id),
        )

    async def finish_run(
        self,
        run_id: int,
        *,
        state: str,
        end_reason: str,
        close_code: int | None,
        error: str | None = None,
        recording_path: str | None = None,
        gathered_context: dict[str, Any] | None = None,
        logs: dict[str, Any] | None = None,
        transcript: list[TranscriptLine] | None = None,
        ended_at: str | None = None,
    ) -> None:
        """End a run once: state, times, reason and everything the call gathered.
        `ended_at` is when the call ended (a write retried later keeps it)."""
        now = ended_at or utcnow()
        merge = self._db.merge_json
        async with self._db.transaction() as db:
            row = await db.fetchrow(
                f"SELECT r.started_at FROM workflow_runs r WHERE r.id = ? AND {OPEN_RUN_SQL}"
                + self._db.for_update, (run_id,),
            )
            if row is None:
                return  # ended already (its instance was lost, or restarted): the first end stands
            duration = seconds_between(row["started_at"], now) if row["started_at"] else 0.0
            await db.execute(
                f"""UPDATE workflow_runs SET state = ?, ended_at = ?, duration_seconds = ?,
                        end_reason = ?, close_code = ?, error = ?,
                        recording_path = COALESCE(?, recording_path),
                        gathered_context = {merge("gathered_context")}, logs = {merge("logs")}
                    WHERE id = ?""",
                (state, now, duration, end_reason, close_code, call_text(error), recording_path,
                 call_json(gathered_context or {}), call_json(logs or {}), run_id),
            )
            for seq, line in enumerate(transcript or []):
                await db.execute(
                    """INSERT INTO run_transcript_lines (run_id, seq, role, text, start_ms, end_ms,
                           interrupted) VALUES (?, ?, ?, ?, ?, ?, ?)""",
                    (run_id, seq, line.role, call_text(line.text), line.start_ms, line.end_ms,
                     int(line.interrupted)),
                )
        self._run_event_written()

    async def fail_open_runs(
        self, db: Connection, where: str, params: tuple[Any, ...], *, end_reason: str, error: str
    ) -> list[FailedRun]:
        """Fail the open runs `where` selects (a lost call): ended now, counted to now.
        What was failed, as it was found under the rows' lock: an instance that lost the
        race to another fails (and counts) nothing."""
        now = utcnow()
        rows = await db.fetch(
            f"""SELECT r.id, r.started_at, r.instance_id, r.mode FROM workflow_runs r
                WHERE {OPEN_RUN_SQL} AND ({where})""" + self._db.for_update,
            params,
        )
        for row in rows:
            duration = seconds_between(row["started_at"], now) if row["started_at"] else 0.0
            await db.execute(
                """UPDATE workflow_runs SET state = 'failed', ended_at = ?, duration_seconds = ?,
                       end_reason = ?, error = ? WHERE id = ?""",
                (now, duration, end_reason, error, row["id"]),
            )
        return [FailedRun(row["instance_id"], row["mode"]) for row in rows]

    async def set_run_recording(
        self, run_id: int, recording_path: str, *, logs: dict[str, Any] | None = None
    ) -> None:
        """Give an ended run the recording merged after its call (a crash left the tracks)
        and say so in its logs."""
        await self._db.execute(
            f"""UPDATE workflow_runs SET recording_path = ?, logs = {self._db.merge_json("logs")}
                WHERE id = ?""",
            (recording_path, call_json(logs or {}), run_id),
        )

    async def get_run_by_id(self, run_id: int) -> Run:
        row = await self._one(_RUN_SELECT + " WHERE r.id = ?", (run_id,))
        if row is None:
            raise NotFound("run not found")
        return _run(row, await self._transcript(run_id))

    async def find_run_by_call_id(self, workflow_id: int, call_id: str) -> Run | None:
        """The run of one call of a workflow, by the call id its stream URL carried."""
        row = await self._one(
            _RUN_SELECT + " WHERE r.workflow_id = ? AND "
            + self._db.json_text("r.gathered_context", "call_id") + " = ? ORDER BY r.id DESC LIMIT 1",
            (workflow_id, call_id),
        )
        return _run(row, await self._transcript(row["id"])) if row else None

    async def get_run(self, organization_id: int, run_id: int) -> Run:
        run = await self.get_run_by_id(run_id)
        if run.organization_id != organization_id:
            raise NotFound("run not found")
        return run

    async def _transcript(self, run_id: int) -> list[TranscriptLine]:
        rows = await self._all("SELECT * FROM run_transcript_lines WHERE run_id = ? ORDER BY seq", (run_id,))
        return [
            TranscriptLine(r["role"], r["text"], r["start_ms"], r["end_ms"], bool(r["interrupted"]))
            for r in rows
        ]

    async def list_runs(
        self,
        organization_id: int,
        *,
        workflow_uuid: str | None = None,
        state: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Run], int]:
        """Newest first; returns one page and the total count. `since`/`until` bound
        `created_at` (ISO text, until exclusive)."""
        where = ["w.organization_id = ?"]
        params: list[Any] = [organization_id]
        for clause, value in (("w.uuid = ?", workflow_uuid), ("r.state = ?", state),
                              ("r.created_at >= ?", since), ("r.created_at < ?", until)):
            if value:
                where.append(clause)
                params.append(value)
        clause = " WHERE " + " AND ".join(where)
        total_row = await self._one(
            "SELECT COUNT(*) FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id" + clause,
            tuple(params),
        )
        rows = await self._all(
            _RUN_SELECT + clause + " ORDER BY r.id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_run(r) for r in rows], (int(total_row[0]) if total_row else 0)

    # -- stream rejections -------------------------------------------------------------------

    async def add_rejection(
        self,
        *,
        provider: str | None,
        agent_uuid_short: str,
        code: int,
        reason: str,
        workflow_id: int | None = None,
        organization_id: int | None = None,
    ) -> None:
        async with self._db.transaction() as db:
            await db.execute(
                """INSERT INTO stream_rejections (created_at, provider, agent_uuid_short,
                       workflow_id, organization_id, code, reason) VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (utcnow(), call_text(provider), call_text(agent_uuid_short), workflow_id,
                 organization_id, code, call_text(reason)),
            )

    async def list_rejections(
        self, *, organization_id: int | None = None, workflow_id: int | None = None,
        limit: int = 50,
    ) -> list[Rejection]:
        """Rejections of one organization's agents (or one agent's), or all of them."""
        where: list[str] = []
        params: list[Any] = []
        if organization_id is not None:
            where.append("organization_id = ?")
            params.append(organization_id)
        if workflow_id is not None:
            where.append("workflow_id = ?")
            params.append(workflow_id)
        sql = "SELECT * FROM stream_rejections"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._all(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [
            Rejection(r["id"], r["created_at"], r["provider"], r["agent_uuid_short"],
                      r["workflow_id"], r["code"], r["reason"])
            for r in rows
        ]
