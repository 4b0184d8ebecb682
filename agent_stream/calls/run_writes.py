"""The runs of live calls, written so that a busy or failing database loses none of it.

Every state write of a call's run (running, context merges, the end) goes through the
process's `RunWriteQueue`. While the database answers, a write goes straight to it. A
write it refuses (locked by another process past its busy timeout, disk full, I/O error)
is kept, in order with every later write of its run, and retried in the background until
it answers again; the call goes on and ends as if nothing happened. A run whose call is
over never holds its owner's quota slot, even while its end waits: the quota check of a
new call leaves out the runs this process knows are over. A new call itself waits, up to
`run_write_retry_seconds`, for the database to take its run. If the process stops first,
the next start fails the runs whose end was not written (`server_restarted`).
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from ..errors import DatabaseUnavailable
from ..models import Run, TranscriptLine, User, Workflow
from ..store import Store, utcnow

log = logging.getLogger(__name__)

T = TypeVar("T")
RunWrite = Callable[[Store], Awaitable[None]]

# Waits between tries of a refused write: short first (a lock is often brief), then longer.
FIRST_RETRY_DELAY: Final = 0.05
MAX_RETRY_DELAY: Final = 5.0
# How long shutdown waits for work after calls (a recording on its way to a slow store).
AFTER_CALL_GRACE_SECONDS: Final = 10.0


def _delays() -> Iterator[float]:
    """The waits between tries: doubling from FIRST_RETRY_DELAY up to MAX_RETRY_DELAY."""
    delay = FIRST_RETRY_DELAY
    while True:
        yield delay
        delay = min(delay * 2, MAX_RETRY_DELAY)


async def retrying(attempt: Callable[[], Awaitable[T]], *, seconds: float) -> T:
    """`attempt()` until it does not raise `DatabaseUnavailable` or `seconds` have passed
    (then the last refusal is raised)."""
    deadline = time.monotonic() + seconds
    for delay in _delays():
        try:
            return await attempt()
        except DatabaseUnavailable:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            await asyncio.sleep(min(delay, remaining))
    raise AssertionError("unreachable: the delays never end")


@dataclass
class _Write:
    run_name: str
    what: str
    apply: RunWrite
    # A smaller write to fall back on when this one fails for a reason of ours (the end of
    # a run with something in it the database cannot hold): the run must end anyway.
    fallback: RunWrite | None = None
    ends_run: bool = False
    refused: bool = False  # the database said no at least once: say when it lands


class RunWriteQueue:
    """Run-state writes the database refused, kept in order per run (with every later write
    of that run) and retried in the background until it answers; and which runs are over
    while their end is not written yet."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: dict[int, list[_Write]] = {}
        self._lock = asyncio.Lock()
        self._retrier: asyncio.Task[None] | None = None
        self.over: set[int] = set()  # runs whose call is over, their end not written yet
        self._after_calls: set[asyncio.Task[None]] = set()

    async def write(self, run_id: int, write: _Write) -> bool:
        """Write now, after the run's earlier writes; True when it landed, False when it
        waits for the database (or, being our own bug, was dropped and logged)."""
        if write.ends_run:
            self.over.add(run_id)
        if run_id in self._waiting:  # an earlier write of this run waits: keep the order
            self._waiting[run_id].append(write)
            return False
        try:
            landed = await self._apply(run_id, write)
        except DatabaseUnavailable:
            self._waiting[run_id] = [write]
            self._retry_in_background()
            return False
        return landed

    async def flush(self) -> bool:
        """Write everything that waits, run by run, in order; True when nothing is left."""
        if not self._waiting:
            return True
        async with self._lock:
            for run_id in list(self._waiting):
                writes = self._waiting[run_id]
                while writes:
                    try:
                        if await self._apply(run_id, writes[0]) and writes[0].refused:
                            log.info("%s: %s written after the database came back",
                                     writes[0].run_name, writes[0].what,
                                     extra={"run": writes[0].run_name})
                    except DatabaseUnavailable:
                        return False  # still down: every run waits for the next try
                    writes.pop(0)
                del self._waiting[run_id]
        return True

    async def _apply(self, run_id: int, write: _Write) -> bool:
        """One write (or its fallback); True when it landed, False when it was dropped.
        A refusal of the database is said once and raised."""
        try:
            try:
                await write.apply(self._store)
            except DatabaseUnavailable:
                raise
            except Exception:
                if write.fallback is None:
                    log.exception("%s: %s could not be written and is dropped",
                                  write.run_name, write.what)
                    landed = False
                else:
                    log.exception("%s: %s could not be written; writing it without what the "
                                  "call gathered", write.run_name, write.what)
                    write.apply, write.fallback = write.fallback, None
                    landed = await self._apply(run_id, write)
            else:
                landed = True
        except DatabaseUnavailable as exc:
            if not write.refused:
                write.refused = True
                log.warning("%s: %s not written yet (%s); retrying in the background",
                            write.run_name, write.what, exc, extra={"run": write.run_name})
            raise
        if write.ends_run:
            self.over.discard(run_id)
        return landed

    def _retry_in_background(self) -> None:
        if self._retrier is None:
            # In a context of its own: the call whose write first waited must not lend its
            # run's name (logs.CALL_FIELDS) to the lines about every other run's writes.
            self._retrier = asyncio.create_task(self._retry(), name="run write retrier",
                                                context=contextvars.Context())

    async def _retry(self) -> None:
        try:
            for delay in _delays():
                if not self._waiting:
                    return
                await asyncio.sleep(delay)
                await self.flush()
        finally:
            self._retrier = None

    def after_the_call(self, work: Awaitable[None], run_name: str) -> None:
        """Finish `work` for a call that is over (a slow recording store), in the background;
        shutdown waits for it a while (`finish_after_calls`)."""

        async def finishing() -> None:
            try:
                await work
            except Exception:
                log.exception("%s: finishing after the call failed", run_name,
                              extra={"run": run_name})

        task = asyncio.create_task(finishing(), name=f"after the call {run_name}")
        self._after_calls.add(task)
        task.add_done_callback(self._after_calls.discard)

    async def finish_after_calls(self) -> None:
        """At shutdown, before the recordings store closes: work after calls gets
        `AFTER_CALL_GRACE_SECONDS`; a recording still on its way then is stored by the next
        start (its tracks stay)."""
        if self._after_calls:
            await asyncio.wait(set(self._after_calls), timeout=AFTER_CALL_GRACE_SECONDS)
            for task in set(self._after_calls):
                task.cancel()
            await asyncio.gather(*self._after_calls, return_exceptions=True)

    async def close(self) -> None:
        """At shutdown: what work after calls is left, then one last try of the writes;
        what is left is failed by the next start."""
        await self.finish_after_calls()
        if self._retrier is not None:
            self._retrier.cancel()
            await asyncio.gather(self._retrier, return_exceptions=True)
        if not await self.flush():
            names = sorted({w.run_name for writes in self._waiting.values() for w in writes})
            log.error("the database is unavailable: %d run(s) could not be ended (%s); "
                      "the next start marks them failed", len(names), ", ".join(names))


class RunRecord:
    """The run of one live call. Its writes land in order; a refused one never ends the
    call and is never lost while the process lives."""

    def __init__(self, run: Run, queue: RunWriteQueue) -> None:
        self.run = run
        self._queue = queue

    @classmethod
    async def create(
        cls,
        store: Store,
        queue: RunWriteQueue,
        workflow: Workflow,
        owner: User,
        *,
        retry_seconds: float,
        **run: Any,
    ) -> RunRecord:
        """Check the quota (leaving out runs whose call is over) and create the pending run,
        retrying a refusing database for `retry_seconds`. Raises `QuotaExceeded` or
        `DatabaseUnavailable`."""

        async def attempt() -> Run:
            return await store.start_run(workflow, owner, over_run_ids=set(queue.over), **run)

        return cls(await retrying(attempt, seconds=retry_seconds), queue)

    async def running(self, logs: dict[str, Any]) -> bool:
        started_at = utcnow()
        return await self._write(_Write(
            self.run.name, "running",
            lambda store: store.mark_run_running(self.run.id, logs, started_at=started_at),
        ))

    async def merge(
        self,
        *,
        initial_context: dict[str, Any] | None = None,
        gathered_context: dict[str, Any] | None = None,
        logs: dict[str, Any] | None = None,
    ) -> bool:
        return await self._write(_Write(self.run.name, "context", lambda store: store.merge_run_context(
            self.run.id, initial_context=initial_context, gathered_context=gathered_context,
            logs=logs,
        )))

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
        """End the run, with the time the call ended however late the write lands. If what
        the call gathered cannot be stored (our bug), the run still ends: failed, saying so."""
        ended_at = utcnow()

        async def end(store: Store) -> None:
            await store.finish_run(
                self.run.id, state=state, end_reason=end_reason, close_code=close_code,
                error=error, recording_path=recording_path, gathered_context=dict(gathered_context),
                logs=dict(logs), transcript=transcript, ended_at=ended_at,
            )

        async def bare_end(store: Store) -> None:
            await store.finish_run(
                self.run.id, state="failed", end_reason=end_reason, close_code=close_code,
                error="the run's record could not be written in full (see the server log)",
                recording_path=recording_path, ended_at=ended_at,
            )

        return await self._write(_Write(
            self.run.name, "the end of the run", end, fallback=bare_end, ends_run=True
        ))

    async def recording(self, reference: str) -> bool:
        """The recording, stored after the run ended (a slow store)."""
        return await self._write(_Write(
            self.run.name, "the recording",
            lambda store: store.set_run_recording(self.run.id, reference, logs={}),
        ))

    def after_the_call(self, work: Awaitable[None]) -> None:
        self._queue.after_the_call(work, self.run.name)

    async def _write(self, write: _Write) -> bool:
        """True when the write landed now; False when it waits for the database."""
        return await self._queue.write(self.run.id, write)
