"""The run of a live call, written so that a busy or failing database loses none of it.

Every state write of a call's run goes through its `RunRecord`, in order: created (with
the quota check), running, context merges, the end. A write the database refuses (locked
by another process past its busy timeout, disk full, I/O error) is retried; creating the
run and ending it are retried in-line for a while, because the caller waits on the first
and the quota slot on the second. What still cannot land is handed, with every later write
of that run, to the process's `PendingRunWrites`, which retries in the background until
the database answers again. So a run always ends once its call is over, and frees its
quota slot, even when that has to wait for the database; if the process stops first, the
next start fails the run (`server_restarted`).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from .errors import DatabaseUnavailable
from .store import Run, Store, TranscriptLine, User, Workflow, utcnow

log = logging.getLogger(__name__)

T = TypeVar("T")
RunWrite = Callable[[Store], Awaitable[None]]
LogAdapter = logging.LoggerAdapter[logging.Logger] | logging.Logger

# Waits between tries of a refused write: short first (a lock is often brief), then longer.
FIRST_RETRY_DELAY: Final = 0.05
MAX_RETRY_DELAY: Final = 5.0


async def retrying(attempt: Callable[[], Awaitable[T]], *, seconds: float) -> T:
    """`attempt()` until it does not raise `DatabaseUnavailable` or `seconds` have passed
    (then the last refusal is raised)."""
    deadline = time.monotonic() + seconds
    delay = FIRST_RETRY_DELAY
    while True:
        try:
            return await attempt()
        except DatabaseUnavailable:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_RETRY_DELAY)


@dataclass(frozen=True)
class _Write:
    run_name: str
    what: str
    apply: RunWrite


class PendingRunWrites:
    """Run writes the database refused, kept in order per run and retried in the background
    until it answers again: the process's one queue of them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._runs: dict[int, list[_Write]] = {}
        self._lock = asyncio.Lock()
        self._retrier: asyncio.Task[None] | None = None

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._runs

    def __len__(self) -> int:
        return len(self._runs)

    def add(self, run_id: int, write: _Write) -> None:
        """Queue `write` behind the run's earlier pending ones; the retrier takes it."""
        self._runs.setdefault(run_id, []).append(write)
        if self._retrier is None:
            self._retrier = asyncio.create_task(self._retry(), name="pending run writes")

    async def flush(self) -> bool:
        """Try every pending write now, run by run, in order; True when none is left."""
        if not self._runs:
            return True
        async with self._lock:
            for run_id in list(self._runs):
                writes = self._runs[run_id]
                while writes:
                    write = writes[0]
                    try:
                        await write.apply(self._store)
                    except DatabaseUnavailable:
                        return False  # still down: every run waits for the next try
                    except Exception:
                        log.exception("%s: %s could not be written and is dropped",
                                      write.run_name, write.what)
                    else:
                        log.info("%s: %s written after the database came back",
                                 write.run_name, write.what)
                    writes.pop(0)
                del self._runs[run_id]
        return True

    async def _retry(self) -> None:
        delay = FIRST_RETRY_DELAY
        try:
            while not await self.flush():
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)
        finally:
            self._retrier = None

    async def close(self) -> None:
        """At shutdown: one last try; what is left is failed by the next start."""
        if self._retrier is not None:
            self._retrier.cancel()
            await asyncio.gather(self._retrier, return_exceptions=True)
        if not await self.flush():
            names = sorted({w.run_name for writes in self._runs.values() for w in writes})
            log.error("the database is unavailable: %d run(s) could not be ended (%s); "
                      "the next start marks them failed", len(names), ", ".join(names))


class RunRecord:
    """The run of one live call. Its writes land in order; a refused one never ends the
    call and is never lost while the process lives."""

    def __init__(
        self, run: Run, store: Store, pending: PendingRunWrites, *, retry_seconds: float,
        call_log: LogAdapter,
    ) -> None:
        self.run = run
        self._store = store
        self._pending = pending
        self._retry_seconds = retry_seconds
        self._log = call_log

    @classmethod
    async def create(
        cls,
        store: Store,
        pending: PendingRunWrites,
        workflow: Workflow,
        owner: User,
        *,
        retry_seconds: float,
        call_log: LogAdapter,
        **run: Any,
    ) -> RunRecord:
        """Check the quota and create the pending run, retrying a refusing database for
        `retry_seconds`. Writes still pending from ended calls go first, so their quota
        slots are free. Raises `QuotaExceeded` or `DatabaseUnavailable`."""

        async def attempt() -> Run:
            await pending.flush()
            return await store.start_run(workflow, owner, **run)

        created = await retrying(attempt, seconds=retry_seconds)
        return cls(created, store, pending, retry_seconds=retry_seconds, call_log=call_log)

    async def running(self, logs: dict[str, Any]) -> None:
        started_at = utcnow()
        await self._write(
            "running", lambda store: store.mark_run_running(self.run.id, logs, started_at=started_at)
        )

    async def merge(
        self,
        *,
        initial_context: dict[str, Any] | None = None,
        gathered_context: dict[str, Any] | None = None,
        logs: dict[str, Any] | None = None,
    ) -> None:
        await self._write("context", lambda store: store.merge_run_context(
            self.run.id, initial_context=initial_context, gathered_context=gathered_context,
            logs=logs,
        ))

    async def finish(
        self,
        *,
        state: str,
        end_reason: str,
        close_code: int,
        error: str | None,
        recording_path: str | None,
        gathered_context: MutableMapping[str, Any],
        logs: MutableMapping[str, Any],
        transcript: list[TranscriptLine] | None,
    ) -> bool:
        """End the run (retried in-line, then in the background); True when it is written."""
        ended_at = utcnow()

        async def end(store: Store) -> None:
            await store.finish_run(
                self.run.id, state=state, end_reason=end_reason, close_code=close_code,
                error=error, recording_path=recording_path, gathered_context=dict(gathered_context),
                logs=dict(logs), transcript=transcript, ended_at=ended_at,
            )

        return await self._write("the end of the run", end, retry=True)

    async def _write(self, what: str, apply: RunWrite, *, retry: bool = False) -> bool:
        """Apply `apply` after the run's earlier writes; True if it landed now."""
        write = _Write(self.run.name, what, apply)
        if self.run.id in self._pending:  # an earlier write waits: keep the order
            self._pending.add(self.run.id, write)
            return False
        try:
            if retry:
                await retrying(lambda: apply(self._store), seconds=self._retry_seconds)
            else:
                await apply(self._store)
        except DatabaseUnavailable as exc:
            self._log.warning("%s not written yet (%s): retrying in the background", what, exc)
            self._pending.add(self.run.id, write)
            return False
        return True
