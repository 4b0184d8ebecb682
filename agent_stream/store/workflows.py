"""Workflows (agents): their versioned definitions, publishing, and activity per agent."""
from __future__ import annotations

import json
import uuid as uuidlib
from typing import Any, Final

from ..errors import NotFound
from ..models import AgentActivity, Workflow
from .base import StoreBase, check_revision, dumps, from_row, utcnow
from .database import Connection, Row

_WORKFLOW_SELECT: Final = """
    SELECT w.*, d.id AS d_id, d.version AS d_version, d.definition AS d_definition,
           p.version AS p_version, p.definition AS p_definition
    FROM workflows w
    JOIN workflow_definitions d ON d.id = (
        SELECT id FROM workflow_definitions WHERE workflow_id = w.id ORDER BY version DESC LIMIT 1)
    LEFT JOIN workflow_definitions p ON p.id = w.published_definition_id
"""


def _unstorable(workflow_uuid: str) -> bool:
    """A uuid no workflow can have: with a NUL, which PostgreSQL text cannot even be compared
    with (it refuses the statement), so it is not found rather than a database error."""
    return "\x00" in workflow_uuid


def _workflow(row: Row) -> Workflow:
    return from_row(
        Workflow, row,
        version=row["d_version"],
        published_version=row["p_version"],
        definition=json.loads(row["d_definition"]),
        published_definition=json.loads(row["p_definition"]) if row["p_definition"] else None,
        definition_id=row["d_id"],
    )


class WorkflowsStore(StoreBase):
    async def create_workflow(
        self, *, organization_id: int, owner_user_id: int, name: str, definition: dict[str, Any]
    ) -> Workflow:
        now = utcnow()
        workflow_uuid = str(uuidlib.uuid4())
        async with self._db.transaction() as db:
            workflow_id = await db.fetchval(
                """INSERT INTO workflows (uuid, organization_id, owner_user_id, name, status,
                       created_at, updated_at) VALUES (?, ?, ?, ?, 'draft', ?, ?) RETURNING id""",
                (workflow_uuid, organization_id, owner_user_id, name, now, now),
            )
            await db.execute(
                """INSERT INTO workflow_definitions (workflow_id, version, definition, created_at)
                   VALUES (?, 1, ?, ?)""",
                (workflow_id, dumps(definition), now),
            )
            return await self._workflow_by_uuid(db, organization_id, workflow_uuid)

    async def list_workflows(self, organization_id: int) -> list[Workflow]:
        rows = await self._all(
            _WORKFLOW_SELECT + " WHERE w.organization_id = ? ORDER BY w.id DESC",
            (organization_id,),
        )
        return [_workflow(r) for r in rows]

    async def get_workflow(self, organization_id: int, workflow_uuid: str) -> Workflow:
        return await self._workflow_by_uuid(None, organization_id, workflow_uuid)

    async def _workflow_by_uuid(
        self, db: Connection | None, organization_id: int, workflow_uuid: str
    ) -> Workflow:
        if _unstorable(workflow_uuid):
            raise NotFound("workflow not found")
        row = await self._one(
            _WORKFLOW_SELECT + " WHERE w.uuid = ? AND w.organization_id = ?",
            (workflow_uuid, organization_id),
            db=db,
        )
        if row is None:
            raise NotFound("workflow not found")
        return _workflow(row)

    async def _locked_workflow(
        self, db: Connection, organization_id: int, workflow_uuid: str, revision: int | None
    ) -> Workflow:
        """The workflow, its row locked for this transaction's edit; a Conflict when it has
        changed since `revision`."""
        if _unstorable(workflow_uuid):
            raise NotFound("workflow not found")
        row = await db.fetchrow(
            "SELECT revision FROM workflows WHERE uuid = ? AND organization_id = ?" + self._db.for_update,
            (workflow_uuid, organization_id),
        )
        if row is None:
            raise NotFound("workflow not found")
        check_revision(row["revision"], revision, "this agent")
        return await self._workflow_by_uuid(db, organization_id, workflow_uuid)

    async def find_stream_workflow(
        self, workflow_uuid: str, *, include_archived: bool = False
    ) -> Workflow | None:
        """The workflow an Agent Stream URL names; archived ones do not take calls (but
        their refusals are still shown to their operators)."""
        if _unstorable(workflow_uuid):
            return None
        archived = "" if include_archived else " AND w.status != 'archived'"
        row = await self._one(_WORKFLOW_SELECT + " WHERE w.uuid = ?" + archived, (workflow_uuid,))
        return _workflow(row) if row else None

    async def update_workflow(
        self,
        organization_id: int,
        workflow_uuid: str,
        *,
        name: str | None = None,
        definition: dict[str, Any] | None = None,
        status: str | None = None,
        revision: int | None = None,
    ) -> Workflow:
        """Rename, archive/restore, or save a new draft version (the uuid never changes).
        With `revision`, an agent changed since it was read at that revision is a Conflict."""
        now = utcnow()
        async with self._db.transaction() as db:
            current = await self._locked_workflow(db, organization_id, workflow_uuid, revision)
            if definition is not None and definition != current.definition:
                await db.execute(
                    """INSERT INTO workflow_definitions (workflow_id, version, definition, created_at)
                       VALUES (?, (SELECT MAX(version) + 1 FROM workflow_definitions
                                   WHERE workflow_id = ?), ?, ?)""",
                    (current.id, current.id, dumps(definition), now),
                )
            await db.execute(
                """UPDATE workflows SET name = ?, status = ?, updated_at = ?,
                       revision = revision + 1 WHERE id = ?""",
                (name if name is not None else current.name,
                 status if status is not None else current.status, now, current.id),
            )
            return await self._workflow_by_uuid(db, organization_id, workflow_uuid)

    async def publish_workflow(
        self, organization_id: int, workflow_uuid: str, *, revision: int | None = None
    ) -> Workflow:
        """Make the latest definition the one calls run."""
        now = utcnow()
        async with self._db.transaction() as db:
            current = await self._locked_workflow(db, organization_id, workflow_uuid, revision)
            await db.execute(
                "UPDATE workflow_definitions SET published_at = COALESCE(published_at, ?) WHERE id = ?",
                (now, current.definition_id),
            )
            await db.execute(
                """UPDATE workflows SET status = 'published', published_definition_id = ?,
                       updated_at = ?, revision = revision + 1 WHERE id = ?""",
                (current.definition_id, now, current.id),
            )
            return await self._workflow_by_uuid(db, organization_id, workflow_uuid)

    async def agent_activity(self, organization_id: int, since: str) -> dict[int, AgentActivity]:
        """Per workflow of the organization: when its last run started and runs since `since`."""
        rows = await self._all(
            """SELECT r.workflow_id, MAX(r.created_at) AS last_run_at,
                      SUM(CASE WHEN r.created_at >= ? THEN 1 ELSE 0 END) AS runs_since
               FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id
               WHERE w.organization_id = ? GROUP BY r.workflow_id""",
            (since, organization_id),
        )
        return {
            r["workflow_id"]: AgentActivity(r["last_run_at"], int(r["runs_since"] or 0))
            for r in rows
        }
