"""Benchmark of the Agent Stream endpoint: accept-to-running time and server CPU per call.

Starts `python app.py` as its own process (so its CPU is measured alone), a local Cloudonix
emulator, and waves of simulated calls that stream real-time 8 kHz mu-law audio, then
prints what it measured. Run on demand, not in CI:

    python bench/stream_bench.py [--waves 1,10,50,100] [--seconds 10]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import unused_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_stream.simulator import connect, stream_url, tone_ulaw  # noqa: E402
from tests.cloudonix_emulator import CloudonixEmulator  # noqa: E402

DOMAIN = "bench.cloudonix.net"
TOKEN = "bench-token-0000000000"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def one_call(http: aiohttp.ClientSession, base: str, agent: str,
                   emulator: CloudonixEmulator, audio: bytes) -> tuple[int | None, str]:
    """One simulated call; returns the close code and reason (or the client-side error)."""
    call = await connect(http, stream_url(base, agent, domain="bench"))
    call.account_sid = DOMAIN
    emulator.add_session(DOMAIN, call.session)
    call.start_reading()
    try:
        await call.handshake()
        await call.send_audio(audio)
        await call.hang_up()
    except aiohttp.ClientError as exc:
        code, reason = await call.wait_closed(timeout=30)
        return code, f"{reason} ({type(exc).__name__} while sending)"
    return await call.wait_closed(timeout=30)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waves", default="1,10,50,100", help="concurrent calls per wave")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per call")
    parser.add_argument("--server-log", type=Path, help="write the server's log to this file")
    args = parser.parse_args()
    waves = [int(n) for n in args.waves.split(",")]

    emulator = CloudonixEmulator()
    emulator.add_domain(DOMAIN, TOKEN)
    emu_runner = web.AppRunner(emulator.make_app(), access_log=None)
    await emu_runner.setup()
    emu_port = unused_port()
    await web.TCPSite(emu_runner, "127.0.0.1", emu_port).start()

    workdir = Path(tempfile.mkdtemp(prefix="agent-stream-bench-"))
    db = workdir / "agent_stream.db"
    cli = [sys.executable, "app.py"]
    subprocess.run([*cli, "create-user", "--email", "b@example.com", "--password", "pw",
                    "--db", str(db)], cwd=ROOT, check=True, capture_output=True)
    key = subprocess.run([*cli, "create-api-key", "--email", "b@example.com", "--db", str(db)],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()[-1]
    port = unused_port()
    env = os.environ | {"CLOUDONIX_API_BASE_URL": f"http://127.0.0.1:{emu_port}"}
    server = subprocess.Popen(
        [*cli, "--host", "127.0.0.1", "--port", str(port), "--db", str(db)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=args.server_log.open("w") if args.server_log else subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    audio = tone_ulaw(args.seconds)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                try:
                    async with http.get(f"{base}/api/v1/health") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            await http.post(f"{base}/api/v1/telephony-configurations", headers=headers,
                            json={"provider": "cloudonix", "domain_id": DOMAIN, "bearer_token": TOKEN})
            async with http.post(f"{base}/api/v1/workflows", headers=headers,
                                 json={"name": "bench"}) as response:
                agent = (await response.json())["uuid"]

            print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
                  f"Python {platform.python_version()}; {args.seconds:.0f} s of audio per call")
            print(f"server RSS at idle: {rss_mb(server.pid):.0f} MB")
            print("calls  ok  cpu_s  cpu_ms/call  cpu_ms/call-s  core%  rss_MB  "
                  "accept->running p50/p99 ms  handshake p50/p99 ms")
            for n in waves:
                cpu_before = cpu_seconds(server.pid)
                began = time.monotonic()
                results = await asyncio.gather(
                    *(one_call(http, base, agent, emulator, audio) for _ in range(n)))
                wall = time.monotonic() - began
                cpu = cpu_seconds(server.pid) - cpu_before
                rss = rss_mb(server.pid)
                ok = sum(1 for code, _ in results if code == 1000)
                failures = {f"{code} {reason}" for code, reason in results if code != 1000}
                async with http.get(f"{base}/api/v1/workflow-runs?workflow_uuid={agent}&limit={n}",
                                    headers=headers) as response:
                    runs = (await response.json())["runs"]
                timings = [r["logs"].get("timing", {}) for r in runs]
                running = [t["accept_to_running_ms"] for t in timings if "accept_to_running_ms" in t]
                handshake = [t["handshake_ms"] for t in timings if "handshake_ms" in t]
                server_failures = {f"run {r['state']}: {r['error']}" for r in runs if r["error"]}
                print(f"{n:5d} {ok:3d} {cpu:6.2f} {cpu / n * 1000:12.1f} "
                      f"{cpu / (n * args.seconds) * 1000:14.2f} {cpu / wall * 100:6.1f} {rss:7.0f}  "
                      f"{statistics.median(running):11.1f} / {percentile(running, 0.99):6.1f}"
                      f"      {statistics.median(handshake):8.1f} / {percentile(handshake, 0.99):6.1f}")
                for failure in sorted(failures | server_failures):
                    print(f"      not ok: {failure}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        await emu_runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
