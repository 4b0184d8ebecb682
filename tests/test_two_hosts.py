"""The contract's section 8 tried as a new user would: two `serve` processes on different
ports (two hosts, as far as they can tell) share one PostgreSQL database."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import unused_port

from agent_stream.crypto import KEY_ENV
from agent_stream.simulator import SimulatedCall, connect, stream_url
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import (
    DOMAIN,
    POSTGRES_SECRET_KEY,
    TOKEN,
    agent_over_api,
    empty_tables,
    keep_line_open,
)
from tests.test_process import ROOT, wait_healthy


@pytest.fixture
async def database(postgres_database: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    await empty_tables(postgres_database)
    return postgres_database


async def test_two_serve_processes_share_one_postgresql_database(
    database: str, tmp_path: Path, cloudonix: tuple[CloudonixEmulator, str]
) -> None:
    emulator, api_base = cloudonix
    emulator.add_domain(DOMAIN, TOKEN)
    env = os.environ | {KEY_ENV: POSTGRES_SECRET_KEY, "CLOUDONIX_API_BASE_URL": api_base,
                        "AGENT_STREAM_RECORDINGS": str(tmp_path / "recordings")}
    cli = [sys.executable, "app.py"]
    made = subprocess.run([*cli, "create-user", "--email", "o@example.com", "--password", "pw",
                           "--max-concurrent-calls", "10", "--db", database],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    key = subprocess.run([*cli, "create-api-key", "--email", "o@example.com", "--db", database],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60).stdout.split()[-1]
    headers = {"Authorization": f"Bearer {key}"}
    ports = [unused_port(), unused_port()]
    servers = [subprocess.Popen([*cli, "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--db", database], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for port in ports]
    one, two = (f"http://127.0.0.1:{port}" for port in ports)
    try:
        async with aiohttp.ClientSession() as http:
            for base, proc in zip((one, two), servers, strict=True):
                await wait_healthy(http, base, proc)
            # made through one, used through the other
            waiting = {"settings": {"silence_timeout_seconds": 600},
                       "nodes": [{"id": "start", "kind": "start", "say": ""},
                                 {"id": "wait", "kind": "agent", "say": ""}],
                       "edges": [{"from": "start", "to": "wait", "dtmf": "1"}]}
            agent = await agent_over_api(http, one, headers, domain=DOMAIN, definition=waiting)

            async def dial(base: str) -> SimulatedCall:
                call = await connect(http, stream_url(base, agent, domain=DOMAIN))
                call.account_sid = DOMAIN
                emulator.add_session(DOMAIN, call.session)
                await call.handshake()
                return call

            calls = await asyncio.gather(*(dial(one if i % 2 else two) for i in range(50)))
            readers = {call.start_reading(): call for call in calls}
            refused: set[asyncio.Task[None]] = set()
            pending = set(readers)
            while len(refused) < 40:
                done, pending = await asyncio.wait(pending, timeout=30,
                                                   return_when=asyncio.FIRST_COMPLETED)
                assert done, f"only {len(refused)} of 40 refusals came"
                refused |= done
            live = [readers[r] for r in pending]
            assert len(live) == 10
            lines = [asyncio.create_task(keep_line_open(call, 90)) for call in live]
            for reader in refused:
                assert await readers[reader].wait_closed() == (
                    1008, "quota exceeded: 10 concurrent calls already running")

            async with http.get(f"{two}/api/v1/workflow-runs?limit=100", headers=headers) as response:
                runs = (await response.json())["runs"]
            assert len(runs) == 10 and {r["state"] for r in runs} == {"running"}
            for call in live:
                await call.hang_up()
                assert await call.wait_closed() == (1000, "call ended")
            for line in lines:
                line.cancel()

            # three live calls on each; then one of the two is killed
            live = list(await asyncio.gather(*(dial(one if i % 2 else two) for i in range(6))))
            lines = [asyncio.create_task(keep_line_open(call, 90)) for call in live]
            on_one, on_two = [], []
            for _ in range(100):
                async with http.get(f"{two}/api/v1/workflow-runs?limit=6&state=running",
                                    headers=headers) as response:
                    runs = (await response.json())["runs"]
                if len(runs) == 6:
                    break
                await asyncio.sleep(0.1)
            for run in runs:
                (on_one if run["instance_id"].endswith(f":{ports[0]}:0") else on_two).append(run["id"])
            assert len(on_one) == len(on_two) == 3
            servers[0].send_signal(signal.SIGKILL)
            servers[0].wait(timeout=10)
            # within 45 s no run is left running: the survivor fails the dead one's runs
            deadline = asyncio.get_running_loop().time() + 45
            while True:
                async with http.get(f"{two}/api/v1/workflow-runs?limit=100",
                                    headers=headers) as response:
                    runs = {r["id"]: r for r in (await response.json())["runs"]}
                if all(runs[i]["state"] == "failed" for i in on_one):
                    break
                assert asyncio.get_running_loop().time() < deadline, "the dead one's runs stay open"
                await asyncio.sleep(1)
            assert {runs[i]["end_reason"] for i in on_one} == {"instance_lost"}
            # the survivor's calls are untouched: still running, still open
            assert {runs[i]["state"] for i in on_two} == {"running"}, [
                (runs[i]["end_reason"], runs[i]["close_code"], runs[i]["error"]) for i in on_two]
            survivors = live[0::2]  # the calls placed on the second server
            for call in survivors:
                await call.hang_up()
                assert await call.wait_closed() == (1000, "call ended")
            for line in lines:
                line.cancel()
    finally:
        for proc in servers:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
