"""All SQL of Agent Stream: an aiosqlite store returning dataclasses.

One writer connection serialised by a lock (every multi-statement write is an explicit
`BEGIN IMMEDIATE` transaction) and one reader connection; WAL lets them run side by side.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import sqlite3
import uuid as uuidlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import aiosqlite

from .config import DB_BUSY_TIMEOUT_SECONDS, Settings
from .crypto import KEY_FILE_NAME, SecretBox, SecretKey, load_secret_key
from .errors import Conflict, DatabaseUnavailable, NotFound, QuotaExceeded
from .models import (
    AgentActivity,
    ApiKey,
    ConfigInput,
    Organization,
    OrgApiKey,
    Rejection,
    Run,
    TelephonyConfig,
    TranscriptLine,
    User,
    Workflow,
)
from .security import (
    hash_api_key,
    hash_one_time_token,
    hash_password,
    hash_session_token,
    new_api_key,
    new_one_time_token,
    new_session_token,
    verify_password,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger(__name__)
# aiosqlite logs every statement with its parameters at DEBUG, bearer tokens included:
# its debug output must never be switched on by a verbose root logger.
logging.getLogger("aiosqlite").setLevel(logging.INFO)

SCHEMA_PATH: Final = Path(__file__).resolve().parent.parent / "schema.sql"
RUN_NAME_PREFIX: Final = "WR-AGS-"
# A run in these states is a live call's (of this process or another).
ACTIVE_STATES: Final = ("pending", "running")
# A model the store builds from rows (`_from_row`).
_Record = TypeVar("_Record", bound="DataclassInstance")
# Verified against for unknown emails; its password is random and never stored anywhere.
_DUMMY_PASSWORD_HASH: Final = hash_password(secrets.token_urlsafe(16))


Migration = Callable[[aiosqlite.Connection, SecretBox], Awaitable[None]]


async def _apply_schema(db: aiosqlite.Connection, box: SecretBox) -> None:
    """schema.sql, which is always the whole current schema (CREATE ... IF NOT EXISTS)."""
    for statement in split_statements(SCHEMA_PATH.read_text()):
        await db.execute(statement)


async def _configurations_of_every_provider(db: aiosqlite.Connection, box: SecretBox) -> None:
    """Telephony configurations for every provider: the account a stream names in one
    column, the other fields as JSON, the secret ones encrypted. The rows of the table
    that only knew Cloudonix domains move over with their bearer tokens sealed."""
    columns = {row[1] for row in await db.execute_fetchall("PRAGMA table_info(telephony_configurations)")}
    legacy = "domain_id" in columns
    if legacy:
        await db.execute("ALTER TABLE telephony_configurations RENAME TO telephony_configurations_v2")
    await _apply_schema(db, box)
    if not legacy:
        return
    for row in await db.execute_fetchall("SELECT * FROM telephony_configurations_v2"):
        fields = {"domain_id": row["domain_id"]}
        if row["application_name"]:
            fields["application_name"] = row["application_name"]
        sealed = box.seal({"bearer_token": row["bearer_token"]}) if row["bearer_token"] else ""
        await db.execute(
            """INSERT INTO telephony_configurations (id, organization_id, provider, name,
                   account_id, account_key, fields, secrets, from_numbers, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (row["id"], row["organization_id"], row["provider"], row["name"], row["domain_id"],
             row["domain_id"], _json(fields), sealed, row["from_numbers"], row["created_at"],
             row["updated_at"]),
        )
    await db.execute("DROP TABLE telephony_configurations_v2")


# The version from which provider secrets are stored encrypted (migration 3).
SECRETS_SEALED_AT_VERSION: Final = 3

# Numbered migrations: entry N-1 brings the database to user_version N. A migration that
# only adds tables or indexes re-applies schema.sql; changing a table is code of its own.
MIGRATIONS: Final[list[Migration]] = [
    _apply_schema,  # 1: the service's tables
    _apply_schema,  # 2: the admin's sessions and login_failures tables
    _configurations_of_every_provider,  # 3: every provider; secrets encrypted at rest
]


def split_statements(script: str) -> list[str]:
    """Split a SQL script so it can run inside our transaction (executescript commits)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


def utcnow() -> str:
    """Timestamps are ISO 8601 UTC text, comparable as strings."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _iso(moment: datetime) -> str:
    """A moment as stored: ISO 8601 UTC text, like `utcnow`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def month_start(now: datetime | None = None) -> str:
    """Start of the current UTC month, for the monthly minutes quota."""
    now = now or datetime.now(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).isoformat(
        timespec="milliseconds"
    )


_WORKFLOW_SELECT: Final = """
    SELECT w.*, d.id AS d_id, d.version AS d_version, d.definition AS d_definition,
           p.version AS p_version, p.definition AS p_definition
    FROM workflows w
    JOIN workflow_definitions d ON d.id = (
        SELECT id FROM workflow_definitions WHERE workflow_id = w.id ORDER BY version DESC LIMIT 1)
    LEFT JOIN workflow_definitions p ON p.id = w.published_definition_id
"""

_RUN_SELECT: Final = """
    SELECT r.*, w.uuid AS workflow_uuid, w.organization_id AS organization_id
    FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id
"""


def _from_row(cls: type[_Record], row: aiosqlite.Row, **decoded: Any) -> _Record:
    """A model from a row: each field from the column of its name, unless given `decoded`
    (JSON, a renamed column, a flag)."""
    names = (f.name for f in dataclasses.fields(cls))
    return cls(**{name: decoded[name] if name in decoded else row[name] for name in names})


def _workflow(row: aiosqlite.Row) -> Workflow:
    return _from_row(
        Workflow, row,
        version=row["d_version"],
        published_version=row["p_version"],
        definition=json.loads(row["d_definition"]),
        published_definition=json.loads(row["p_definition"]) if row["p_definition"] else None,
        definition_id=row["d_id"],
    )


def _user(row: aiosqlite.Row) -> User:
    return _from_row(User, row, is_admin=bool(row["is_admin"]))


def _api_key(row: aiosqlite.Row) -> ApiKey:
    return _from_row(ApiKey, row)


def _run(row: aiosqlite.Row, transcript: list[TranscriptLine] | None = None) -> Run:
    return _from_row(
        Run, row,
        initial_context=json.loads(row["initial_context"]),
        gathered_context=json.loads(row["gathered_context"]),
        logs=json.loads(row["logs"]),
        transcript=transcript or [],
    )


class Store:
    """The database of one Agent Stream process."""

    def __init__(
        self,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        *,
        busy_timeout: float,
        secret_box: SecretBox,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._busy_timeout = busy_timeout
        self._box = secret_box

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        busy_timeout: float = DB_BUSY_TIMEOUT_SECONDS,
        secret_key: SecretKey | None = None,
    ) -> Store:
        """Open (creating if needed) and migrate the database at `path`. `busy_timeout` is
        how long a statement waits for another process's write lock before giving up (and
        how long our own writes may queue behind each other). `secret_key` opens the stored
        secrets (by default the key file next to the database, as the server uses); a key
        that is not the one they were stored with is a SecretKeyError."""
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secret_key or load_secret_key(None, path.parent / KEY_FILE_NAME)
        writer = await _connect(path, busy_timeout)
        reader = await _connect(path, busy_timeout)
        store = cls(writer, reader, busy_timeout=busy_timeout, secret_box=SecretBox(key))
        try:
            await store._check_secret_key()
            await store._migrate()
            await store._remember_secret_key()
        except BaseException:
            await store.close()
            if key.created:  # never leave a fresh key next to secrets it cannot open
                await asyncio.to_thread(Path(key.source).unlink, missing_ok=True)
            raise
        return store

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()

    async def _check_secret_key(self) -> None:
        """A database that already holds secrets must be opened with their key."""
        tables = await self._all("SELECT name FROM sqlite_master WHERE name = 'server_meta'")
        if not tables:
            return
        row = await self._one("SELECT value FROM server_meta WHERE key = 'secret_key_check'")
        if row is not None:
            self._box.verify(row["value"])

    async def _remember_secret_key(self) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT OR IGNORE INTO server_meta (key, value) VALUES ('secret_key_check', ?)",
                (self._box.check_value(),),
            )

    async def _migrate(self) -> None:
        async with self._write_lock:
            version = await _scalar(self._writer, "PRAGMA user_version")
            sealing = version < SECRETS_SEALED_AT_VERSION <= len(MIGRATIONS)
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                await self._writer.execute("BEGIN IMMEDIATE")
                try:
                    await migration(self._writer, self._box)
                    await self._writer.execute(f"PRAGMA user_version = {number}")
                    await self._writer.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise
                log.info("database migrated to version %d", number)
            if sealing:  # what plaintext secrets a database held must not linger in free pages
                await self._writer.execute("VACUUM")
                await self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One explicit write transaction at a time on the writer connection. Reads inside
        it see its own writes. A database that cannot take the write raises
        `DatabaseUnavailable`, also when earlier writes of ours hold the writer too long."""
        try:
            async with asyncio.timeout(self._busy_timeout):
                await self._write_lock.acquire()
        except TimeoutError:
            raise DatabaseUnavailable(
                "database unavailable: earlier writes have waited for it too long"
            ) from None
        try:
            with _unavailable_on_error():
                try:
                    # inside the try: a task cancelled while BEGIN waits for another
                    # process's lock must still roll back what BEGIN then opens
                    await self._writer.execute("BEGIN IMMEDIATE")
                    yield self._writer
                    await self._writer.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise
        finally:
            self._write_lock.release()

    async def _rollback(self) -> None:
        """Undo the open transaction; SQLite may already have undone it (a full disk)."""
        try:
            await self._writer.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.debug("rollback: %s", exc)

    async def _one(
        self, sql: str, params: tuple[Any, ...] = (), *, db: aiosqlite.Connection | None = None
    ) -> aiosqlite.Row | None:
        """The first row, read on `db` (the open transaction) or the reader connection."""
        rows = await self._all(sql, params, db=db)
        return rows[0] if rows else None

    async def _all(
        self, sql: str, params: tuple[Any, ...] = (), *, db: aiosqlite.Connection | None = None
    ) -> list[aiosqlite.Row]:
        """Every row, fetched in one step: a statement left open across an await would hold
        the reader's snapshot, and reads sharing it would miss what was committed since."""
        with _unavailable_on_error():
            return list(await (db or self._reader).execute_fetchall(sql, params))

    async def check_ready(self) -> None:
        """The database answers a read and takes a write, as a call starting now needs both
        (`DatabaseUnavailable` when it does not within the busy timeout)."""
        await self._one("SELECT 1")
        async with self._transaction():
            pass

    # -- organizations, users, API keys -------------------------------------------------

    async def count_users(self) -> int:
        row = await self._one("SELECT COUNT(*) FROM users")
        return row[0] if row else 0

    async def get_or_create_organization(self, name: str) -> Organization:
        async with self._transaction() as db:
            row = await self._one("SELECT * FROM organizations WHERE name = ?", (name,), db=db)
            if row is None:
                now = utcnow()
                cur = await db.execute(
                    "INSERT INTO organizations (name, created_at) VALUES (?, ?)", (name, now)
                )
                return Organization(cur.lastrowid or 0, name, now)
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
            async with self._transaction() as db:
                cur = await db.execute(
                    """INSERT INTO users (organization_id, email, password_hash, is_admin,
                           monthly_minutes_limit, max_concurrent_calls, created_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?)""",
                    (organization_id, email.strip(), password_hash, int(is_admin),
                     monthly_minutes_limit, max_concurrent_calls, utcnow()),
                )
                return await self._user_by_id(db, cur.lastrowid or 0)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"a user with email {email!r} already exists") from exc

    async def get_user(self, user_id: int) -> User:
        return await self._user_by_id(None, user_id)

    async def _user_by_id(self, db: aiosqlite.Connection | None, user_id: int) -> User:
        row = await self._one("SELECT * FROM users WHERE id = ?", (user_id,), db=db)
        if row is None:
            raise NotFound("user not found")
        return _user(row)

    async def get_user_by_email(self, email: str) -> User:
        row = await self._one("SELECT * FROM users WHERE email = ?", (email.strip(),))
        if row is None:
            raise NotFound(f"no user with email {email!r}")
        return _user(row)

    async def check_password(self, email: str, password: str) -> User | None:
        """The user, if the password is right. An unknown email costs the same scrypt as a
        known one, so answer times do not tell which emails exist."""
        row = await self._one("SELECT * FROM users WHERE email = ?", (email.strip(),))
        stored = row["password_hash"] if row is not None else _DUMMY_PASSWORD_HASH
        if not await asyncio.to_thread(verify_password, password, stored) or row is None:
            return None
        return _user(row)

    async def create_api_key(self, user_id: int, name: str) -> tuple[ApiKey, str]:
        """Return the stored key and the plaintext, which exists only in this answer."""
        plaintext = new_api_key()
        async with self._transaction() as db:
            cur = await db.execute(
                """INSERT INTO api_keys (user_id, name, key_prefix, key_hash, created_at)
                   VALUES (?, ?, ?, ?, ?)""",
                (user_id, name, plaintext[:8], hash_api_key(plaintext), utcnow()),
            )
            row = await self._one("SELECT * FROM api_keys WHERE id = ?", (cur.lastrowid,), db=db)
        assert row is not None
        return _api_key(row), plaintext

    async def user_for_api_key(self, plaintext: str) -> User | None:
        row = await self._one(
            """SELECT u.*, k.id AS key_id FROM api_keys k JOIN users u ON u.id = k.user_id
               WHERE k.key_hash = ? AND k.revoked_at IS NULL""",
            (hash_api_key(plaintext),),
        )
        return _user(row) if row else None

    # -- workflows -------------------------------------------------------------------------

    async def create_workflow(
        self, *, organization_id: int, owner_user_id: int, name: str, definition: dict[str, Any]
    ) -> Workflow:
        now = utcnow()
        workflow_uuid = str(uuidlib.uuid4())
        async with self._transaction() as db:
            cur = await db.execute(
                """INSERT INTO workflows (uuid, organization_id, owner_user_id, name, status,
                       created_at, updated_at) VALUES (?, ?, ?, ?, 'draft', ?, ?)""",
                (workflow_uuid, organization_id, owner_user_id, name, now, now),
            )
            await db.execute(
                """INSERT INTO workflow_definitions (workflow_id, version, definition, created_at)
                   VALUES (?, 1, ?, ?)""",
                (cur.lastrowid, _json(definition), now),
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
        self, db: aiosqlite.Connection | None, organization_id: int, workflow_uuid: str
    ) -> Workflow:
        row = await self._one(
            _WORKFLOW_SELECT + " WHERE w.uuid = ? AND w.organization_id = ?",
            (workflow_uuid, organization_id),
            db=db,
        )
        if row is None:
            raise NotFound("workflow not found")
        return _workflow(row)

    async def find_stream_workflow(
        self, workflow_uuid: str, *, include_archived: bool = False
    ) -> Workflow | None:
        """The workflow an Agent Stream URL names; archived ones do not take calls (but
        their refusals are still shown to their operators)."""
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
    ) -> Workflow:
        """Rename, archive/restore, or save a new draft version (the uuid never changes)."""
        now = utcnow()
        async with self._transaction() as db:
            current = await self._workflow_by_uuid(db, organization_id, workflow_uuid)
            if definition is not None and definition != current.definition:
                await db.execute(
                    """INSERT INTO workflow_definitions (workflow_id, version, definition, created_at)
                       VALUES (?, (SELECT MAX(version) + 1 FROM workflow_definitions
                                   WHERE workflow_id = ?), ?, ?)""",
                    (current.id, current.id, _json(definition), now),
                )
            await db.execute(
                "UPDATE workflows SET name = ?, status = ?, updated_at = ? WHERE id = ?",
                (name if name is not None else current.name,
                 status if status is not None else current.status, now, current.id),
            )
            return await self._workflow_by_uuid(db, organization_id, workflow_uuid)

    async def publish_workflow(self, organization_id: int, workflow_uuid: str) -> Workflow:
        """Make the latest definition the one calls run."""
        now = utcnow()
        async with self._transaction() as db:
            current = await self._workflow_by_uuid(db, organization_id, workflow_uuid)
            await db.execute(
                "UPDATE workflow_definitions SET published_at = COALESCE(published_at, ?) WHERE id = ?",
                (now, current.definition_id),
            )
            await db.execute(
                """UPDATE workflows SET status = 'published', published_definition_id = ?,
                       updated_at = ? WHERE id = ?""",
                (current.definition_id, now, current.id),
            )
            return await self._workflow_by_uuid(db, organization_id, workflow_uuid)

    # -- telephony configurations ----------------------------------------------------------

    async def create_telephony_config(
        self, organization_id: int, provider: str, given: ConfigInput, *, one_per_account: bool = False
    ) -> TelephonyConfig:
        """A new configuration; its secrets are sealed before they reach the database.
        `one_per_account`: a second one naming the same account is a Conflict."""
        now = utcnow()
        account_id, secrets = given.account_id or "", given.secrets
        try:
            async with self._transaction() as db:
                cur = await db.execute(
                    """INSERT INTO telephony_configurations (organization_id, provider, name,
                           account_id, account_key, fields, secrets, from_numbers, created_at,
                           updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    (organization_id, provider, given.name or "", account_id,
                     account_id if one_per_account else None, _json(given.fields),
                     self._box.seal(secrets) if secrets else "", _json(given.from_numbers or []),
                     now, now),
                )
                return await self._telephony_by_id(db, organization_id, cur.lastrowid or 0)
        except sqlite3.IntegrityError as exc:
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
        self, db: aiosqlite.Connection | None, organization_id: int, config_id: int
    ) -> TelephonyConfig:
        row = await self._one(
            "SELECT * FROM telephony_configurations WHERE id = ? AND organization_id = ?",
            (config_id, organization_id),
            db=db,
        )
        if row is None:
            raise NotFound("telephony configuration not found")
        return self._telephony(row)

    def _telephony(self, row: aiosqlite.Row) -> TelephonyConfig:
        return _from_row(
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
        self, organization_id: int, config_id: int, given: ConfigInput, *, one_per_account: bool = False
    ) -> TelephonyConfig:
        """Change what is given: `fields` and `secrets` are merged into the stored ones (a
        secret is only replaced when a new one is given)."""
        name, fields, secrets, from_numbers = given.name, given.fields, given.secrets, given.from_numbers
        async with self._transaction() as db:
            current = await self._telephony_by_id(db, organization_id, config_id)
            account = current.account_id if given.account_id is None else given.account_id
            try:
                await db.execute(
                    """UPDATE telephony_configurations SET name = ?, account_id = ?,
                           account_key = ?, fields = ?, secrets = COALESCE(?, secrets),
                           from_numbers = ?, updated_at = ? WHERE id = ?""",
                    (name if name is not None else current.name, account,
                     account if one_per_account else None,
                     _json(current.fields | fields),
                     self._box.seal(current.secrets | secrets) if secrets else None,
                     _json(current.from_numbers if from_numbers is None else from_numbers),
                     utcnow(), config_id),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict(
                    f"a {current.provider} configuration for {account} already exists"
                ) from exc
            return await self._telephony_by_id(db, organization_id, config_id)

    async def delete_telephony_config(self, organization_id: int, config_id: int) -> None:
        async with self._transaction() as db:
            cur = await db.execute(
                "DELETE FROM telephony_configurations WHERE id = ? AND organization_id = ?",
                (config_id, organization_id),
            )
            if cur.rowcount == 0:
                raise NotFound("telephony configuration not found")

    # -- runs ------------------------------------------------------------------------------

    async def minutes_used_this_month(self, user_id: int) -> float:
        row = await self._one(_MINUTES_USED_SQL, (user_id, month_start()))
        return float(row[0] or 0.0) / 60.0 if row else 0.0

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
        """Check the owner's quota and create the pending run in one write transaction,
        so two simultaneous calls cannot both take the last slot. `over_run_ids` are runs
        whose calls are over though their end is not written yet: they hold no slot."""
        async with self._transaction() as db:
            if owner.max_concurrent_calls is not None:
                active = await _scalar(
                    db,
                    f"""SELECT COUNT(*) FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id
                        WHERE w.owner_user_id = ? AND r.state IN {ACTIVE_STATES}
                          AND r.id NOT IN (SELECT value FROM json_each(?))""",
                    (owner.id, _json(sorted(over_run_ids))),
                )
                if active >= owner.max_concurrent_calls:
                    raise QuotaExceeded(
                        f"quota exceeded: {owner.max_concurrent_calls} concurrent calls already running"
                    )
            if owner.monthly_minutes_limit is not None:
                seconds = await _scalar(db, _MINUTES_USED_SQL, (owner.id, month_start()))
                if (seconds or 0.0) / 60.0 >= owner.monthly_minutes_limit:
                    raise QuotaExceeded(
                        f"quota exceeded: {owner.monthly_minutes_limit} monthly call minutes used"
                    )
            now = utcnow()
            for _ in range(10):
                name = RUN_NAME_PREFIX + f"{secrets.randbelow(10**8):08d}"
                if not await self._one("SELECT 1 FROM workflow_runs WHERE name = ?", (name,), db=db):
                    break
            cur = await db.execute(
                """INSERT INTO workflow_runs (workflow_id, definition_id, name, call_type, mode,
                       state, initial_context, gathered_context, logs, created_at)
                   VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)""",
                (workflow.id, workflow.live_definition_id, name, call_type, mode, _json(initial_context),
                 _json(gathered_context), _json(logs), now),
            )
            # a run just made has no transcript yet: its row is all there is to read
            row = await self._one(_RUN_SELECT + " WHERE r.id = ?", (cur.lastrowid or 0,), db=db)
            assert row is not None  # inserted by this transaction
            return _run(row)

    async def mark_run_running(
        self, run_id: int, logs: dict[str, Any] | None = None, *, started_at: str | None = None
    ) -> None:
        """`started_at` is when the call started running (a write retried later keeps it)."""
        async with self._transaction() as db:
            await db.execute(
                """UPDATE workflow_runs SET state = 'running', started_at = ?,
                       logs = json_patch(logs, ?) WHERE id = ? AND state = 'pending'""",
                (started_at or utcnow(), _json(logs or {}), run_id),
            )

    async def merge_run_context(
        self,
        run_id: int,
        *,
        initial_context: dict[str, Any] | None = None,
        gathered_context: dict[str, Any] | None = None,
        logs: dict[str, Any] | None = None,
    ) -> None:
        """Merge keys into the run's JSON columns (RFC 7396 merge patch)."""
        async with self._transaction() as db:
            await db.execute(
                """UPDATE workflow_runs SET initial_context = json_patch(initial_context, ?),
                       gathered_context = json_patch(gathered_context, ?),
                       logs = json_patch(logs, ?) WHERE id = ?""",
                (_json(initial_context or {}), _json(gathered_context or {}),
                 _json(logs or {}), run_id),
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
        async with self._transaction() as db:
            cur = await db.execute(
                """UPDATE workflow_runs SET state = ?, ended_at = ?,
                       duration_seconds = CASE WHEN started_at IS NULL THEN 0 ELSE
                           ROUND((julianday(?) - julianday(started_at)) * 86400.0, 3) END,
                       end_reason = ?, close_code = ?, error = ?,
                       recording_path = COALESCE(?, recording_path),
                       gathered_context = json_patch(gathered_context, ?),
                       logs = json_patch(logs, ?)
                   WHERE id = ? AND state IN ('pending', 'running')""",
                (state, now, now, end_reason, close_code, error, recording_path,
                 _json(gathered_context or {}), _json(logs or {}), run_id),
            )
            if cur.rowcount == 0:
                return  # ended already (by the start after a crash): the first end stands
            for seq, line in enumerate(transcript or []):
                await db.execute(
                    """INSERT INTO run_transcript_lines (run_id, seq, role, text, start_ms, end_ms,
                           interrupted) VALUES (?, ?, ?, ?, ?, ?, ?)""",
                    (run_id, seq, line.role, line.text, line.start_ms, line.end_ms,
                     int(line.interrupted)),
                )

    async def fail_interrupted_runs(self) -> int:
        """Runs a crash left pending/running: fail them at start so nothing stays open."""
        now = utcnow()
        async with self._transaction() as db:
            cur = await db.execute(
                """UPDATE workflow_runs SET state = 'failed', ended_at = ?,
                       duration_seconds = CASE WHEN started_at IS NULL THEN 0 ELSE
                           ROUND((julianday(?) - julianday(started_at)) * 86400.0, 3) END,
                       end_reason = 'server_restarted', error = 'server restarted'
                   WHERE state IN ('pending', 'running')""",
                (now, now),
            )
            return cur.rowcount

    async def set_run_recording(
        self, run_id: int, recording_path: str, *, logs: dict[str, Any] | None = None
    ) -> None:
        """Give an ended run the recording merged after its call (a crash left the tracks)
        and say so in its logs."""
        async with self._transaction() as db:
            await db.execute(
                """UPDATE workflow_runs SET recording_path = ?, logs = json_patch(logs, ?)
                   WHERE id = ?""",
                (recording_path, _json(logs or {}), run_id),
            )

    async def get_run_by_id(self, run_id: int) -> Run:
        row = await self._one(_RUN_SELECT + " WHERE r.id = ?", (run_id,))
        if row is None:
            raise NotFound("run not found")
        return _run(row, await self._transcript(run_id))

    async def find_run_by_call_id(self, workflow_id: int, call_id: str) -> Run | None:
        """The run of one call of a workflow, by the call id its stream URL carried."""
        row = await self._one(
            _RUN_SELECT + " WHERE r.workflow_id = ? AND json_extract(r.gathered_context, '$.call_id') = ?"
            " ORDER BY r.id DESC LIMIT 1",
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
        if workflow_uuid:
            where.append("w.uuid = ?")
            params.append(workflow_uuid)
        if state:
            where.append("r.state = ?")
            params.append(state)
        if since:
            where.append("r.created_at >= ?")
            params.append(since)
        if until:
            where.append("r.created_at < ?")
            params.append(until)
        clause = " WHERE " + " AND ".join(where)
        total_row = await self._one(
            "SELECT COUNT(*) FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id" + clause,
            tuple(params),
        )
        rows = await self._all(
            _RUN_SELECT + clause + " ORDER BY r.id DESC LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_run(r) for r in rows], (total_row[0] if total_row else 0)

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
        async with self._transaction() as db:
            await db.execute(
                """INSERT INTO stream_rejections (created_at, provider, agent_uuid_short,
                       workflow_id, organization_id, code, reason) VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (utcnow(), provider, agent_uuid_short, workflow_id, organization_id, code, reason),
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


    # -- one-time tokens -----------------------------------------------------------------

    async def create_one_time_token(
        self, purpose: str, payload: dict[str, Any], ttl_seconds: float
    ) -> str:
        """A fresh token for `purpose` carrying `payload`, good once within `ttl_seconds`.
        Only its hash is stored; the plaintext exists only in this answer. Expired tokens
        are swept here."""
        token = new_one_time_token()
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=ttl_seconds)
        async with self._transaction() as db:
            await db.execute("DELETE FROM one_time_tokens WHERE expires_at <= ?", (_iso(now),))
            await db.execute(
                """INSERT INTO one_time_tokens (token_hash, purpose, payload, created_at, expires_at)
                   VALUES (?, ?, ?, ?, ?)""",
                (hash_one_time_token(token), purpose, _json(payload), _iso(now), _iso(expires)),
            )
        return token

    async def use_one_time_token(self, purpose: str, token: str) -> dict[str, Any] | None:
        """The payload of a token of `purpose` that is neither used nor expired, and the
        token is used up in the same transaction; None otherwise (unknown, used, expired or
        of another purpose). An unknown token costs a read, never a write."""
        token_hash = hash_one_time_token(token)
        live = """SELECT payload FROM one_time_tokens
                  WHERE token_hash = ? AND purpose = ? AND used_at IS NULL AND expires_at > ?"""
        if await self._one(live, (token_hash, purpose, utcnow())) is None:
            return None
        async with self._transaction() as db:
            now = utcnow()
            row = await self._one(live, (token_hash, purpose, now), db=db)
            if row is None:  # used by another request (or process) in the meantime
                return None
            await db.execute(
                "UPDATE one_time_tokens SET used_at = ? WHERE token_hash = ?", (now, token_hash)
            )
        payload = json.loads(row["payload"])
        return payload if isinstance(payload, dict) else None

    # -- admin: sessions, users, keys, dashboards ------------------------------------------

    async def create_session(self, user_id: int, *, seconds: float) -> str:
        """A browser session of `user_id` for `seconds`: the cookie's value, of which only
        the hash is stored (with the session's CSRF token). Expired ones are swept here."""
        token = new_session_token()
        token_hash, csrf_token = hash_session_token(token), secrets.token_urlsafe(32)
        expires_at = _iso(datetime.now(UTC) + timedelta(seconds=seconds))
        now = utcnow()
        async with self._transaction() as db:
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
        return (_user(row), row["s_csrf"]) if row else None

    async def delete_session(self, token_hash: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    async def record_login_failure(self, email: str, ip: str) -> None:
        """Remember a failed sign-in; failures older than a day are no longer needed."""
        now = datetime.now(UTC)
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM login_failures WHERE created_at < ?",
                (_iso(now - timedelta(days=1)),),
            )
            await db.execute(
                "INSERT INTO login_failures (email, ip, created_at) VALUES (?, ?, ?)",
                (email.strip(), ip, _iso(now)),
            )

    async def login_failures_since(self, email: str, ip: str, since: str) -> tuple[int, str | None]:
        """How many sign-ins failed for this email from this address since `since`, and the
        oldest of them (the throttle lifts when it leaves the window)."""
        row = await self._one(
            """SELECT COUNT(*), MIN(created_at) FROM login_failures
               WHERE email = ? AND ip = ? AND created_at >= ?""",
            (email.strip(), ip, since),
        )
        return (row[0], row[1]) if row else (0, None)

    async def clear_login_failures(self, email: str, ip: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM login_failures WHERE email = ? AND ip = ?", (email.strip(), ip)
            )

    async def claim_first_run(self, *, organization_name: str, email: str, password: str) -> User:
        """The first-run page: organization and admin in one transaction, only while the
        database has no user at all (Conflict otherwise, so it can be claimed once)."""
        password_hash = await asyncio.to_thread(hash_password, password)
        now = utcnow()
        async with self._transaction() as db:
            if await _scalar(db, "SELECT COUNT(*) FROM users"):
                raise Conflict("this Agent Stream is already set up")
            cur = await db.execute(
                "INSERT INTO organizations (name, created_at) VALUES (?, ?)",
                (organization_name.strip(), now),
            )
            cur = await db.execute(
                """INSERT INTO users (organization_id, email, password_hash, is_admin, created_at)
                   VALUES (?, ?, ?, 1, ?)""",
                (cur.lastrowid, email.strip(), password_hash, now),
            )
            return await self._user_by_id(db, cur.lastrowid or 0)

    async def get_organization(self, organization_id: int) -> Organization:
        row = await self._one("SELECT * FROM organizations WHERE id = ?", (organization_id,))
        if row is None:
            raise NotFound("organization not found")
        return Organization(row["id"], row["name"], row["created_at"])

    async def list_users(self, organization_id: int) -> list[User]:
        rows = await self._all(
            "SELECT * FROM users WHERE organization_id = ? ORDER BY id", (organization_id,)
        )
        return [_user(r) for r in rows]

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
    ) -> User:
        """Set both limits; None means unlimited."""
        await self.get_org_user(organization_id, user_id)
        async with self._transaction() as db:
            await db.execute(
                "UPDATE users SET monthly_minutes_limit = ?, max_concurrent_calls = ? WHERE id = ?",
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
        async with self._transaction() as db:
            cur = await db.execute(
                """UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?)
                   WHERE id = ? AND user_id IN (SELECT id FROM users WHERE organization_id = ?)""",
                (utcnow(), key_id, organization_id),
            )
            if cur.rowcount == 0:
                raise NotFound("API key not found")

    async def agent_activity(self, organization_id: int, since: str) -> dict[int, AgentActivity]:
        """Per workflow of the organization: when its last run started and runs since `since`."""
        rows = await self._all(
            """SELECT r.workflow_id, MAX(r.created_at) AS last_run_at,
                      SUM(r.created_at >= ?) AS runs_since
               FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id
               WHERE w.organization_id = ? GROUP BY r.workflow_id""",
            (since, organization_id),
        )
        return {
            r["workflow_id"]: AgentActivity(r["last_run_at"], int(r["runs_since"] or 0))
            for r in rows
        }


_MINUTES_USED_SQL: Final = """
    SELECT SUM(COALESCE(r.duration_seconds,
               CASE WHEN r.started_at IS NULL THEN 0
                    ELSE (julianday('now') - julianday(r.started_at)) * 86400.0 END))
    FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id
    WHERE w.owner_user_id = ? AND r.created_at >= ?
"""


async def _scalar(db: aiosqlite.Connection, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row (aggregates and pragmas always return one)."""
    async with db.execute(sql, params) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return row[0]


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
def _unavailable_on_error() -> Iterator[None]:
    """SQLite's "locked", "disk full", "I/O error", "malformed image" as `DatabaseUnavailable`;
    constraint violations and our own mistakes (bad SQL, bad parameters) pass unchanged."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None or code & 0xFF not in _UNAVAILABLE_CODES:
            raise
        raise DatabaseUnavailable(f"database unavailable: {exc}") from exc


def _json(value: Any) -> str:
    """JSON for a column: standard JSON only (NaN and Infinity would make SQLite's JSON
    functions refuse the row for good)."""
    return json.dumps(value, allow_nan=False)


async def _connect(path: Path, busy_timeout: float) -> aiosqlite.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves) with our pragmas."""
    db = await aiosqlite.connect(path, isolation_level=None)
    db.row_factory = aiosqlite.Row
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA foreign_keys = ON")
    await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    await db.execute("PRAGMA synchronous = NORMAL")
    return db


async def open_store(settings: Settings) -> Store:
    """The database of `settings`, with the secret key that opens its secrets (from
    AGENT_STREAM_SECRET_KEY, else the key file next to the database)."""
    return await Store.open(
        settings.db_path,
        busy_timeout=settings.db_busy_timeout,
        secret_key=load_secret_key(settings.secret_key, settings.secret_key_file),
    )
