"""`serve --workers N` as an operator runs it: real processes on one port, real signals."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import unused_port

from agent_stream import workers
from agent_stream.config import Settings
from agent_stream.simulator import connect, stream_url, tone_ulaw
from agent_stream.workers import Supervisor, WorkersFailing
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import DOMAIN, TOKEN, agent_over_api, spawned_children
from tests.test_process import ROOT, alive, run_cli

HOST = "127.0.0.1"
# Two workers start on two cores next to other tests: generous, and only a bound.
START_TIMEOUT = 60.0


class Served:
    """A `serve --workers` parent on a free port, its log in a file (a pipe nobody reads
    could fill and stall it)."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = unused_port()
        self.base = f"http://{HOST}:{self.port}"
        self.db = tmp_path / "data" / "agent_stream.db"
        self.log = tmp_path / "serve.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "app.py", "serve", "--host", HOST, "--port", str(self.port),
                 "--db", str(self.db), *args],
                cwd=ROOT, env=os.environ | (env or {}), text=True,
                stdout=subprocess.DEVNULL, stderr=log,
            )

    def instance(self, index: int) -> str:
        return f"{socket.gethostname()}:{self.port}:{index}"

    def output(self) -> str:
        return self.log.read_text()

    def workers(self) -> dict[int, int]:
        """The parent's worker processes: worker index -> pid."""
        found = {}
        for children in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
            for child in children.read_text().split():
                try:
                    argv = Path(f"/proc/{child}/cmdline").read_bytes().decode().split("\0")
                except FileNotFoundError:
                    continue
                if "--worker-index" in argv and alive(int(child)):
                    found[int(argv[argv.index("--worker-index") + 1])] = int(child)
        return found

    async def answering(self, wanted: set[str], timeout: float = START_TIMEOUT) -> None:
        """Until every instance in `wanted` has answered the health check, each asked on a
        fresh connection (the kernel picks a worker per connection)."""
        seen: set[str] = set()
        deadline = asyncio.get_running_loop().time() + timeout
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            while not wanted <= seen:
                assert self.proc.poll() is None, self.output()
                assert asyncio.get_running_loop().time() < deadline, (
                    f"only {sorted(seen)} answered, not {sorted(wanted)}\n{self.output()}")
                try:
                    async with http.get(f"{self.base}/api/v1/health") as response:
                        body = await response.json()
                        assert response.status == 200 and body["status"] == "ok", body
                        seen.add(body["instance"])
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Served:
        served = Served(tmp_path, *args, env=env)
        started.append(served)
        return served

    yield start
    for served in started:
        orphans = served.workers().values()
        served.stop()
        for pid in orphans:  # never leave a worker serving after a failed test
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


async def until(condition: Callable[[], bool], what: str, timeout: float = START_TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.05)


async def test_two_workers_share_the_port_and_one_that_dies_is_started_again(
    serve: Callable[..., Served],
) -> None:
    served = serve(env={"AGENT_STREAM_WORKERS": "2"})  # the environment, no flag
    await served.answering({served.instance(0), served.instance(1)})
    first = served.workers()
    assert sorted(first) == [0, 1] and len(set(first.values())) == 2

    os.kill(first[1], signal.SIGKILL)
    await until(lambda: served.workers().get(1) not in (None, first[1]), "a new worker 1")
    replacement = served.workers()
    assert replacement[0] == first[0]  # its sibling served on, untouched
    # the port answers throughout, and the new process is the same instance as the one killed
    await served.answering({served.instance(0), served.instance(1)})
    log = served.output()
    assert f"worker 1 (pid {first[1]}) was killed by SIGKILL" in log
    assert f"worker 1 started (pid {replacement[1]})" in log
    assert f"[worker 1] agent_stream.cli: Agent Stream on {served.base}" in log
    assert f"instance {served.instance(1)}" in log


async def test_sigterm_drains_every_worker_and_their_live_calls(
    serve: Callable[..., Served], tmp_path: Path, cloudonix: tuple[CloudonixEmulator, str],
) -> None:
    emulator, api_base = cloudonix
    emulator.add_domain(DOMAIN, TOKEN)
    db = tmp_path / "data" / "agent_stream.db"
    assert run_cli("create-user", "--email", "o@example.com", "--password", "pw", db=db).returncode == 0
    api_key = run_cli("create-api-key", "--email", "o@example.com", db=db).stdout.split()[-1]
    served = serve("--workers", "2", env={"CLOUDONIX_API_BASE_URL": api_base})
    assert served.db == db
    await served.answering({served.instance(0), served.instance(1)})
    pids = served.workers()
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession() as http:
        agent_uuid = await agent_over_api(http, served.base, headers, domain="acme")
        call = await connect(http, stream_url(served.base, agent_uuid, domain="acme"))
        call.account_sid = DOMAIN
        emulator.add_session(DOMAIN, call.session)
        call.start_reading()
        await call.handshake()
        await call.send_audio(tone_ulaw(0.3))

        served.proc.send_signal(signal.SIGTERM)
        assert await call.wait_closed(timeout=30) == (1001, "server shutting down")
    assert served.proc.wait(timeout=60) == 0, served.output()
    assert not any(alive(pid) for pid in pids.values())
    with sqlite3.connect(db) as conn:
        run = conn.execute("SELECT state, end_reason, close_code FROM workflow_runs").fetchone()
    assert run == ("completed", "server_shutdown", 1001)
    log = served.output()
    assert "SIGTERM: draining 2 workers" in log
    for index, pid in pids.items():
        assert f"worker {index} (pid {pid}) exited with code 0" in log


async def test_a_second_sigterm_does_not_cut_a_worker_s_drain_short(
    serve: Callable[..., Served],
) -> None:
    """systemd stops a service with SIGTERM to every process of it, so each worker gets one
    from it and one from the parent: the second must leave the drain alone (aiohttp's own
    handler would end the process there, exit code 1, its drain unfinished)."""
    served = serve("--workers", "2")
    await served.answering({served.instance(0), served.instance(1)})
    pids = served.workers()
    reader, writer = await asyncio.open_connection(HOST, served.port)
    writer.write(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    instance = (await reader.readuntil(b"}")).decode()
    index = next(i for i in pids if f'"{served.instance(i)}"' in instance)
    # a request in flight on that worker (its body never completes): its drain waits for it
    writer.write(b"POST /api/v1/workflows HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    await writer.drain()
    served.proc.send_signal(signal.SIGTERM)
    await until(lambda: "SIGTERM: draining 2 workers" in served.output(), "the parent's drain")
    # the second SIGTERM once the first is handled: two pending at once are one to the kernel
    await until(lambda: f"[worker {index}] agent_stream.workers: SIGTERM: draining this worker"
                in served.output(), "the worker to hear the parent's SIGTERM", timeout=10)
    os.kill(pids[index], signal.SIGTERM)
    await until(lambda: f"[worker {index}] agent_stream.workers: SIGTERM: already draining"
                in served.output(), "the worker to hear the second SIGTERM", timeout=10)
    # the drain waits for the request, up to run_app's shutdown timeout (15 s), then ends
    assert served.proc.wait(timeout=60) == 0, served.output()
    writer.close()
    assert f"worker {index} (pid {pids[index]}) exited with code 0" in served.output()


async def test_workers_of_a_killed_parent_end_by_themselves(serve: Callable[..., Served]) -> None:
    served = serve("--workers", "2")
    await served.answering({served.instance(0), served.instance(1)})
    pids = served.workers()
    decoders = {pid for worker in pids.values() for pid in spawned_children(worker)}
    served.proc.kill()
    served.proc.wait(timeout=10)
    await until(lambda: not any(alive(pid) for pid in set(pids.values()) | decoders),
                "the orphaned workers and their decoders to end")
    assert "the supervisor (pid" in served.output()
    with socket.socket() as probe:  # nothing listens on the port any more
        assert probe.connect_ex((HOST, served.port)) != 0


async def test_a_port_in_use_is_one_clear_error(serve: Callable[..., Served]) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "app.py", "serve", "--workers", "2", "--host", HOST,
             "--port", str(port), "--db", os.devnull + "/never.db"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"error: cannot listen on {HOST}:{port}: [Errno 98] Address already in use")
    assert "worker 0 started" not in done.stderr and "Traceback" not in done.stderr


def test_the_worker_count_comes_from_the_flag_then_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("AGENT_STREAM_WORKERS", "3")
    assert Settings.from_env().workers == 3
    assert Settings.from_env(workers=2).workers == 2
    monkeypatch.delenv("AGENT_STREAM_WORKERS")
    assert Settings.from_env().workers == 1
    assert Settings.from_env(port=9000, worker_index=2).instance_id == (
        f"{socket.gethostname()}:9000:2")
    bad = run_cli("serve", "--workers", "0", db=tmp_path / "x.db")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: --workers must be a whole number of 1 or more"


async def test_a_worker_that_keeps_dying_at_start_stops_the_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Restarting a worker that can never start would only fill the log."""
    monkeypatch.setattr(workers, "RESTART_DELAY_SECONDS", 0.01)
    supervisor = Supervisor(1, lambda index: [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(WorkersFailing) as failed:
        await asyncio.wait_for(supervisor.run(), 60)
    assert failed.value.exit_code == 3
    assert str(failed.value) == (
        f"worker 0 exited with code 3 within {workers.QUICK_EXIT_SECONDS:g} s of its start "
        f"{workers.GIVE_UP_AFTER_QUICK_EXITS} times in a row; giving up")
