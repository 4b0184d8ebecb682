"""Numbered migrations, one list for both databases, recorded in `schema_migrations`.

Each migration has a step per dialect: a SQL file from `migrations/` at the top of the
repository, code, or nothing. They are applied in order, each in its own transaction that
also records it, by one process at a time (SQLite's write lock, PostgreSQL's advisory lock);
a process that waited finds them applied and does nothing. SQLite databases from before this
table kept their number in `PRAGMA user_version`, which is adopted once.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ..crypto import SecretBox
from .base import dumps
from .database import Connection, Database
from .sqlite import SqliteDatabase

log = logging.getLogger(__name__)

MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[2] / "migrations"
# The version from which provider secrets are stored encrypted.
SECRETS_SEALED_AT_VERSION: Final = 3

Step = Callable[[Connection, SecretBox], Awaitable[None]]


def script(name: str) -> Step:
    """A step that runs one SQL file of `migrations/`."""

    async def run(db: Connection, box: SecretBox) -> None:
        await db.script((MIGRATIONS_DIR / name).read_text())

    run.__name__ = f"script {name}"
    return run


async def nothing(db: Connection, box: SecretBox) -> None:
    """A migration that has nothing to do on this database (already in an earlier step)."""


async def _sqlite_configurations_of_every_provider(db: Connection, box: SecretBox) -> None:
    """Telephony configurations for every provider: the account a stream names in one
    column, the other fields as JSON, the secret ones encrypted. The rows of the table
    that only knew Cloudonix domains move over with their bearer tokens sealed."""
    columns = {row[1] for row in await db.fetch("PRAGMA table_info(telephony_configurations)")}
    legacy = "domain_id" in columns
    if legacy:
        await db.execute("ALTER TABLE telephony_configurations RENAME TO telephony_configurations_v2")
    await script("0001_schema.sqlite.sql")(db, box)
    if not legacy:
        return
    for row in await db.fetch("SELECT * FROM telephony_configurations_v2"):
        fields = {"domain_id": row["domain_id"]}
        if row["application_name"]:
            fields["application_name"] = row["application_name"]
        sealed = box.seal({"bearer_token": row["bearer_token"]}) if row["bearer_token"] else ""
        await db.execute(
            """INSERT INTO telephony_configurations (id, organization_id, provider, name,
                   account_id, account_key, fields, secrets, from_numbers, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (row["id"], row["organization_id"], row["provider"], row["name"], row["domain_id"],
             row["domain_id"], dumps(fields), sealed, row["from_numbers"], row["created_at"],
             row["updated_at"]),
        )
    await db.execute("DROP TABLE telephony_configurations_v2")


@dataclass(frozen=True)
class Migration:
    number: int
    what: str
    sqlite: Step
    postgresql: Step

    def step(self, dialect: str) -> Step:
        return self.sqlite if dialect == "sqlite" else self.postgresql


MIGRATIONS: Final[list[Migration]] = [
    Migration(1, "the service's tables",
              script("0001_schema.sqlite.sql"), script("0001_schema.postgresql.sql")),
    Migration(2, "the admin's sessions and login_failures tables",
              script("0001_schema.sqlite.sql"), nothing),
    Migration(3, "every provider; secrets encrypted at rest",
              _sqlite_configurations_of_every_provider, nothing),
    Migration(4, "instances and heartbeats, run owners, edit revisions",
              script("0004_instances.sql"), script("0004_instances.sql")),
    Migration(5, "PostgreSQL functions: RFC 7396 JSON merges, a new run's quota slot",
              nothing, script("0005_functions.postgresql.sql")),
    Migration(6, "PostgreSQL JSON merges keep the order of keys",
              nothing, script("0006_ordered_merge.postgresql.sql")),
    Migration(7, "run webhooks and their deliveries, written with the run state they report",
              script("0007_webhooks.sqlite.sql"), script("0007_webhooks.postgresql.sql")),
    Migration(8, "indexes for the Overview, the webhook sender and its prune",
              script("0008_indexes.sql"), script("0008_indexes.sql")),
]
LATEST_VERSION: Final = MIGRATIONS[-1].number

_TABLE: Final = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    what        TEXT NOT NULL,
    applied_at  TEXT NOT NULL
)"""


async def migrate(database: Database, box: SecretBox, *, now: str) -> list[int]:
    """Bring `database` to the latest version; the numbers this process applied."""
    applied_now: list[int] = []
    async with database.migration_lock() as db:
        async with database.migration_transaction(db) as tx:
            await tx.execute(_TABLE)
            applied = {int(r[0]) for r in await tx.fetch("SELECT version FROM schema_migrations")}
            if not applied and isinstance(database, SqliteDatabase):
                applied = await _adopt_user_version(database, tx, now)
        for migration in MIGRATIONS:
            if migration.number in applied:
                continue
            async with database.migration_transaction(db) as tx:
                if await tx.fetchval(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.number,)
                ):
                    continue  # another process applied it while we waited
                await migration.step(database.dialect)(tx, box)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, what, applied_at) VALUES (?, ?, ?)",
                    (migration.number, migration.what, now),
                )
            applied_now.append(migration.number)
            log.info("database migrated to version %d (%s)", migration.number, migration.what)
    await database.after_migrations(sealed_secrets=SECRETS_SEALED_AT_VERSION in applied_now)
    return applied_now


async def _adopt_user_version(database: SqliteDatabase, tx: Connection, now: str) -> set[int]:
    """Record the migrations a SQLite database from before `schema_migrations` had."""
    version = await database.user_version()
    for migration in MIGRATIONS[:version]:
        await tx.execute(
            "INSERT INTO schema_migrations (version, what, applied_at) VALUES (?, ?, ?)",
            (migration.number, migration.what, now),
        )
    return {m.number for m in MIGRATIONS[:version]}
