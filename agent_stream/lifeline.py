"""A child process that must not outlive its parent.

A parent killed before it could end its children (SIGKILL, the OOM killer) leaves them
re-parented and running: the speech decoder holding its model's ~130 MB for good, a server
worker still taking calls on a port nobody supervises. The child watches who its parent is
instead: polling `getppid()` needs no platform call (prctl's PR_SET_PDEATHSIG is Linux only,
and fires when the parent's spawning *thread* ends, not the parent), and notices within a
second.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Final

# How often a child checks that its parent is still the one that started it.
PARENT_POLL_SECONDS: Final = 1.0


def watch_parent(parent_pid: int, on_loss: Callable[[], None]) -> None:
    """Call `on_loss` (from a daemon thread) as soon as this process's parent is no longer
    `parent_pid`; at once if it already is not (it died while this process started)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        on_loss()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
