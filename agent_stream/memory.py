"""Garbage collection that never pauses live calls' audio.

A full pass of CPython's cyclic collector walks every tracked object and stops the event
loop while it does: over what the server keeps from startup (pipecat, openai and their
kin) 150-200 ms, over 80 live calls another 70-120 ms, heard as a gap in the audio of
every call speaking at that moment. CPython starts such passes on its own whenever enough
objects have survived into its oldest generation.

So what the process keeps for its lifetime is frozen out of every collection after
startup (`gc.freeze()`), and CPython's automatic full passes are turned off; its young
and middle collections stay, and stay short. A call's objects are not left to the
collector either: pipecat's processors point at each other, and a finished call used to
leave ~650 objects in reference cycles that only a full pass frees (young passes alone
leaked ~0.21 MB per call; a full pass after every 100 ended calls under load made gaps of
80-460 ms at 120-150 calls). The call now breaks those cycles when it ends
(`pipeline.call.break_pipecat_cycles`, and the socket's stored error), so reference
counting frees it at once, at no pause (bench/call_garbage.py shows what is left).

What still escapes (a pipeline that did not stop, an error path nobody has seen) is
collected by one full pass when no call is live: nobody hears that pause. Under load that
never goes idle there is no full pass at all; that garbage waits for the next idle moment
(tests/test_memory.py bounds what a call leaves).
"""
from __future__ import annotations

import gc
import logging
import time
from typing import Final

log = logging.getLogger(__name__)

# Gen-1 collections before CPython would start a full pass on its own: never, in practice.
NO_AUTOMATIC_FULL_PASSES: Final = 1_000_000_000


def keep_collections_short() -> None:
    """Freeze every object alive now (it lives as long as the process) and leave full
    collections to `CallGarbage`."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NO_AUTOMATIC_FULL_PASSES)


class CallGarbage:
    """Decides when a full collection runs: only when no call is live to hear it."""

    def __init__(self) -> None:
        self.ended_since_collection = 0
        self.collections = 0

    def call_ended(self, live_calls: int) -> None:
        """A call that ran a pipeline ended; `live_calls` are still connected."""
        self.ended_since_collection += 1
        if live_calls == 0:
            self.collect()

    def collect(self) -> int:
        """One full pass (over all but the frozen startup objects)."""
        began = time.perf_counter()
        found = gc.collect()
        self.collections += 1
        log.debug(
            "idle garbage collection: %d objects in %.1f ms after %d ended call(s)",
            found, (time.perf_counter() - began) * 1000, self.ended_since_collection,
        )
        self.ended_since_collection = 0
        return found
