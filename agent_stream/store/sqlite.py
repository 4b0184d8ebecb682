"""SQLite through aiosqlite: one writer connection serialised by a lock (every write is an
explicit `BEGIN IMMEDIATE` transaction, which also serialises writers of other processes)
and one reader connection; WAL lets them run side by side."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Final

import aiosqlite

from ..errors import DatabaseUnavailable
from .database import Connection, Database, IntegrityViolation, Row, placeholders

log = logging.getLogger(__name__)
# aiosqlite logs every statement with its parameters at DEBUG, bearer tokens included:
# its debug output must never be switched on by a verbose root logger.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

# SQLite's result codes for a database that cannot take a statement right now: another
# connection's lock, a full disk, an I/O error, a file it cannot open or that went away,
# no memory. Anything else (no such column, malformed JSON, a constraint) is not the
# database being unavailable but the statement being wrong, and must not be retried.
_UNAVAILABLE_CODES: Final = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_NOMEM,
    sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB,
})


@contextmanager
def _translated_errors() -> Iterator[None]:
    """SQLite's "locked", "disk full", "I/O error", "malformed image" as `DatabaseUnavailable`,
    constraint violations as `IntegrityViolation`; our own mistakes (bad SQL, bad
    parameters) pass unchanged."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise IntegrityViolation(str(exc)) from exc
    except sqlite3.DatabaseError as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None or code & 0xFF not in _UNAVAILABLE_CODES:
            raise
        raise DatabaseUnavailable(f"database unavailable: {exc}") from exc


class SqliteConnection(Connection):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        # fetched in one step: a statement left open across an await would hold the
        # reader's snapshot, and reads sharing it would miss what was committed since
        with _translated_errors():
            return list(await self._db.execute_fetchall(sql, tuple(params)))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with _translated_errors():
            async with self._db.execute(sql, tuple(params)) as cursor:
                return cursor.rowcount

    async def script(self, sql: str) -> None:
        """Statements one by one, inside the open transaction (executescript commits)."""
        for statement in split_statements(sql):
            await self.execute(statement)


class SqliteDatabase(Database):
    dialect = "sqlite"
    for_update = ""

    def __init__(
        self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection,
        busy_timeout: float,
    ) -> None:
        self.path = path
        self.description = f"SQLite {path}"
        self._writer = SqliteConnection(writer)
        self._raw_writer = writer
        self._reader = SqliteConnection(reader)
        self._raw_reader = reader
        self._write_lock = asyncio.Lock()
        self._busy_timeout = busy_timeout

    @classmethod
    async def open(cls, path: Path, busy_timeout: float) -> SqliteDatabase:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await _connect(path, busy_timeout)
        reader = await _connect(path, busy_timeout)
        return cls(path, writer, reader, busy_timeout)

    async def close(self) -> None:
        await self._raw_reader.close()
        await self._raw_writer.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """One explicit write transaction at a time on the writer connection. A database
        that cannot take the write raises `DatabaseUnavailable`, also when earlier writes
        of ours hold the writer too long."""
        try:
            async with asyncio.timeout(self._busy_timeout):
                await self._write_lock.acquire()
        except TimeoutError:
            raise DatabaseUnavailable(
                "database unavailable: earlier writes have waited for it too long"
            ) from None
        try:
            async with self._begun():
                yield self._writer
        finally:
            self._write_lock.release()

    @asynccontextmanager
    async def _begun(self) -> AsyncIterator[None]:
        try:
            # inside the try: a task cancelled while BEGIN waits for another process's
            # lock must still roll back what BEGIN then opens
            await self._writer.execute("BEGIN IMMEDIATE")
            yield
            await self._writer.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise

    async def _rollback(self) -> None:
        """Undo the open transaction; SQLite may already have undone it (a full disk)."""
        try:
            await self._raw_writer.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.debug("rollback: %s", exc)

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[Connection]:
        yield self._reader

    @asynccontextmanager
    async def migration_lock(self) -> AsyncIterator[Connection]:
        """Our writer, unshared; each migration's `BEGIN IMMEDIATE` keeps other processes
        out, and they find the migration applied when they get in."""
        async with self._write_lock:
            yield self._writer

    @asynccontextmanager
    async def migration_transaction(self, db: Connection) -> AsyncIterator[Connection]:
        async with self._begun():
            yield db

    async def after_migrations(self, *, sealed_secrets: bool) -> None:
        """What plaintext secrets a database held must not linger in free pages."""
        if sealed_secrets:
            await self._writer.execute("VACUUM")
            await self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self.transaction() as db:
            return await db.execute(sql, params)

    async def write_returning(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async with self.transaction() as db:
            return await db.fetchrow(sql, params)

    def has_free_slot(self, owner_id: int, over_run_ids: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
        """A count in the statement: exact, since SQLite runs one write at a time."""
        over = f"AND r.id NOT IN ({placeholders(over_run_ids)})" if over_run_ids else ""
        limit = "(SELECT max_concurrent_calls FROM users WHERE id = ?)"
        return f"""{limit} IS NULL OR (
            SELECT COUNT(*) FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id
            WHERE w.owner_user_id = ? AND r.state IN ('pending', 'running') {over}) < {limit}""", (
            owner_id, owner_id, *over_run_ids, owner_id)

    def merge_json(self, column: str) -> str:
        return f"json_patch({column}, ?)"

    def json_text(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def whole_part(self, expression: str) -> str:
        return f"CAST({expression} AS INTEGER)"  # truncates: the floor of what is not negative

    async def table_exists(self, name: str) -> bool:
        rows = await self.fetch("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return bool(rows)

    async def user_version(self) -> int:
        """The migration number older versions kept in `PRAGMA user_version`."""
        row = await self._writer.fetchrow("PRAGMA user_version")
        return int(row[0]) if row else 0


def split_statements(script: str) -> list[str]:
    """Split a SQL script into statements (SQLite's own completeness test)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


async def _connect(path: Path, busy_timeout: float) -> aiosqlite.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves) with our pragmas."""
    db = await aiosqlite.connect(path, isolation_level=None)
    db.row_factory = aiosqlite.Row
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA foreign_keys = ON")
    await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    await db.execute("PRAGMA synchronous = NORMAL")
    return db
