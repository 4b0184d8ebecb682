"""Serving processes (instances) and the runs they own.

Every serving process registers under an id stable across its restarts (host, port,
worker) and writes a heartbeat every few seconds. A run belongs to the instance whose call
it records. When calls are lost with their process, their runs are failed by the instance
itself when it starts again (`server_restarted`) or by a live instance once the dead one's
heartbeat is old (`instance_lost`); a live instance's runs are never touched by another.
"""
from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from .base import iso, utcnow
from .runs import OPEN_RUN_SQL, FailedRun, RunsStore


class InstancesStore(RunsStore):
    async def register_instance(self) -> list[FailedRun]:
        """Announce this instance (its first heartbeat) and fail the runs it left open when
        it last stopped, and runs of no instance (from before instances were recorded)."""
        assert self.instance_id is not None, "only a serving process is an instance"
        now = utcnow()
        async with self._db.transaction() as db:
            await db.execute(
                """INSERT INTO instances (id, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET pid = excluded.pid,
                       started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at""",
                (self.instance_id, os.getpid(), now, now),
            )
            return await self.fail_open_runs(
                db, "r.instance_id = ? OR r.instance_id IS NULL", (self.instance_id,),
                end_reason="server_restarted", error="server restarted",
            )

    async def heartbeat(self) -> None:
        """This instance is alive (written every few seconds)."""
        assert self.instance_id is not None
        now = utcnow()
        async with self._db.transaction() as db:
            updated = await db.execute(
                "UPDATE instances SET heartbeat_at = ?, pid = ? WHERE id = ?",
                (now, os.getpid(), self.instance_id),
            )
            if not updated:  # removed by hand while we ran
                await db.execute(
                    "INSERT INTO instances (id, pid, started_at, heartbeat_at) VALUES (?, ?, ?, ?)",
                    (self.instance_id, os.getpid(), now, now),
                )

    async def fail_runs_of_lost_instances(self, timeout_seconds: float) -> list[FailedRun]:
        """Fail the open runs of every other instance whose heartbeat is older than
        `timeout_seconds` (or that never registered)."""
        cutoff = iso(datetime.now(UTC) - timedelta(seconds=timeout_seconds))
        lost = """r.instance_id != ? AND r.instance_id NOT IN (
                      SELECT id FROM instances WHERE heartbeat_at >= ?)"""
        any_lost = await self._all(  # a read first: the check runs every few seconds
            f"SELECT 1 FROM workflow_runs r WHERE {OPEN_RUN_SQL} AND {lost} LIMIT 1",
            (self.instance_id, cutoff),
        )
        if not any_lost:
            return []
        async with self._db.transaction() as db:
            return await self.fail_open_runs(
                db, lost, (self.instance_id, cutoff),
                end_reason="instance_lost", error="the instance serving this call stopped answering",
            )
