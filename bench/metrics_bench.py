"""What the metrics cost per outbound audio frame, and /metrics moving under load.

1. Per frame (always): the output transport already times every media message it sends
   (`time.monotonic()` and an append to the call's gap list: the run's
   `logs.outbound_audio`). Measured per frame: that alone (before /metrics); with one
   `Histogram.observe` per frame (the obvious feed, not used); and with what the server
   does, `CallFeed.take` every 5 s (250 frames) handing a sorted batch to the histogram.
   Each in prometheus-client's in-memory mode (one process) and in its multiprocess mode
   (`--workers N`: values in memory-mapped files), the latter in a child process because
   the mode is chosen when prometheus-client is imported.
2. `--calls N` (optional): a wave of N voice calls (bench/voice_bench.py's callers) against
   a real server, scraping /metrics every second: the live-call gauge and the gap and
   reply histograms as they move.

Run on demand, not in CI:  python bench/metrics_bench.py [--calls 20] [--workers 2]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FRAMES = 250_000
BATCH = 250  # frames between two takes: 5 s of 20 ms frames


def per_frame_costs() -> dict[str, float]:
    """Nanoseconds per frame of each way of feeding the gap histogram."""
    from prometheus_client import CollectorRegistry, Histogram

    from agent_stream.metrics import GAP_BUCKETS, REPLY_BUCKETS, CallFeed

    registry = CollectorRegistry()
    gaps_h = Histogram("gap_seconds", "", ["provider"], buckets=GAP_BUCKETS, registry=registry)
    replies_h = Histogram("reply_seconds", "", ["provider"], buckets=REPLY_BUCKETS, registry=registry)
    child = gaps_h.labels("cloudonix")

    def before() -> float:
        gaps: list[float] = []
        last = 0.0
        began = time.perf_counter()
        for _ in range(FRAMES):
            now = time.monotonic()
            if last and len(gaps) < 100_000_000:
                gaps.append(now - last)
            last = now
        return time.perf_counter() - began

    def observe_each() -> float:
        gaps: list[float] = []
        last = 0.0
        began = time.perf_counter()
        for _ in range(FRAMES):
            now = time.monotonic()
            if last and len(gaps) < 100_000_000:
                gap = now - last
                gaps.append(gap)
                child.observe(gap)
            last = now
        return time.perf_counter() - began

    def batched() -> tuple[float, float]:
        gaps: list[float] = []
        replies: list[int] = []
        feed = CallFeed(child, replies_h.labels("cloudonix"))
        last = 0.0
        taking = 0.0
        began = time.perf_counter()
        for _ in range(FRAMES // BATCH):  # the server takes on a timer, not by counting frames
            for _ in range(BATCH):
                now = time.monotonic()
                if last and len(gaps) < 100_000_000:
                    gaps.append(now - last)
                last = now
            took = time.perf_counter()
            feed.take(gaps, [], replies)
            taking += time.perf_counter() - took
        framing = time.perf_counter() - began - taking
        return framing, taking

    results: dict[str, list[float]] = {"before": [], "observe_each": [], "batched": []}
    for _ in range(5):  # interleaved, best of five: the machine is shared
        results["before"].append(before())
        results["observe_each"].append(observe_each())
        framing, taking = batched()
        results["before"].append(framing)  # the same loop, the takes timed apart
        results["batched"].append(taking)
    costs = {name: min(times) / FRAMES * 1e9 for name, times in results.items()}
    costs["observe_each"] -= costs["before"]
    return costs


def print_costs(mode: str, costs: dict[str, float]) -> None:
    print(f"{mode:>13}: timing a frame (before) {costs['before']:4.0f} ns"
          f" | + observe each frame {costs['observe_each']:5.0f} ns"
          f" | + a batch every {BATCH} frames (ours) {costs['batched']:4.0f} ns per frame")


async def wave(calls: int, workers: int, spread: float) -> None:
    """N voice calls, /metrics scraped every second while they run."""
    import aiohttp
    from common import bench_server
    from prometheus_client.parser import text_string_to_metric_families
    from provider_bench import one_call
    from voice_bench import VOICE

    from agent_stream.speech.tts import EspeakSynthesizer
    from tests.provider_kits import CloudonixKit

    voice = EspeakSynthesizer()
    yes = await voice.synthesize("yes", voice=VOICE, rate=160)
    goodbye = await voice.synthesize("goodbye", voice=VOICE, rate=160)
    kit = CloudonixKit()
    wanted = {
        "agent_stream_calls_live": "live",
        "agent_stream_calls_started_total": "started",
        "agent_stream_calls_ended_total": "ended",
        "agent_stream_outbound_audio_gap_seconds_count": "gaps",
        "agent_stream_reply_latency_seconds_count": "replies",
        "agent_stream_handshake_seconds_count": "handshakes",
    }
    async with bench_server(kit=kit, workers=workers) as bench, aiohttp.ClientSession() as http:
        async def scrape() -> dict[str, float]:
            async with http.get(f"{bench.base}/metrics") as response:
                text = await response.text()
            seen = dict.fromkeys(wanted.values(), 0.0)
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in wanted:
                        seen[wanted[sample.name]] += sample.value
            return seen

        print(f"{calls} calls arriving over {spread:g} s, {workers} worker(s); "
              f"{bench.base}/metrics every second (scrape it yourself meanwhile, too):")
        print("   t   " + "  ".join(f"{name:>10}" for name in wanted.values()))
        began = time.monotonic()
        callers = asyncio.gather(*(
            one_call(http, bench.base, bench.agent, kit, bench.account, bench.secret, yes, goodbye,
                     spread * i / calls) for i in range(calls)))
        while True:
            done = callers.done()
            seen = await scrape()
            print(f"{time.monotonic() - began:5.1f}s " + "  ".join(f"{v:10.0f}" for v in seen.values()))
            if done:
                break
            await asyncio.sleep(1.0)
        results = await callers
        ok = sum(1 for r in results if r["close"] == (1000, "agent hung up"))
        print(f"{ok}/{calls} calls ended as planned")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=0, help="also run a wave of N calls, scraping")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers N for the wave")
    parser.add_argument("--spread", type=float, default=5.0, help="seconds over which calls arrive")
    parser.add_argument("--costs-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.costs_json:  # the child process of the multiprocess measurement
        print(json.dumps(per_frame_costs()))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{FRAMES} frames, best of 5")
    print_costs("in memory", per_frame_costs())
    with tempfile.TemporaryDirectory() as directory:
        child = subprocess.run(
            [sys.executable, __file__, "--costs-json"], check=True, capture_output=True, text=True,
            env=os.environ | {"PROMETHEUS_MULTIPROC_DIR": directory},
        )
    print_costs("multiprocess", json.loads(child.stdout.splitlines()[-1]))
    if args.calls:
        from agent_stream.server import server_event_loop

        with asyncio.Runner(loop_factory=server_event_loop) as runner:
            runner.run(wave(args.calls, args.workers, args.spread))


if __name__ == "__main__":
    main()
