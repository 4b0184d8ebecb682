"""What every part of the store shares: the database, the secret box, row helpers and the
text forms of times and JSON that both databases store alike."""
from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

from ..crypto import SecretBox
from ..errors import Stale
from .database import Connection, Database, Row

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# A run in these states is a live call's (of this process or another).
ACTIVE_STATES: Final = ("pending", "running")
# What no column of either database holds as text: a NUL, and any surrogate code point (only
# a pair of them is a character, and Python decodes a pair into one).
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
# A model the store builds from rows (`from_row`).
_Record = TypeVar("_Record", bound="DataclassInstance")


def utcnow() -> str:
    """Timestamps are ISO 8601 UTC text, comparable as strings."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def iso(moment: datetime) -> str:
    """A moment as stored: ISO 8601 UTC text, like `utcnow`."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def seconds_between(start: str, end: str) -> float:
    """The seconds from one stored time to another, to the millisecond."""
    elapsed = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return round(elapsed.total_seconds(), 3)


def month_start(now: datetime | None = None) -> str:
    """Start of the current UTC month, for the monthly minutes quota."""
    now = now or datetime.now(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0).isoformat(
        timespec="milliseconds"
    )


def dumps(value: Any) -> str:
    """JSON for a column: standard JSON only (NaN and Infinity are refused here, as SQLite's
    JSON functions and PostgreSQL's json type would refuse the row)."""
    return json.dumps(value, allow_nan=False)


def call_json(value: Any) -> str:
    """JSON for a run's columns, which hold what providers and callers sent: a NUL in it
    (PostgreSQL's JSON functions cannot merge one, its text cannot hold one) or half a
    surrogate pair ("\\ud800" is valid JSON but no text: PostgreSQL's json refuses it, UTF-8
    cannot encode it) is stored as U+FFFD on both backends, so one stray byte in a custom
    parameter costs nothing else."""
    text = dumps(value)
    # an emoji is escaped as a pair (\ud83d\ude00): it takes the slow way and comes out the same
    return dumps(_storable(value)) if "\\u0000" in text or "\\ud" in text else text


@overload
def call_text(value: str) -> str: ...
@overload
def call_text(value: None) -> None: ...
def call_text(value: str | None) -> str | None:
    """Text from a call (a transcript line, a reason quoting what the provider sent) as a
    column can hold it: a NUL or a lone surrogate becomes U+FFFD, as in `call_json`."""
    return _UNSTORABLE.sub("\ufffd", value) if value is not None else None


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_storable(v) for v in value]
    return value


def check_revision(current: int, expected: int | None, what: str) -> None:
    """Compare-and-set: an edit made from what was read at revision `expected` is refused
    when the row has changed since (None: the caller did not say, the edit applies)."""
    if expected is not None and expected != current:
        raise Stale(
            f"{what} was changed by someone else since it was read (revision {expected}, now "
            f"{current}): reload it and make the change again",
            current=current,
        )


def from_row(cls: type[_Record], row: Row, **decoded: Any) -> _Record:
    """A model from a row: each field from the column of its name, unless given `decoded`
    (JSON, a renamed column, a flag)."""
    names = (f.name for f in dataclasses.fields(cls))
    return cls(**{name: decoded[name] if name in decoded else row[name] for name in names})


class StoreBase:
    """The database and the box that opens stored secrets, for every part of the store."""

    def __init__(self, database: Database, secret_box: SecretBox, instance_id: str | None) -> None:
        self._db = database
        self._box = secret_box
        # The serving process whose runs this store creates (None: a CLI command, no runs).
        self.instance_id = instance_id
        # Told when this process has written a run's start or end, which may have queued
        # webhook deliveries (the sender wakes up instead of waiting for its next poll).
        self.run_event_listeners: list[Callable[[], None]] = []

    def _run_event_written(self) -> None:
        for listener in self.run_event_listeners:
            listener()

    async def _one(
        self, sql: str, params: Sequence[Any] = (), *, db: Connection | None = None
    ) -> Row | None:
        """The first row, read on `db` (the open transaction) or a reader."""
        rows = await self._all(sql, params, db=db)
        return rows[0] if rows else None

    async def _all(
        self, sql: str, params: Sequence[Any] = (), *, db: Connection | None = None
    ) -> list[Row]:
        if db is not None:
            return await db.fetch(sql, params)
        return await self._db.fetch(sql, params)
