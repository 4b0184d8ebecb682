"""The seam between the store's SQL and the database it runs on: SQLite or PostgreSQL.

The store writes one dialect: `?` placeholders, `INSERT ... RETURNING id`, `ON CONFLICT`,
`CASE`, text timestamps and text JSON. What differs is behind this interface: how a
write transaction is taken (SQLite's one writer behind a lock and `BEGIN IMMEDIATE`;
a pooled PostgreSQL connection whose rows are locked with `SELECT ... FOR UPDATE`), how a
JSON field is read in SQL, which errors mean "the database cannot take this now"
(`DatabaseUnavailable`, retried by callers) and which mean "this statement is wrong".
"""
from __future__ import annotations

import abc
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol


def placeholders(values: Sequence[Any]) -> str:
    """`?, ?, ?` for an `IN (...)` of `values` (each one a parameter, never SQL text)."""
    return ", ".join("?" * len(values))


class Row(Protocol):
    """A result row: by column name or position (aiosqlite.Row and asyncpg.Record both)."""

    def __getitem__(self, key: str | int, /) -> Any: ...

    def keys(self) -> Any: ...


class IntegrityViolation(Exception):
    """A statement broke a constraint (a unique key taken, a row referenced): the caller's
    input conflicts with what is stored; never retried."""


class Connection(abc.ABC):
    """A connection inside one transaction (or the reader outside any)."""

    @abc.abstractmethod
    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row, fetched in one step."""

    @abc.abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""

    @abc.abstractmethod
    async def script(self, sql: str) -> None:
        """A migration script of several statements, inside the open transaction."""

    async def fetchrow(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetch(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row (None when there is no row)."""
        row = await self.fetchrow(sql, params)
        return row[0] if row is not None else None


class Database(abc.ABC):
    """One database, as the store uses it."""

    # "sqlite" or "postgresql": which migration scripts apply.
    dialect: str
    # Appended to a SELECT that reads a row the transaction will write on the strength of
    # what it read (a quota, a compare-and-set): empty where writes are serialised anyway.
    for_update: str
    # Which database this is, for logs and messages: never a password.
    description: str

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises.
        Reads on its connection see its own writes."""

    @abc.abstractmethod
    def reader(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for reads outside any write transaction."""

    @abc.abstractmethod
    def migration_lock(self) -> AbstractAsyncContextManager[Connection]:
        """Held while migrations run, so one process applies them when several start at
        once; the connection it yields runs the migration transactions."""

    @abc.abstractmethod
    def migration_transaction(self, db: Connection) -> AbstractAsyncContextManager[Connection]:
        """One migration's transaction on the connection `migration_lock` gave."""

    @abc.abstractmethod
    async def after_migrations(self, *, sealed_secrets: bool) -> None:
        """Housekeeping once migrations ran (SQLite vacuums away plaintext secrets)."""

    @abc.abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One write statement on its own (its own transaction); the rows it changed. One
        round trip on PostgreSQL, where a transaction costs two more."""

    @abc.abstractmethod
    async def write_returning(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """One write statement on its own, with its RETURNING row (None: it wrote none)."""

    @abc.abstractmethod
    def has_free_slot(self, owner_id: int, over_run_ids: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
        """A condition (and its parameters) that holds while the owner has a free
        concurrent-call slot, exact across every process when a new run's INSERT is made on
        it alone. Runs in `over_run_ids` are over, though their end is not written yet."""

    @abc.abstractmethod
    def merge_json(self, column: str) -> str:
        """SQL for the JSON text of `column` with the JSON text of the next parameter merged
        into it (RFC 7396: nested objects key by key, a null deleting its key)."""

    @abc.abstractmethod
    def json_text(self, column: str, key: str) -> str:
        """SQL for the text of `key` in the JSON object stored in `column`."""

    @abc.abstractmethod
    def whole_part(self, expression: str) -> str:
        """SQL for the whole part of `expression`, a number that is not negative (its
        floor), as an integer."""

    @abc.abstractmethod
    async def table_exists(self, name: str) -> bool: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self.reader() as db:
            return await db.fetch(sql, params)
