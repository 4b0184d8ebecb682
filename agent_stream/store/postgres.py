"""PostgreSQL through an asyncpg pool, for several processes and hosts on one database.

Each write transaction runs on its own pooled connection (READ COMMITTED); what must not
race across processes locks its rows (`Database.for_update`). Migrations are applied under
an advisory lock, so of several instances starting at once exactly one applies them. A lost
server (restarted, failed over, unreachable) shows as `DatabaseUnavailable`; the pool opens
new connections when it answers again, so the process recovers without a restart.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Final

import asyncpg
import asyncpg.exceptions as pg_errors
from asyncpg.pool import PoolConnectionProxy

from ..config import without_credentials
from ..errors import DatabaseUnavailable
from .database import Connection, Database, IntegrityViolation, Row

log = logging.getLogger(__name__)

# pg_advisory_lock key of Agent Stream's migrations (any constant unlikely to collide).
MIGRATION_LOCK_KEY: Final = 0x41_67_53_74  # "AgSt"
# Connections per process: kept open from the start (a burst of calls does not wait for new
# ones) up to the most a burst uses; each call's few statements hold one only briefly.
POOL_SIZES: Final = (10, 30)

# SQLSTATE classes and codes that mean the server cannot take a statement now, not that
# the statement is wrong: connection exceptions (08), insufficient resources (53), operator
# intervention (57: shut down, restarting, statement timeout), a read-only standby (25006)
# and transaction rollbacks a retry resolves (40001 serialization, 40P01 deadlock), a lock
# not available (55P03).
_UNAVAILABLE_CLASSES: Final = ("08", "53", "57")
_UNAVAILABLE_STATES: Final = frozenset({"25006", "40001", "40P01", "55P03"})


@contextmanager
def _translated_errors() -> Iterator[None]:
    try:
        yield
    except pg_errors.IntegrityConstraintViolationError as exc:
        raise IntegrityViolation(str(exc)) from exc
    except pg_errors.PostgresError as exc:
        state = str(getattr(exc, "sqlstate", "") or "")
        if state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES:
            raise DatabaseUnavailable(f"database unavailable: {exc}") from exc
        raise
    except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
        # refused or dropped connections, a pool that cannot get one in time, a connection
        # closed under a statement
        raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}: {exc}") from exc


@functools.lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """The store's `?` placeholders as PostgreSQL's `$1, $2, ...` (none appear in quotes)."""
    count = 0

    def next_number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return re.sub(r"\?", next_number, sql)


def _rowcount(status: str) -> int:
    """Rows a command changed, from its status ("UPDATE 3", "INSERT 0 1", "DELETE 0")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresConnection(Connection):
    def __init__(self, conn: asyncpg.Connection | PoolConnectionProxy) -> None:
        self._conn = conn

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with _translated_errors():
            return list(await self._conn.fetch(numbered(sql), *params))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with _translated_errors():
            return _rowcount(await self._conn.execute(numbered(sql), *params))

    async def script(self, sql: str) -> None:
        """A migration script, as one simple-protocol batch inside the open transaction."""
        with _translated_errors():
            await self._conn.execute(sql)


class PostgresDatabase(Database):
    dialect = "postgresql"
    for_update = " FOR UPDATE"

    def __init__(self, pool: asyncpg.Pool, description: str, busy_timeout: float) -> None:
        self._pool = pool
        self.description = description
        self._busy_timeout = busy_timeout

    @classmethod
    async def open(
        cls, url: str, busy_timeout: float, pool_sizes: tuple[int, int] = POOL_SIZES
    ) -> PostgresDatabase:
        """A pool on `url`; a server that does not answer within `busy_timeout` is a
        `DatabaseUnavailable` naming the host, never the password."""
        with _translated_errors():
            pool = await asyncpg.create_pool(
                url, min_size=pool_sizes[0], max_size=pool_sizes[1], timeout=busy_timeout,
                command_timeout=busy_timeout * 2,
            )
        return cls(pool, without_credentials(url), busy_timeout)

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), self._busy_timeout)
        except TimeoutError:
            self._pool.terminate()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[PoolConnectionProxy]:
        with _translated_errors():
            conn = await self._pool.acquire(timeout=self._busy_timeout)
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._connection() as conn:
            with _translated_errors():
                transaction = conn.transaction()
                await transaction.start()
            try:
                yield PostgresConnection(conn)
            except BaseException:
                with _translated_errors():
                    if not conn.is_closed():
                        await transaction.rollback()
                raise
            with _translated_errors():
                await transaction.commit()

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[Connection]:
        async with self._connection() as conn:
            yield PostgresConnection(conn)

    @asynccontextmanager
    async def migration_lock(self) -> AsyncIterator[Connection]:
        """A session-level advisory lock on one connection; the others wait for it."""
        async with self._connection() as conn:
            with _translated_errors():
                await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
            try:
                yield PostgresConnection(conn)
            finally:
                if not conn.is_closed():
                    await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)

    @asynccontextmanager
    async def migration_transaction(self, db: Connection) -> AsyncIterator[Connection]:
        assert isinstance(db, PostgresConnection)
        async with db._conn.transaction():
            yield db

    async def after_migrations(self, *, sealed_secrets: bool) -> None:
        """Nothing: PostgreSQL databases were never without sealed secrets."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self._connection() as conn:
            return await PostgresConnection(conn).execute(sql, params)

    async def write_returning(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async with self._connection() as conn:
            return await PostgresConnection(conn).fetchrow(sql, params)

    def has_free_slot(self, owner_id: int, over_run_ids: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
        """Migration 5's function: it locks the owner's row before it counts."""
        return "agent_stream_has_free_slot(?, ?::bigint[])", (owner_id, list(over_run_ids))

    def merge_json(self, column: str) -> str:
        # migration 6's function: json in (which keeps key order), text out, as the column holds
        return f"agent_stream_merge_patch({column}::json, ?::json)::text"

    def json_text(self, column: str, key: str) -> str:
        # json, not jsonb: it takes every string our JSON text may hold (\u0000 included)
        return f"({column}::json ->> '{key}')"

    def whole_part(self, expression: str) -> str:
        return f"FLOOR({expression})::bigint"  # a cast alone would round

    async def table_exists(self, name: str) -> bool:
        rows = await self.fetch("SELECT to_regclass(?) IS NOT NULL", (name,))
        return bool(rows and rows[0][0])

