"""Garbage of ended calls: a call frees its objects when it ends, by reference counting
alone; no full collection while any call is live, one when the last call ends
(agent_stream/memory.py)."""
from __future__ import annotations

import collections
import gc
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pipecat.pipeline.worker import PipelineWorker
from pipecat.workers.runner import WorkerRunner

from agent_stream.calls.call import Call
from agent_stream.calls.endpoint import StreamSocket
from agent_stream.engine.base import VoiceAgent
from agent_stream.keys import CALLS
from agent_stream.memory import CallGarbage, keep_collections_short
from agent_stream.pipeline.call import CallPipeline
from agent_stream.pipeline.recorder import CallRecorder
from agent_stream.pipeline.transcript import CallTranscript
from agent_stream.pipeline.transport import InputTransport, OutputTransport
from agent_stream.simulator import SimulatedCall, tone_ulaw
from agent_stream.store import Store
from tests.conftest import Dial, Tenant, answered, finished_run, short_call, until


class Part:
    """Stands for a pipeline object: it points at itself, as pipecat's processors do."""

    def __init__(self) -> None:
        self.me = self


def aged_cycle() -> weakref.ref[Part]:
    """A cycle that outlived the young collections, as a call's objects do, then died."""
    part = Part()
    gc.collect(1)  # survivors of a generation-1 pass move to the oldest generation
    return weakref.ref(part)


def churn() -> list[int]:
    """Allocate like a busy server (objects that survive and promote); return the
    generations of the collections CPython started on its own meanwhile."""
    passes: list[int] = []

    def seen(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            passes.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        kept = [[n] for n in range(400_000)]
        del kept
    finally:
        gc.callbacks.remove(seen)
    return passes


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.enable()
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_by_default_cpython_starts_full_passes_on_its_own() -> None:
    gc.collect()
    ref = aged_cycle()
    assert 2 in churn() and ref() is None  # what pauses every live call's audio


def test_while_serving_no_automatic_pass_is_a_full_one() -> None:
    gc.collect()
    keep_collections_short()
    ref = aged_cycle()
    passes = churn()
    assert passes and 2 not in passes  # young passes still run
    assert ref() is not None


def test_the_last_call_ending_reclaims_what_calls_left() -> None:
    keep_collections_short()
    garbage = CallGarbage()
    ref = aged_cycle()
    garbage.call_ended(live_calls=1)
    assert ref() is not None and garbage.collections == 0
    garbage.call_ended(live_calls=0)
    assert ref() is None and garbage.collections == 1


def test_under_load_no_full_pass_runs_however_many_calls_end() -> None:
    keep_collections_short()
    garbage = CallGarbage()
    ref = aged_cycle()
    for _ in range(1000):
        garbage.call_ended(live_calls=40)
    assert ref() is not None  # waits for the next idle moment
    assert garbage.collections == 0 and garbage.ended_since_collection == 1000


async def test_a_real_call_ending_as_the_last_one_is_collected(
    client: TestClient, dial: Dial, tenant: Tenant, store: Store
) -> None:
    garbage = client.app[CALLS].garbage
    assert await short_call(dial, tenant) == (1000, "call ended")
    assert (await finished_run(store, tenant)).state == "completed"
    await until(lambda: garbage.collections == 1)  # it was the only live call
    assert garbage.ended_since_collection == 0


# -- a call's objects are freed when it ends, without a collection ---------------------------

# What one call is made of, ours and pipecat's: each holds much of the rest.
CALL_PARTS = (
    Call, StreamSocket, web.Request, CallPipeline, InputTransport, OutputTransport, VoiceAgent,
    CallRecorder, CallTranscript, PipelineWorker, WorkerRunner,
)
# What one collection may still find unreachable after such a call: none of the server's
# (bench/call_garbage.py: 0 per call, ~650 before its cycles were broken), 0-10 of the
# test's own caller and client. A few dozen leaves room for those and would catch any
# one of the cycles that were broken coming back.
UNREACHABLE_AFTER_A_CALL: Final = 40


def call_parts() -> dict[int, object]:
    """The parts of calls alive now (the emulator's requests are not a call's)."""
    kinds: dict[type, bool] = {}  # isinstance on each of the process's objects takes seconds
    parts = {}
    for o in gc.get_objects():
        kind = type(o)
        if kinds.setdefault(kind, issubclass(kind, CALL_PARTS)):
            if not (isinstance(o, web.Request) and not o.path.startswith("/api/v1/agent-stream")):
                parts[id(o)] = o
    return parts


async def caller_hangs_up(call: SimulatedCall) -> tuple[int | None, str]:
    await call.send_audio(tone_ulaw(0.2), realtime=False)
    await call.hang_up()
    return await call.wait_closed(timeout=30)


async def caller_sends_too_much(call: SimulatedCall) -> tuple[int | None, str]:
    """Fails the call: aiohttp keeps the socket's error, with its traceback."""
    await call.send_audio(tone_ulaw(0.2), realtime=False)
    await call.ws.send_str("x" * (1024 * 1024))
    return await call.wait_closed(timeout=30)


async def caller_sends_too_much_at_once(call: SimulatedCall) -> tuple[int | None, str]:
    """Read right after the pipeline's start: it is cancelled before its StartFrame reached
    the end, so pipecat only cleans it up (no CancelFrame passes)."""
    await call.ws.send_str("x" * (1024 * 1024))
    return await call.wait_closed(timeout=30)


@pytest.mark.parametrize(("ending", "closed"), [
    (caller_hangs_up, (1000, "call ended")),
    (caller_sends_too_much, (1009, "message too big")),
    (caller_sends_too_much_at_once, (1009, "message too big")),
])
async def test_a_call_ending_while_another_is_live_is_freed_without_a_collection(
    client: TestClient, dial: Dial, tenant: Tenant, store: Store,
    ending: Callable[[SimulatedCall], Awaitable[tuple[int | None, str]]],
    closed: tuple[int | None, str],
) -> None:
    registry = client.app[CALLS]
    gc.collect()
    gc.disable()  # from here on only reference counting frees anything
    other = await answered(dial, tenant.workflow.uuid)  # stays live: no idle collection
    await until(lambda: other.received_media_bytes > 0)  # all its parts are made
    others = call_parts()

    def left() -> collections.Counter[str]:
        """The ended call's parts still alive."""
        return collections.Counter(type(o).__name__ for key, o in call_parts().items()
                                   if key not in others)

    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: len(registry.calls) == 2)
    ended = weakref.ref(next(c for c in registry.calls if id(c) not in others))
    if ending is not caller_sends_too_much_at_once:  # the parts are seen while they live
        await until(lambda: call.received_media_bytes > 0)
        assert {"Call", "StreamSocket", "OutputTransport", "PipelineWorker"} <= set(left())
    assert await ending(call) == closed
    await finished_run(store, tenant)
    await until(lambda: len(registry.calls) == 1)
    try:
        await until(lambda: not left(), timeout=5)
    except AssertionError:
        raise AssertionError(f"the ended call's objects are still alive: {dict(left())}") from None
    assert ended() is None
    assert registry.garbage.collections == 0  # and no full pass ran meanwhile
    assert gc.collect() <= UNREACHABLE_AFTER_A_CALL

    await other.hang_up()
    assert await other.wait_closed(timeout=30) == (1000, "call ended")
