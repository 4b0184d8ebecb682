"""The heartbeat of a serving process, and its watch over the others (CONTRACT section 8).

Every few seconds the instance writes its heartbeat; a live one also fails the open runs
of instances whose heartbeat is older than the timeout, whose calls died with them. It only
judges others once its own heartbeats have landed for a whole timeout: after the database
was out of reach for everyone, every heartbeat is old, and the others must first get the
chance to write theirs again. Nothing here ever delays a call.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from .config import Settings
from .errors import DatabaseUnavailable
from .store import Store
from .store.runs import FailedRun

log = logging.getLogger(__name__)


async def keep_heartbeat(
    store: Store, settings: Settings, *, watch_others: bool,
    on_lost: Callable[[list[FailedRun]], None] = lambda failed: None,
) -> None:
    """Runs until cancelled; a database that does not answer is waited out, not fatal.
    `on_lost` hears of the runs failed because their instance was lost."""
    healthy_since: float | None = time.monotonic()  # registered (or beat) just before
    while True:
        await asyncio.sleep(settings.heartbeat_interval)
        try:
            await store.heartbeat()
        except DatabaseUnavailable as exc:
            if healthy_since is not None:
                log.warning("heartbeat not written, the database does not answer: %s", exc)
            healthy_since = None
            continue
        except Exception:
            log.exception("heartbeat failed")
            healthy_since = None
            continue
        now = time.monotonic()
        if healthy_since is None:
            log.info("heartbeat written again")
            healthy_since = now
        if watch_others and now - healthy_since >= settings.instance_timeout:
            on_lost(await _fail_lost_instances(store, settings.instance_timeout))


async def _fail_lost_instances(store: Store, timeout: float) -> list[FailedRun]:
    try:
        lost = await store.fail_runs_of_lost_instances(timeout)
    except DatabaseUnavailable as exc:
        log.warning("lost instances not checked, the database does not answer: %s", exc)
        return []
    except Exception:
        log.exception("checking for lost instances failed")
        return []
    for instance, runs in Counter(run.instance_id for run in lost).items():
        log.warning("instance %s stopped answering (no heartbeat for %.0f s): %d run(s) failed",
                    instance, timeout, runs)
    return lost
