"""Benchmark of the scripted voice agent: concurrent real-time calls in one server process.

Calls of a wave arrive spread over --spread seconds. Each simulated caller keeps its line
busy like a phone does (a 20 ms media frame every 20 ms, silence unless speaking), waits
for the greeting, says "yes", waits for the answer, says "goodbye" and is hung up on. Measured per wave:

- voice-to-voice latency: end of the caller's speech to the first agent audio frame that
  follows, minus the VAD's 0.5 s end-of-turn silence (what the engine itself adds);
- outbound audio gaps: time between consecutive media messages while the agent speaks,
  as the server sent them (p99 over all calls) and as the callers received them;
- the longest single outbound gap of any call (a pause of the whole event loop shows here);
- server CPU (main process + speech decoder process): share of a core, and per second of
  call; RSS growth per call and at idle after each wave (flat when calls leave nothing).

Run on demand, not in CI:  python bench/voice_bench.py [--waves 1,20,40,80]
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
from common import bench_server, percentile, tree_cpu_by_role, tree_cpu_seconds, tree_rss_mb
from provider_bench import one_call

from agent_stream.server import server_event_loop
from agent_stream.speech.tts import EspeakSynthesizer
from tests.provider_kits import CloudonixKit

VOICE = "en-us+m3"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waves", default="1,20,40,80", help="concurrent calls per wave")
    parser.add_argument("--server-log", type=Path, help="write the server's log to this file")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers N")
    parser.add_argument("--callers-nice", type=int, default=0,
                        help="lower the callers' CPU priority by this much once the server runs "
                             "(on a box of two cores, simulated callers compete with the server)")
    parser.add_argument("--callers-idle", action="store_true",
                        help="run the callers at SCHED_IDLE once the server runs: they then get only "
                             "CPU the server leaves, as callers on another machine would take none")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--spread", type=float, default=5.0,
                        help="seconds over which a wave's calls arrive")
    args = parser.parse_args()
    client_cpu0 = sum(os.times()[:2])
    voice = EspeakSynthesizer()
    yes = await voice.synthesize("yes", voice=VOICE, rate=160)
    goodbye = await voice.synthesize("goodbye", voice=VOICE, rate=160)
    kit = CloudonixKit()

    async with bench_server(server_log=args.server_log, kit=kit, workers=args.workers,
                            database=args.db) as bench:
        pid = bench.process.pid
        if args.callers_nice:
            os.nice(args.callers_nice)  # the server started before: it keeps its priority
        if args.callers_idle:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}; starter agent, callers say 'yes' then 'goodbye'; "
              f"{args.workers} worker(s) on {args.db}")
        print(f"server RSS at idle: {tree_rss_mb(pid):.0f} MB")
        print("calls  ok  v2v p50/p99 ms   server gap p99 max ms   client gap p99 ms  "
              "cpu core%  cpu ms/call-s  rss +MB/call")
        async with aiohttp.ClientSession() as http:
            for n in [int(x) for x in args.waves.split(",")]:
                idle_rss = tree_rss_mb(pid)
                cpu0 = tree_cpu_seconds(pid)
                roles0 = tree_cpu_by_role(pid)
                callers0 = sum(os.times()[:2])
                began = time.monotonic()
                peak = [idle_rss]

                async def sample(peak: list[float]) -> None:
                    while True:
                        peak[0] = max(peak[0], tree_rss_mb(pid))
                        await asyncio.sleep(0.5)

                sampler = asyncio.create_task(sample(peak))
                results = await asyncio.gather(*(
                    one_call(http, bench.base, bench.agent, kit, bench.account, bench.secret,
                             yes, goodbye, args.spread * i / n)
                    for i in range(n)))
                sampler.cancel()
                wall = time.monotonic() - began
                cpu = tree_cpu_seconds(pid) - cpu0
                roles = {role: seconds - roles0.get(role, 0.0)
                         for role, seconds in tree_cpu_by_role(pid).items()}
                callers = sum(os.times()[:2]) - callers0
                runs = await bench.runs(http, n)
                ok = sum(1 for r in results if r["close"] == (1000, "agent hung up"))
                v2v = [r["v2v"] * 1000 for r in results if "v2v" in r]
                client_gaps = [g * 1000 for r in results for g in r["gaps"]]
                server_p99 = [r["logs"].get("outbound_audio", {}).get("gap_p99_ms", 0) for r in runs]
                server_max = [r["logs"].get("outbound_audio", {}).get("gap_max_ms", 0) for r in runs]
                call_seconds = sum(r["duration_seconds"] or 0.0 for r in runs)
                print(f"{n:5d} {ok:3d}  {statistics.median(v2v):6.0f} / {percentile(v2v, 0.99):5.0f}"
                      f"     {max(server_p99):8.1f} {max(server_max):8.1f}"
                      f"       {percentile(client_gaps, 0.99):8.1f}"
                      f"       {cpu / wall * 100:6.0f}  {cpu / call_seconds * 1000:10.2f}"
                      f"     {(peak[0] - idle_rss) / n:8.2f}")
                print("      CPU ms per call-second by role: " + ", ".join(
                    f"{role} {seconds / call_seconds * 1000:.2f}"
                    for role, seconds in sorted(roles.items())
                ) + f"; callers {callers / call_seconds * 1000:.2f}; wall {wall:.1f} s")
                # what the wave asked of the whole box: above the cores there are, someone waits
                print("      share of the box's " + f"{os.cpu_count()} cores (100 % each): " + ", ".join(
                    f"{role} {seconds / wall * 100:.0f} %" for role, seconds in sorted(roles.items())
                ) + f", callers {callers / wall * 100:.0f} %, all {(cpu + callers) / wall * 100:.0f} %;"
                    f" calls live on average {call_seconds / wall:.0f}")
                for failure in sorted({str(r["close"]) for r in results if r["close"][0] != 1000}
                                      | {f"run {r['state']}: {r['error']}" for r in runs if r["error"]}):
                    print(f"      not ok: {failure}")
                await asyncio.sleep(2)
                print(f"      idle after wave: {tree_rss_mb(pid):.0f} MB")
        print(f"(the callers' own process used {sum(os.times()[:2]) - client_cpu0:.1f} s of CPU)")


if __name__ == "__main__":
    # callers on the same kind of loop as the server: they take less CPU from it
    with asyncio.Runner(loop_factory=server_event_loop) as runner:
        runner.run(main())
