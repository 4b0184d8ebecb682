"""Browser sessions and one-time tokens: kept in the database so any instance serves any
request of a signed-in operator, and a token is used once across all of them."""
from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from ..models import User
from ..security import (
    hash_one_time_token,
    hash_session_token,
    new_one_time_token,
    new_session_token,
)
from .base import StoreBase, dumps, iso, utcnow
from .users import user_from


class SessionsStore(StoreBase):
    async def create_session(self, user_id: int, *, seconds: float) -> str:
        """A browser session of `user_id` for `seconds`: the cookie's value, of which only
        the hash is stored (with the session's CSRF token). Expired ones are swept here."""
        token = new_session_token()
        token_hash, csrf_token = hash_session_token(token), secrets.token_urlsafe(32)
        expires_at = iso(datetime.now(UTC) + timedelta(seconds=seconds))
        now = utcnow()
        async with self._db.transaction() as db:
            await db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            await db.execute(
                """INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at)
                   VALUES (?, ?, ?, ?, ?)""",
                (token_hash, user_id, csrf_token, now, expires_at),
            )
        return token

    async def session_user(self, token_hash: str) -> tuple[User, str] | None:
        """The signed-in user and the session's CSRF token, if the session is still valid."""
        row = await self._one(
            """SELECT u.*, s.csrf_token AS s_csrf FROM sessions s JOIN users u ON u.id = s.user_id
               WHERE s.token_hash = ? AND s.expires_at > ?""",
            (token_hash, utcnow()),
        )
        return (user_from(row), row["s_csrf"]) if row else None

    async def delete_session(self, token_hash: str) -> None:
        async with self._db.transaction() as db:
            await db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    async def create_one_time_token(
        self, purpose: str, payload: dict[str, Any], ttl_seconds: float
    ) -> str:
        """A fresh token for `purpose` carrying `payload`, good once within `ttl_seconds`.
        Only its hash is stored; the plaintext exists only in this answer. Expired tokens
        are swept here."""
        token = new_one_time_token()
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=ttl_seconds)
        async with self._db.transaction() as db:
            await db.execute("DELETE FROM one_time_tokens WHERE expires_at <= ?", (iso(now),))
            await db.execute(
                """INSERT INTO one_time_tokens (token_hash, purpose, payload, created_at, expires_at)
                   VALUES (?, ?, ?, ?, ?)""",
                (hash_one_time_token(token), purpose, dumps(payload), iso(now), iso(expires)),
            )
        return token

    async def use_one_time_token(self, purpose: str, token: str) -> dict[str, Any] | None:
        """The payload of a token of `purpose` that is neither used nor expired, and the
        token is used up by the same statement (so of two instances asked at once, one gets
        it); None otherwise (unknown, used, expired or of another purpose). An unknown token
        costs a read, never a write."""
        token_hash = hash_one_time_token(token)
        live = "token_hash = ? AND purpose = ? AND used_at IS NULL AND expires_at > ?"
        if await self._one(
            "SELECT 1 FROM one_time_tokens WHERE " + live, (token_hash, purpose, utcnow())
        ) is None:
            return None
        now = utcnow()
        async with self._db.transaction() as db:
            row = await db.fetchrow(
                "UPDATE one_time_tokens SET used_at = ? WHERE " + live + " RETURNING payload",
                (now, token_hash, purpose, now),
            )
        if row is None:  # used by another request (or process) in the meantime
            return None
        payload = json.loads(row["payload"])
        return payload if isinstance(payload, dict) else None
