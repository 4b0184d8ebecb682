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
                       server_log: Path | None = None, kit: Kit | None = None) -> AsyncIterator[BenchServer]:
    """The server, with a Cloudonix configuration and emulator, or `kit`'s provider's."""
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

    db = Path(tempfile.mkdtemp(prefix="agent-stream-bench-")) / "agent_stream.db"
    cli = [sys.executable, "app.py"]
    subprocess.run([*cli, "create-user", "--email", "b@example.com", "--password", "pw",
                    "--db", str(db)], cwd=ROOT, check=True, capture_output=True)
    key = subprocess.run([*cli, "create-api-key", "--email", "b@example.com", "--db", str(db)],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()[-1]
    port = unused_port()
    env = os.environ | {f"{provider.upper()}_API_BASE_URL": emulator_url}
    process = subprocess.Popen(
        [*cli, "--host", "127.0.0.1", "--port", str(port), "--db", str(db)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=server_log.open("w") if server_log else subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"{base}/api/v1/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
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
        process.wait(timeout=30)
        await emu_runner.cleanup()
