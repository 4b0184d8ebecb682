"""Telephony configurations: one provider account each, secret fields sealed at rest."""
from __future__ import annotations

import json
from typing import Any

from ..errors import Conflict, NotFound
from ..models import ConfigInput, TelephonyConfig
from .base import StoreBase, check_revision, dumps, from_row, utcnow
from .database import Connection, IntegrityViolation, Row


class TelephonyStore(StoreBase):
    async def create_telephony_config(
        self, organization_id: int, provider: str, given: ConfigInput, *, one_per_account: bool = False
    ) -> TelephonyConfig:
        """A new configuration; its secrets are sealed before they reach the database.
        `one_per_account`: a second one naming the same account is a Conflict."""
        now = utcnow()
        account_id, secrets = given.account_id or "", given.secrets
        try:
            async with self._db.transaction() as db:
                config_id = await db.fetchval(
                    """INSERT INTO telephony_configurations (organization_id, provider, name,
                           account_id, account_key, fields, secrets, from_numbers, created_at,
                           updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                    (organization_id, provider, given.name or "", account_id,
                     account_id if one_per_account else None, dumps(given.fields),
                     self._box.seal(secrets) if secrets else "", dumps(given.from_numbers or []),
                     now, now),
                )
                return await self._telephony_by_id(db, organization_id, config_id)
        except IntegrityViolation as exc:
            raise Conflict(f"a {provider} configuration for {account_id} already exists") from exc

    async def list_telephony_configs(self, organization_id: int) -> list[TelephonyConfig]:
        rows = await self._all(
            "SELECT * FROM telephony_configurations WHERE organization_id = ? ORDER BY id",
            (organization_id,),
        )
        return [self._telephony(r) for r in rows]

    async def get_telephony_config(self, organization_id: int, config_id: int) -> TelephonyConfig:
        return await self._telephony_by_id(None, organization_id, config_id)

    async def _telephony_by_id(
        self, db: Connection | None, organization_id: int, config_id: int, *, lock: bool = False
    ) -> TelephonyConfig:
        row = await self._one(
            "SELECT * FROM telephony_configurations WHERE id = ? AND organization_id = ?"
            + (self._db.for_update if lock else ""),
            (config_id, organization_id),
            db=db,
        )
        if row is None:
            raise NotFound("telephony configuration not found")
        return self._telephony(row)

    def _telephony(self, row: Row) -> TelephonyConfig:
        return from_row(
            TelephonyConfig, row,
            fields=json.loads(row["fields"]),
            secrets=self._box.open(row["secrets"]),
            from_numbers=json.loads(row["from_numbers"]),
        )

    async def find_telephony_configs(
        self, organization_id: int, provider: str, *, account_id: str | None = None
    ) -> list[TelephonyConfig]:
        """An organization's configurations of one provider (naming `account_id`, if given)."""
        sql = "SELECT * FROM telephony_configurations WHERE organization_id = ? AND provider = ?"
        params: tuple[Any, ...] = (organization_id, provider)
        if account_id is not None:
            sql += " AND account_id = ?"
            params += (account_id,)
        return [self._telephony(r) for r in await self._all(sql + " ORDER BY id", params)]

    async def update_telephony_config(
        self,
        organization_id: int,
        config_id: int,
        given: ConfigInput,
        *,
        one_per_account: bool = False,
        revision: int | None = None,
    ) -> TelephonyConfig:
        """Change what is given: `fields` and `secrets` are merged into the stored ones (a
        secret is only replaced when a new one is given). With `revision`, a configuration
        changed since it was read at that revision is a Conflict."""
        name, fields, secrets, from_numbers = given.name, given.fields, given.secrets, given.from_numbers
        async with self._db.transaction() as db:
            current = await self._telephony_by_id(db, organization_id, config_id, lock=True)
            check_revision(current.revision, revision, "this configuration")
            account = current.account_id if given.account_id is None else given.account_id
            try:
                await db.execute(
                    """UPDATE telephony_configurations SET name = ?, account_id = ?,
                           account_key = ?, fields = ?, secrets = COALESCE(?, secrets),
                           from_numbers = ?, updated_at = ?, revision = revision + 1
                       WHERE id = ?""",
                    (name if name is not None else current.name, account,
                     account if one_per_account else None,
                     dumps(current.fields | fields),
                     self._box.seal(current.secrets | secrets) if secrets else None,
                     dumps(current.from_numbers if from_numbers is None else from_numbers),
                     utcnow(), config_id),
                )
            except IntegrityViolation as exc:
                raise Conflict(
                    f"a {current.provider} configuration for {account} already exists"
                ) from exc
            return await self._telephony_by_id(db, organization_id, config_id)

    async def delete_telephony_config(
        self, organization_id: int, config_id: int, *, revision: int | None = None
    ) -> None:
        """Delete; with `revision`, a configuration changed since it was read is a Conflict."""
        async with self._db.transaction() as db:
            if revision is not None:
                current = await self._telephony_by_id(db, organization_id, config_id, lock=True)
                check_revision(current.revision, revision, "this configuration")
            deleted = await db.execute(
                "DELETE FROM telephony_configurations WHERE id = ? AND organization_id = ?",
                (config_id, organization_id),
            )
            if deleted == 0:
                raise NotFound("telephony configuration not found")
