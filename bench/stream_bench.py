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
import time
from pathlib import Path

import aiohttp
from common import DOMAIN, CloudonixEmulator, bench_server, percentile, tree_cpu_seconds, tree_rss_mb

from agent_stream.server import server_event_loop
from agent_stream.simulator import connect, silence_ulaw, stream_url


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
    parser.add_argument("--workers", type=int, default=1, help="serve --workers N")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    waves = [int(n) for n in args.waves.split(",")]

    audio = silence_ulaw(args.seconds)  # an idle line: the relay cost, without speech
    definition = {"nodes": [{"id": "start", "kind": "start", "say": ""},
                            {"id": "wait", "kind": "agent", "say": ""}],
                  "edges": [{"from": "start", "to": "wait", "dtmf": "1"},
                            {"from": "wait", "to": "start", "dtmf": "2"}]}
    async with bench_server(definition, args.server_log, workers=args.workers,
                            database=args.db) as bench:
        server, base, agent, emulator = bench.process, bench.base, bench.agent, bench.emulator
        async with aiohttp.ClientSession() as http:
            print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
                  f"Python {platform.python_version()}; {args.seconds:.0f} s of audio per call; "
                  f"{args.workers} worker(s) on {args.db}")
            print(f"server RSS at idle: {tree_rss_mb(server.pid):.0f} MB")
            print("calls  ok  cpu_s  cpu_ms/call  cpu_ms/call-s  core%  rss_MB  "
                  "accept->running p50/p99 ms  handshake p50/p99 ms")
            for n in waves:
                cpu_before = tree_cpu_seconds(server.pid)
                began = time.monotonic()
                results = await asyncio.gather(
                    *(one_call(http, base, agent, emulator, audio) for _ in range(n)))
                wall = time.monotonic() - began
                cpu = tree_cpu_seconds(server.pid) - cpu_before
                rss = tree_rss_mb(server.pid)
                ok = sum(1 for code, _ in results if code == 1000)
                failures = {f"{code} {reason}" for code, reason in results if code != 1000}
                runs = await bench.runs(http, n)
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


if __name__ == "__main__":
    # callers on the same kind of loop as the server: they take less CPU from it
    with asyncio.Runner(loop_factory=server_event_loop) as runner:
        runner.run(main())
