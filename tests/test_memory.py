"""Garbage of ended calls: kept out of the collector's sight while calls run, reclaimed
when the last call ends or every so many ended calls (agent_stream/memory.py)."""
from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient

from agent_stream.keys import CALLS
from agent_stream.memory import CallGarbage
from agent_stream.simulator import tone_ulaw
from agent_stream.store import Store
from tests.conftest import Dial, Tenant, finished_run, until


class Part:
    """Stands for a pipeline object: it points at itself, as pipecat's processors do."""

    def __init__(self) -> None:
        self.me = self


def frozen_cycle(garbage: CallGarbage) -> weakref.ref[Part]:
    """A cycle that lives while a call runs (so it gets frozen), then becomes garbage."""
    part = Part()
    garbage.call_running()
    return weakref.ref(part)


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_a_running_call_keeps_its_objects_out_of_automatic_collections() -> None:
    garbage = CallGarbage(every=10)
    ref = frozen_cycle(garbage)
    assert gc.get_freeze_count() > 0
    gc.collect()  # what the automatic collector does: it cannot see frozen objects
    assert ref() is not None


def test_the_last_call_ending_reclaims_the_cycles_calls_left() -> None:
    garbage = CallGarbage(every=10)
    ref = frozen_cycle(garbage)
    garbage.call_ended(live_calls=1)
    assert ref() is not None and garbage.collections == 0
    garbage.call_ended(live_calls=0)
    assert ref() is None and garbage.collections == 1
    assert gc.get_freeze_count() > 0  # what survived is frozen again


def test_under_sustained_load_every_nth_ended_call_reclaims_them() -> None:
    garbage = CallGarbage(every=3)
    ref = frozen_cycle(garbage)
    garbage.call_ended(live_calls=40)
    garbage.call_ended(live_calls=40)
    assert ref() is not None
    garbage.call_ended(live_calls=40)
    assert ref() is None and garbage.collections == 1
    assert garbage.ended_since_collection == 0


async def test_a_real_call_is_frozen_while_it_runs_and_collected_after_it_ends(
    client: TestClient, dial: Dial, tenant: Tenant, store: Store
) -> None:
    garbage = client.app[CALLS].garbage
    gc.unfreeze()
    call = await dial(tenant.workflow.uuid)
    call.start_reading()
    await call.handshake()
    await until(lambda: gc.get_freeze_count() > 0)  # its pipeline runs
    await call.send_audio(tone_ulaw(0.2), realtime=False)
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")
    assert (await finished_run(store, tenant)).state == "completed"
    await until(lambda: garbage.collections == 1)  # it was the only live call
    assert garbage.ended_since_collection == 0
