"""`serve --workers N`: a parent keeping N server processes on one port (contract section 8).

One event loop paces the audio of every call its process holds, on one core; a box with
more cores serves more calls with more processes. They share the listening port through
SO_REUSEPORT (the kernel spreads new connections over them) and the database. The parent
serves nothing: it checks the port and the database once, starts the workers as fresh
interpreters (`python app.py serve --worker-index I`: each keeps a lone server's set-up,
uvloop, startup garbage frozen, its own speech decoder), starts again one that dies, and on
SIGTERM or SIGINT drains them all. A worker drains on the first SIGTERM only (a second one,
as systemd sends to the whole group, would cut its drain short), and drains by itself when
the parent is gone (SIGKILL), so no orphan keeps serving.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from .config import Settings
from .lifeline import watch_parent
from .metrics import MULTIPROC_ENV, forget_worker
from .store import open_store

log = logging.getLogger(__name__)

APP_PATH: Final = Path(__file__).resolve().parent.parent / "app.py"
# The first restart of a worker that died waits this long...
RESTART_DELAY_SECONDS: Final = 0.5
# ...doubling for each death in a row within QUICK_EXIT_SECONDS of its start, up to this.
RESTART_DELAY_MAX_SECONDS: Final = 10.0
# A worker dying sooner than this after its start (it imports, opens the database, binds)
# is failing to start, not failing under load.
QUICK_EXIT_SECONDS: Final = 10.0
# So many quick deaths in a row of one worker and the parent gives up (the whole service
# stops, for whoever supervises the parent to see), rather than restart it forever.
GIVE_UP_AFTER_QUICK_EXITS: Final = 5
# How long a drain may take: longer than a worker's own (SHUTDOWN_GRACE_SECONDS for live
# calls, run_app's shutdown_timeout for requests in flight, then the webhook attempts under
# way: delivery.STOP_GRACE_SECONDS). Past it, SIGKILL.
DRAIN_DEADLINE_SECONDS: Final = 45.0


class PortUnavailable(Exception):
    """The address cannot be listened on: no worker could bind it either."""


class WorkersFailing(Exception):
    """A worker dies right after every start: restarting it again would not help."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def supervise(settings: Settings) -> int:
    """Run `settings.workers` server processes until SIGTERM or SIGINT; the exit code."""
    try:
        port = probe_port(settings.host, settings.port)
    except PortUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Created, migrated and its secret key checked once, here: N workers starting on a new
    # database would race to make its key file and to migrate it.
    asyncio.run(_check_database(settings))
    log.info("Agent Stream: %d workers on http://%s:%d (database %s), supervisor pid %d",
             settings.workers, settings.host, port, settings.database_shown, os.getpid())
    # the database reaches the workers in their environment: a PostgreSQL URL may carry a
    # password, which a command line shows to every user of the machine (ps)
    os.environ["AGENT_STREAM_DB"] = settings.database
    # the workers' metrics, which any one of them adds up for a scrape (metrics.py): a new
    # directory each start, as prometheus-client wants, removed at the end
    metrics_dir = tempfile.mkdtemp(prefix="agent-stream-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    supervisor = Supervisor(settings.workers, lambda index: worker_command(settings, port, index))
    try:
        return asyncio.run(supervisor.run())
    except WorkersFailing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


async def _check_database(settings: Settings) -> None:
    store = await open_store(settings)
    await store.close()


def probe_port(host: str, port: int) -> int:
    """Bind the addresses the workers will listen on, without SO_REUSEPORT, and let go: an
    address in use (by anyone, a SO_REUSEPORT group included) fails here, once and clearly.
    The port (the one the system chose, for port 0)."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise PortUnavailable(f"cannot listen on {host}:{port}: {exc}") from None
    probes: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            probe = socket.socket(family, kind, proto)
            probes.append(probe)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind((address[0], port, *address[2:]))
            except OSError as exc:
                raise PortUnavailable(f"cannot listen on {host}:{port}: {exc}") from None
            port = probe.getsockname()[1]
    finally:
        for probe in probes:
            probe.close()
    return port


def worker_command(settings: Settings, port: int, index: int) -> list[str]:
    """A fresh interpreter serving as worker `index` of this parent."""
    return [
        sys.executable, str(APP_PATH), "serve",
        "--host", settings.host, "--port", str(port),
        "--workers", str(settings.workers),
        "--worker-index", str(index), "--parent-pid", str(os.getpid()),
    ]


def describe_exit(code: int) -> str:
    """A worker's end as a person reads it: its exit code or the signal that ended it."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def restart_delay(quick_exits: int) -> float:
    """How long to wait before starting a worker again, after `quick_exits` deaths in a
    row right after its start (0 for a death after a while of serving)."""
    return min(RESTART_DELAY_SECONDS * 2.0 ** max(quick_exits - 1, 0), RESTART_DELAY_MAX_SECONDS)


class Supervisor:
    """Keeps `count` workers running until told to stop, then drains them."""

    def __init__(self, count: int, command: Callable[[int], list[str]]) -> None:
        self._count = count
        self._command = command
        self._stopping = asyncio.Event()
        self._workers: dict[int, asyncio.subprocess.Process] = {}
        self._terminated: set[int] = set()  # pids sent SIGTERM: each gets it once

    async def run(self) -> int:
        """Until SIGTERM/SIGINT (0 once every worker drained, 1 if one had to be killed),
        or until a worker keeps failing to start (WorkersFailing)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, sig)
        try:
            return await self._supervise()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    async def _supervise(self) -> int:
        keepers = [asyncio.create_task(self._keep(index)) for index in range(self._count)]
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait([stop, *keepers], return_when=asyncio.FIRST_COMPLETED)
        failure = next((k.exception() for k in keepers if k.done() and k.exception()), None)
        self._stopping.set()
        for proc in list(self._workers.values()):
            self._terminate(proc)
        _, stuck = await asyncio.wait(keepers, timeout=DRAIN_DEADLINE_SECONDS)
        for index, proc in self._workers.items():
            if proc.returncode is None:
                log.error("worker %d (pid %d) did not drain within %g s: killing it",
                          index, proc.pid, DRAIN_DEADLINE_SECONDS)
                proc.kill()
        for keeper in stuck:
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        stop.cancel()
        if failure is not None:
            raise failure
        if stuck:
            return 1
        log.info("all workers drained")
        return 0

    def _stop(self, sig: signal.Signals) -> None:
        if self._stopping.is_set():
            log.info("%s: already draining", sig.name)
            return
        log.info("%s: draining %d workers", sig.name, len(self._workers))
        self._stopping.set()

    def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM, once: a worker's second one would cut its drain short."""
        if proc.returncode is None and proc.pid not in self._terminated:
            self._terminated.add(proc.pid)
            proc.send_signal(signal.SIGTERM)

    async def _keep(self, index: int) -> None:
        """Worker `index`, started again each time it dies, until the parent stops."""
        loop = asyncio.get_running_loop()
        quick_exits = 0
        while not self._stopping.is_set():
            started = loop.time()
            # Its own session (so process group): a Ctrl-C in the terminal reaches the parent
            # only, which passes one SIGTERM on.
            proc = await asyncio.create_subprocess_exec(*self._command(index),
                                                        start_new_session=True)
            self._workers[index] = proc
            log.info("worker %d started (pid %d)", index, proc.pid)
            if self._stopping.is_set():  # stopped while it was being started
                self._terminate(proc)
            code = await proc.wait()
            forget_worker(proc.pid)  # its calls are no longer live; its counts stay
            if self._stopping.is_set():
                log.info("worker %d (pid %d) %s", index, proc.pid, describe_exit(code))
                return
            lived = loop.time() - started
            quick_exits = quick_exits + 1 if lived < QUICK_EXIT_SECONDS else 0
            if quick_exits >= GIVE_UP_AFTER_QUICK_EXITS:
                raise WorkersFailing(
                    f"worker {index} {describe_exit(code)} within {QUICK_EXIT_SECONDS:g} s "
                    f"of its start {quick_exits} times in a row; giving up",
                    exit_code=code if code > 0 else 1,
                )
            delay = restart_delay(quick_exits)
            log.warning("worker %d (pid %d) %s after %.1f s; starting it again in %.1f s",
                        index, proc.pid, describe_exit(code), lived, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)


# -- in a worker ---------------------------------------------------------------------------


def worker_run_options(loop: asyncio.AbstractEventLoop, parent_pid: int) -> dict[str, Any]:
    """What a worker's `run_app` adds to a lone server's: the shared port, a drain that the
    first SIGTERM (or SIGINT) starts and later ones leave alone, and a drain of its own when
    the parent is gone."""
    draining = False

    def drain(sig: signal.Signals) -> None:
        nonlocal draining
        if draining:
            log.info("%s: already draining", sig.name)
            return
        draining = True
        log.info("%s: draining this worker", sig.name)
        raise web.GracefulExit()  # as run_app's own handler does: its cleanup drains

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, drain, sig)
    watch_parent(parent_pid, lambda: _orphaned(parent_pid))
    return {"handle_signals": False, "reuse_port": True}


def _orphaned(parent_pid: int) -> None:
    """The parent died without draining us (SIGKILL): drain as SIGTERM would, and end the
    process should the drain hang."""
    log.warning("the supervisor (pid %d) is gone: draining", parent_pid)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(DRAIN_DEADLINE_SECONDS)
    log.error("the drain did not finish within %g s: exiting", DRAIN_DEADLINE_SECONDS)
    os._exit(1)
