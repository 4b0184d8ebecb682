"""Organizations, users, their quotas and API keys, the first-run claim and sign-in throttling."""
from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Final

from ..errors import Conflict, NotFound
from ..models import ApiKey, Organization, OrgApiKey, User
from ..security import hash_api_key, hash_password, new_api_key, verify_password
from .base import StoreBase, check_revision, from_row, iso, utcnow
from .database import Connection, IntegrityViolation, Row

# Verified against for unknown emails; its password is random and never stored anywhere.
_DUMMY_PASSWORD_HASH: Final = hash_password(secrets.token_urlsafe(16))
# server_meta's key that the first-run page claims, once.
_FIRST_RUN_KEY: Final = "first_run_claimed"


def user_from(row: Row) -> User:
    return from_row(User, row, is_admin=bool(row["is_admin"]))


def _api_key(row: Row) -> ApiKey:
    return from_row(ApiKey, row)


class UsersStore(StoreBase):
    async def count_users(self) -> int:
        row = await self._one("SELECT COUNT(*) FROM users")
        return int(row[0]) if row else 0

    async def get_or_create_organization(self, name: str) -> Organization:
        async with self._db.transaction() as db:
            row = await self._one("SELECT * FROM organizations WHERE name = ?", (name,), db=db)
            if row is None:
                now = utcnow()
                new_id = await db.fetchval(
                    "INSERT INTO organizations (name, created_at) VALUES (?, ?) RETURNING id",
                    (name, now),
                )
                return Organization(new_id, name, now)
        return Organization(row["id"], row["name"], row["created_at"])

    async def create_user(
        self,
        *,
        organization_id: int,
        email: str,
        password: str,
        is_admin: bool = False,
        monthly_minutes_limit: int | None = None,
        max_concurrent_calls: int | None = None,
    ) -> User:
        password_hash = await asyncio.to_thread(hash_password, password)
        try:
            async with self._db.transaction() as db:
                user_id = await db.fetchval(
                    """INSERT INTO users (organization_id, email, password_hash, is_admin,
                           monthly_minutes_limit, max_concurrent_calls, created_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id""",
                    (organization_id, email.strip(), password_hash, int(is_admin),
                     monthly_minutes_limit, max_concurrent_calls, utcnow()),
                )
                return await self._user_by_id(db, user_id)
        except IntegrityViolation as exc:
            raise Conflict(f"a user with email {email!r} already exists") from exc

    async def get_user(self, user_id: int) -> User:
        return await self._user_by_id(None, user_id)

    async def _user_by_id(self, db: Connection | None, user_id: int) -> User:
        row = await self._one("SELECT * FROM users WHERE id = ?", (user_id,), db=db)
        if row is None:
            raise NotFound("user not found")
        return user_from(row)

    async def get_user_by_email(self, email: str) -> User:
        row = await self._one("SELECT * FROM users WHERE lower(email) = lower(?)", (email.strip(),))
        if row is None:
            raise NotFound(f"no user with email {email!r}")
        return user_from(row)

    async def check_password(self, email: str, password: str) -> User | None:
        """The user, if the password is right. An unknown email costs the same scrypt as a
        known one, so answer times do not tell which emails exist."""
        row = await self._one("SELECT * FROM users WHERE lower(email) = lower(?)", (email.strip(),))
        stored = row["password_hash"] if row is not None else _DUMMY_PASSWORD_HASH
        if not await asyncio.to_thread(verify_password, password, stored) or row is None:
            return None
        return user_from(row)

    async def create_api_key(self, user_id: int, name: str) -> tuple[ApiKey, str]:
        """Return the stored key and the plaintext, which exists only in this answer."""
        plaintext = new_api_key()
        async with self._db.transaction() as db:
            row = await db.fetchrow(
                """INSERT INTO api_keys (user_id, name, key_prefix, key_hash, created_at)
                   VALUES (?, ?, ?, ?, ?) RETURNING *""",
                (user_id, name, plaintext[:8], hash_api_key(plaintext), utcnow()),
            )
        assert row is not None
        return _api_key(row), plaintext

    async def user_for_api_key(self, plaintext: str) -> User | None:
        row = await self._one(
            """SELECT u.* FROM api_keys k JOIN users u ON u.id = k.user_id
               WHERE k.key_hash = ? AND k.revoked_at IS NULL""",
            (hash_api_key(plaintext),),
        )
        return user_from(row) if row else None

    async def record_login_failure(self, email: str, ip: str) -> None:
        """Remember a failed sign-in; failures older than a day are no longer needed."""
        now = datetime.now(UTC)
        async with self._db.transaction() as db:
            await db.execute(
                "DELETE FROM login_failures WHERE created_at < ?", (iso(now - timedelta(days=1)),)
            )
            await db.execute(
                "INSERT INTO login_failures (email, ip, created_at) VALUES (?, ?, ?)",
                (email.strip(), ip, iso(now)),
            )

    async def login_failures_since(self, email: str, ip: str, since: str) -> tuple[int, str | None]:
        """How many sign-ins failed for this email from this address since `since`, and the
        oldest of them (the throttle lifts when it leaves the window)."""
        row = await self._one(
            """SELECT COUNT(*), MIN(created_at) FROM login_failures
               WHERE lower(email) = lower(?) AND ip = ? AND created_at >= ?""",
            (email.strip(), ip, since),
        )
        return (int(row[0]), row[1]) if row else (0, None)

    async def clear_login_failures(self, email: str, ip: str) -> None:
        async with self._db.transaction() as db:
            await db.execute(
                "DELETE FROM login_failures WHERE lower(email) = lower(?) AND ip = ?",
                (email.strip(), ip),
            )

    async def claim_first_run(self, *, organization_name: str, email: str, password: str) -> User:
        """The first-run page: organization and admin in one transaction, only while the
        database has no user at all (Conflict otherwise, so it can be claimed once, also
        when two instances are asked at the same moment: the claim is one unique row)."""
        password_hash = await asyncio.to_thread(hash_password, password)
        now = utcnow()
        async with self._db.transaction() as db:
            claimed = await db.execute(
                "INSERT INTO server_meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (_FIRST_RUN_KEY, now),
            )
            if not claimed or await db.fetchval("SELECT COUNT(*) FROM users"):
                raise Conflict("this Agent Stream is already set up")
            org_id = await db.fetchval(
                "INSERT INTO organizations (name, created_at) VALUES (?, ?) RETURNING id",
                (organization_name.strip(), now),
            )
            user_id = await db.fetchval(
                """INSERT INTO users (organization_id, email, password_hash, is_admin, created_at)
                   VALUES (?, ?, ?, 1, ?) RETURNING id""",
                (org_id, email.strip(), password_hash, now),
            )
            return await self._user_by_id(db, user_id)

    async def get_organization(self, organization_id: int) -> Organization:
        row = await self._one("SELECT * FROM organizations WHERE id = ?", (organization_id,))
        if row is None:
            raise NotFound("organization not found")
        return Organization(row["id"], row["name"], row["created_at"])

    async def list_users(self, organization_id: int) -> list[User]:
        rows = await self._all(
            "SELECT * FROM users WHERE organization_id = ? ORDER BY id", (organization_id,)
        )
        return [user_from(r) for r in rows]

    async def get_org_user(self, organization_id: int, user_id: int) -> User:
        user = await self.get_user(user_id)
        if user.organization_id != organization_id:
            raise NotFound("user not found")
        return user

    async def set_user_quotas(
        self,
        organization_id: int,
        user_id: int,
        *,
        monthly_minutes_limit: int | None,
        max_concurrent_calls: int | None,
        revision: int | None = None,
    ) -> User:
        """Set both limits; None means unlimited. With `revision` (what the form was read
        at), a user changed since is a Conflict rather than overwritten."""
        async with self._db.transaction() as db:
            row = await db.fetchrow(
                "SELECT revision FROM users WHERE id = ? AND organization_id = ?" + self._db.for_update,
                (user_id, organization_id),
            )
            if row is None:
                raise NotFound("user not found")
            check_revision(row["revision"], revision, "this user")
            await db.execute(
                """UPDATE users SET monthly_minutes_limit = ?, max_concurrent_calls = ?,
                       revision = revision + 1 WHERE id = ?""",
                (monthly_minutes_limit, max_concurrent_calls, user_id),
            )
            return await self._user_by_id(db, user_id)

    async def list_api_keys(self, organization_id: int) -> list[OrgApiKey]:
        """Every key of the organization's users, newest first, with its owner's email."""
        rows = await self._all(
            """SELECT k.*, u.email AS owner_email FROM api_keys k JOIN users u ON u.id = k.user_id
               WHERE u.organization_id = ? ORDER BY k.id DESC""",
            (organization_id,),
        )
        return [OrgApiKey(_api_key(r), r["owner_email"]) for r in rows]

    async def revoke_api_key(self, organization_id: int, key_id: int) -> None:
        """From now on `user_for_api_key` no longer accepts the key."""
        async with self._db.transaction() as db:
            changed = await db.execute(
                """UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?)
                   WHERE id = ? AND user_id IN (SELECT id FROM users WHERE organization_id = ?)""",
                (utcnow(), key_id, organization_id),
            )
            if changed == 0:
                raise NotFound("API key not found")

