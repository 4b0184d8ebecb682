"""Garbage of ended calls: no automatic full collection mid-call, a full one when the last
call ends or every so many ended calls (agent_stream/memory.py)."""
from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agent_stream.keys import CALLS
from agent_stream.memory import CallGarbage, keep_collections_short
from agent_stream.store import Store
from tests.conftest import Dial, Tenant, finished_run, short_call, until


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


def test_the_last_call_ending_reclaims_the_cycles_calls_left() -> None:
    keep_collections_short()
    garbage = CallGarbage(every=10)
    ref = aged_cycle()
    garbage.call_ended(live_calls=1)
    assert ref() is not None and garbage.collections == 0
    garbage.call_ended(live_calls=0)
    assert ref() is None and garbage.collections == 1


def test_under_sustained_load_every_nth_ended_call_reclaims_them() -> None:
    keep_collections_short()
    garbage = CallGarbage(every=3)
    ref = aged_cycle()
    garbage.call_ended(live_calls=40)
    garbage.call_ended(live_calls=40)
    assert ref() is not None
    garbage.call_ended(live_calls=40)
    assert ref() is None and garbage.collections == 1
    assert garbage.ended_since_collection == 0


async def test_a_real_call_ending_as_the_last_one_is_collected(
    client: TestClient, dial: Dial, tenant: Tenant, store: Store
) -> None:
    garbage = client.app[CALLS].garbage
    assert await short_call(dial, tenant) == (1000, "call ended")
    assert (await finished_run(store, tenant)).state == "completed"
    await until(lambda: garbage.collections == 1)  # it was the only live call
    assert garbage.ended_since_collection == 0
