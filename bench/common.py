"""What the benchmarks share: a server process of our own, the emulator, /proc readings."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import unused_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cloudonix_emulator import CloudonixEmulator  # noqa: E402
from tests.provider_kits import Kit  # noqa: E402

DOMAIN = "bench.cloudonix.net"
TOKEN = "bench-token-0000000000"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# How often `ticker` asks the event loop to wake it.
TICK_SECONDS = 0.005


async def ticker(lags: list[float], stop: asyncio.Event) -> None:
    """How late the loop wakes a task that asked to sleep TICK_SECONDS."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        asked = loop.time()
        await asyncio.sleep(TICK_SECONDS)
        lags.append(loop.time() - asked - TICK_SECONDS)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its finished children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / CLOCK_TICKS


def children_cpu_seconds(pid: int) -> float:
    """CPU of a process's live child processes (the speech decoder)."""
    total = 0.0
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        for child_pid in child.read_text().split():
            total += cpu_seconds(int(child_pid))
    return total


def process_tree(pid: int) -> list[int]:
    """A process and all its live descendants (workers, their speech decoders)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            pids += process_tree(int(child))
    return pids


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and of all its live descendants."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += cpu_seconds(member)
        except FileNotFoundError:  # ended since it was listed
            pass
    return total


def tree_cpu_by_role(pid: int) -> dict[str, float]:
    """CPU of a process tree by role: the supervisor, the serving processes (workers, or
    the one server), and the speech decoders (children of a serving process)."""
    roles: dict[str, float] = {}
    for member in process_tree(pid):
        try:
            command = Path(f"/proc/{member}/cmdline").read_bytes().split(b"\0")
            seconds = cpu_seconds(member)
        except FileNotFoundError:
            continue
        if b"--parent-pid" in command:
            role = "workers"
        elif member == pid:
            role = "supervisor" if any(b"--parent-pid" in Path(f"/proc/{c}/cmdline").read_bytes()
                                       for c in process_tree(pid)[1:]
                                       if Path(f"/proc/{c}/cmdline").exists()) else "server"
        else:
            role = "decoders"
        roles[role] = roles.get(role, 0.0) + seconds
    return roles


def tree_rss_mb(pid: int) -> float:
    total = 0.0
    for member in process_tree(pid):
        try:
            total += rss_mb(member)
        except FileNotFoundError:
            pass
    return total


# The benches' PostgreSQL (`--db postgresql`): a database of their own on this server.
POSTGRES_SERVER = os.environ.get("AGENT_STREAM_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
BENCH_SECRET_KEY = "YmVuY2gtc2VjcmV0LWtleS0zMi1ieXRlcy1sb25nISE="


async def _postgres_admin(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_SERVER + "/postgres", timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@dataclass
class BenchServer:
    """`python app.py` on a loopback port with one user, key, configuration and agent."""

    process: subprocess.Popen[bytes]
    base: str
    headers: dict[str, str]
    agent: str
    emulator: Any  # the Cloudonix emulator, or the kit's
    kit: Kit | None = None  # a provider of the contract suite's kits, when not Cloudonix
    account: str = DOMAIN
    secret: str = TOKEN

    async def runs(self, http: aiohttp.ClientSession, limit: int) -> list[dict[str, Any]]:
        """The newest runs, once they have all ended (a run is final just after its close);
        read page by page (the API gives at most 200 at a time)."""
        for _ in range(100):
            runs: list[dict[str, Any]] = []
            while len(runs) < limit:
                async with http.get(
                    f"{self.base}/api/v1/workflow-runs?workflow_uuid={self.agent}"
                    f"&limit={min(200, limit - len(runs))}&offset={len(runs)}",
                    headers=self.headers,
                ) as response:
                    page = (await response.json())["runs"]
                runs += page
                if not page:
                    break
            if all(run["ended_at"] for run in runs):
                break
            await asyncio.sleep(0.1)
        return runs


@asynccontextmanager
async def bench_server(definition: dict[str, Any] | None = None,
                       server_log: Path | None = None, kit: Kit | None = None, *,
                       workers: int = 1, database: str = "sqlite") -> AsyncIterator[BenchServer]:
    """The server, with a Cloudonix configuration and emulator, or `kit`'s provider's;
    `workers` server processes (`serve --workers`), on a new SQLite file or, with
    `database="postgresql"`, a new database on the local PostgreSQL server."""
    emulator: Any = CloudonixEmulator() if kit is None else kit.emulator
    emu_runner = web.AppRunner(emulator.make_app(), access_log=None)
    await emu_runner.setup()
    emu_port = unused_port()
    await web.TCPSite(emu_runner, "127.0.0.1", emu_port).start()
    emulator_url = f"http://127.0.0.1:{emu_port}"
    if kit is None:
        emulator.add_domain(DOMAIN, TOKEN)
        provider, account, secret = "cloudonix", DOMAIN, TOKEN
        config: dict[str, Any] = {"domain_id": DOMAIN, "bearer_token": TOKEN}
    else:
        kit.base_url = emulator_url
        provider = kit.provider
        account, secret = kit.new_account()
        config = kit.config(account, secret)

    folder = Path(tempfile.mkdtemp(prefix="agent-stream-bench-"))
    db = str(folder / "agent_stream.db")
    env = os.environ | {f"{provider.upper()}_API_BASE_URL": emulator_url}
    postgres_name = None
    if database == "postgresql":
        postgres_name = f"agent_stream_bench_{os.getpid()}"
        await _postgres_admin(f'CREATE DATABASE "{postgres_name}"')
        db = f"{POSTGRES_SERVER}/{postgres_name}"
        env |= {"AGENT_STREAM_SECRET_KEY": BENCH_SECRET_KEY,
                "AGENT_STREAM_RECORDINGS": str(folder / "recordings")}
    cli = [sys.executable, "app.py"]
    subprocess.run([*cli, "create-user", "--email", "b@example.com", "--password", "pw",
                    "--db", db], cwd=ROOT, check=True, capture_output=True, env=env)
    key = subprocess.run([*cli, "create-api-key", "--email", "b@example.com", "--db", db],
                         cwd=ROOT, check=True, capture_output=True, text=True, env=env).stdout.split()[-1]
    port = unused_port()
    process = subprocess.Popen(
        [*cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--db", db,
         "--workers", str(workers)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=server_log.open("w") if server_log else subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        # every worker answers before the first wave (a fresh connection each time)
        seen: set[str] = set()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            for _ in range(1200):
                try:
                    async with http.get(f"{base}/api/v1/health") as response:
                        if response.status == 200:
                            seen.add((await response.json()).get("instance", ""))
                            if len(seen) >= workers:
                                break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/v1/telephony-configurations", headers=headers,
                                 json={"provider": provider} | config) as response:
                assert response.status == 201, await response.text()
            body: dict[str, Any] = {"name": "bench"}
            if definition is not None:
                body["definition"] = definition
            async with http.post(f"{base}/api/v1/workflows", headers=headers, json=body) as response:
                agent = (await response.json())["uuid"]
        yield BenchServer(process, base, headers, agent, emulator, kit, account, secret)
    finally:
        process.terminate()
        process.wait(timeout=60)
        await emu_runner.cleanup()
        if postgres_name:
            await _postgres_admin(f'DROP DATABASE IF EXISTS "{postgres_name}" WITH (FORCE)')
