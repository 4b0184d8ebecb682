"""The live calls of the process, so a shutdown can close them and wait for their runs."""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..memory import CallGarbage

if TYPE_CHECKING:
    from .call import Call

log = logging.getLogger(__name__)


class CallRegistry:
    """Live calls of the process, so shutdown can close them and wait for their runs."""

    def __init__(self) -> None:
        self.calls: set[Call] = set()
        self.accepting = True
        self.garbage = CallGarbage()

    def add(self, call: Call) -> None:
        self.calls.add(call)

    def discard(self, call: Call) -> None:
        """A call ended; if it ran a pipeline and was the last one live, what calls left
        is collected now (memory.py). Refused and failed connections leave little and do
        not count."""
        self.calls.discard(call)
        if call.ran_pipeline:
            self.garbage.call_ended(live_calls=len(self.calls))

    async def shutdown(self, grace: float) -> None:
        """Stop taking streams, close live ones with 1001, wait for their runs to finish."""
        self.accepting = False
        calls = list(self.calls)
        if not calls:
            return
        log.info("closing %d live call(s) for shutdown", len(calls))
        await asyncio.gather(*(call.shut_down() for call in calls), return_exceptions=True)
        await asyncio.wait([asyncio.ensure_future(c.finished.wait()) for c in calls], timeout=grace)
