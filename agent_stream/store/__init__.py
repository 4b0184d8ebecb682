"""All SQL of Agent Stream: a store returning dataclasses, on SQLite or PostgreSQL.

`Store` gathers one part per aggregate (users.py, sessions.py, workflows.py, telephony.py,
runs.py, instances.py, overview.py, webhooks.py); database.py is the seam between their SQL
and the two databases (sqlite.py, postgres.py); migrations.py brings either to the latest
schema.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..config import DB_BUSY_TIMEOUT_SECONDS, Settings, is_postgres_url
from ..crypto import KEY_ENV, KEY_FILE_NAME, SecretBox, SecretKey, SecretKeyError, load_secret_key
from .base import ACTIVE_STATES, utcnow
from .database import Database
from .instances import InstancesStore
from .migrations import LATEST_VERSION, MIGRATIONS, migrate
from .overview import OverviewStore
from .postgres import POOL_SIZES, PostgresDatabase
from .runs import RUN_NAME_PREFIX
from .sessions import SessionsStore
from .sqlite import SqliteDatabase
from .telephony import TelephonyStore
from .users import UsersStore
from .webhooks import WebhooksStore
from .workflows import WorkflowsStore

__all__ = [
    "ACTIVE_STATES", "LATEST_VERSION", "MIGRATIONS", "RUN_NAME_PREFIX", "Store",
    "open_store", "utcnow",
]

log = logging.getLogger(__name__)


class Store(
    UsersStore, SessionsStore, WorkflowsStore, TelephonyStore, InstancesStore, OverviewStore,
    WebhooksStore,
):
    """The database of one Agent Stream process."""

    @classmethod
    async def open(
        cls,
        target: Path | str,
        *,
        busy_timeout: float = DB_BUSY_TIMEOUT_SECONDS,
        secret_key: SecretKey | None = None,
        instance_id: str | None = None,
        pool_sizes: tuple[int, int] = POOL_SIZES,
    ) -> Store:
        """Open (creating if needed) and migrate the database at `target`: a SQLite file's
        path or a `postgresql://` URL. `busy_timeout` is how long a statement waits for
        another writer (and how long our own writes may queue behind each other).
        `secret_key` opens the stored secrets (for SQLite, by default the key file next to
        the database, as the server uses; PostgreSQL needs it given); a key that is not the
        one they were stored with is a SecretKeyError. `instance_id` names the serving
        process whose runs this store creates."""
        database: Database
        if is_postgres_url(target):
            if secret_key is None:
                raise SecretKeyError(
                    f"{KEY_ENV} is required with PostgreSQL: every instance must seal and open "
                    f"secrets with the same key (python app.py new-secret-key prints one)"
                )
            key = secret_key
            database = await PostgresDatabase.open(str(target), busy_timeout, pool_sizes)
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            key = secret_key or load_secret_key(None, path.parent / KEY_FILE_NAME)
            database = await SqliteDatabase.open(path, busy_timeout)
        store = cls(database, SecretBox(key), instance_id)
        try:
            await store._check_secret_key()
            await migrate(database, store._box, now=utcnow())
            await store._remember_secret_key()
        except BaseException:
            await store.close()
            if key.created:  # never leave a fresh key next to secrets it cannot open
                await asyncio.to_thread(Path(key.source).unlink, missing_ok=True)
            raise
        return store

    @property
    def description(self) -> str:
        """Which database this is, for logs: never a password."""
        return self._db.description

    async def close(self) -> None:
        await self._db.close()

    async def _check_secret_key(self) -> None:
        """A database that already holds secrets must be opened with their key."""
        if not await self._db.table_exists("server_meta"):
            return
        row = await self._one("SELECT value FROM server_meta WHERE key = 'secret_key_check'")
        if row is not None:
            self._box.verify(row["value"])

    async def _remember_secret_key(self) -> None:
        async with self._db.transaction() as db:
            await db.execute(
                """INSERT INTO server_meta (key, value) VALUES ('secret_key_check', ?)
                   ON CONFLICT DO NOTHING""",
                (self._box.check_value(),),
            )

    async def check_ready(self) -> None:
        """The database answers a read and takes a write, as a call starting now needs both
        (`DatabaseUnavailable` when it does not within the busy timeout)."""
        await self._one("SELECT 1")
        async with self._db.transaction():
            pass


async def open_store(settings: Settings, *, instance_id: str | None = None) -> Store:
    """The database of `settings`, with the secret key that opens its secrets (from
    AGENT_STREAM_SECRET_KEY, else the key file next to a SQLite database)."""
    target = settings.db_url or settings.db_path
    key = None
    if settings.secret_key or not is_postgres_url(target):
        key = load_secret_key(settings.secret_key, settings.secret_key_file)
    return await Store.open(
        target, busy_timeout=settings.db_busy_timeout, secret_key=key, instance_id=instance_id,
        pool_sizes=settings.db_pool_sizes,
    )
