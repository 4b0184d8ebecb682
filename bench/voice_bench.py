"""Benchmark of the scripted voice agent: concurrent real-time calls in one server process.

Calls of a wave arrive spread over --spread seconds. Each simulated caller keeps its line
busy like a phone does (a 20 ms media frame every 20 ms, silence unless speaking), waits
for the greeting, says "yes", waits for the answer, says "goodbye" and is hung up on. Measured per wave:

- voice-to-voice latency: end of the caller's speech to the first agent audio frame that
  follows, minus the VAD's 0.5 s end-of-turn silence (what the engine itself adds);
- outbound audio gaps: time between consecutive media messages while the agent speaks,
  as the server sent them (p99 over all calls) and as the callers received them;
- server CPU (main process + speech decoder process) and RSS growth per call.

Run on demand, not in CI:  python bench/voice_bench.py [--waves 1,20,40,80]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from common import DOMAIN, bench_server, children_cpu_seconds, cpu_seconds, percentile, rss_mb

from agent_stream.server import server_event_loop
from agent_stream.simulator import SimulatedCall, connect, pcm16_to_ulaw, stream_url
from agent_stream.speech.tts import EspeakSynthesizer

FRAME = 160  # 20 ms of 8 kHz mu-law
VAD_STOP_SECONDS = 0.5


class TimedEvents(list):  # type: ignore[type-arg]
    """The simulator's received-events list, stamping each arrival and waking whoever
    waits for an event like it (no polling: 80 callers polling would load the machine)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self._waiters: list[tuple[Callable[[dict[str, Any], float], bool], asyncio.Future[float]]] = []

    def append(self, item: Any) -> None:
        now = time.monotonic()
        self.times.append(now)
        super().append(item)
        for waiter in [w for w in self._waiters if w[0](item, now)]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(now)

    async def first(self, matches: Callable[[dict[str, Any], float], bool],
                    timeout: float = 30.0) -> float:
        """When the first event that `matches` arrived, waiting for it if need be."""
        for event, at in zip(self, self.times, strict=True):
            if matches(event, at):
                return at
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiter = (matches, future)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)


def mark(name: str) -> Callable[[dict[str, Any], float], bool]:
    """The server's mark named `name`."""
    return lambda event, _: event.get("event") == "mark" and event.get("mark", {}).get("name") == name


def media_after(moment: float) -> Callable[[dict[str, Any], float], bool]:
    """Agent audio that arrived after `moment`."""
    return lambda event, at: at > moment and event.get("event") == "media"


class Line:
    """A phone line: one pre-encoded media frame every 20 ms on an absolute clock."""

    def __init__(self, call: SimulatedCall) -> None:
        self._call = call
        self._queue: list[str] = []
        self._silence = self._frame(b"\xff" * FRAME)
        self.speech_ended = asyncio.get_running_loop().create_future()

    def _frame(self, ulaw: bytes) -> str:
        return json.dumps({"event": "media", "streamSid": self._call.stream_sid,
                           "media": {"payload": base64.b64encode(ulaw).decode()}})

    def speak(self, ulaw: bytes) -> asyncio.Future[float]:
        self.speech_ended = asyncio.get_running_loop().create_future()
        self._queue = [self._frame(ulaw[i:i + FRAME]) for i in range(0, len(ulaw), FRAME)]
        return self.speech_ended

    async def run(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._call.ws.closed:
            if self._queue:
                frame = self._queue.pop(0)
                if not self._queue and not self.speech_ended.done():
                    self.speech_ended.set_result(time.monotonic())
            else:
                frame = self._silence
            try:
                await self._call.ws.send_str(frame)
            except (ConnectionError, RuntimeError):
                return
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - time.monotonic()))


async def one_call(http: aiohttp.ClientSession, base: str, agent: str, emulator: Any,
                   yes: bytes, goodbye: bytes, delay: float) -> dict[str, Any]:
    await asyncio.sleep(delay)  # calls arrive spread out, not all in the same 20 ms
    call = await connect(http, stream_url(base, agent, domain="bench"))
    call.account_sid = DOMAIN
    call.received = TimedEvents()
    emulator.add_session(DOMAIN, call.session)
    call.start_reading()
    await call.handshake()
    line = Line(call)
    sender = asyncio.create_task(line.run())
    events: TimedEvents = call.received  # type: ignore[assignment]
    result: dict[str, Any] = {}
    try:
        await events.first(mark("utt-1"))
        ended = await line.speak(yes)
        result["v2v"] = await events.first(media_after(ended)) - ended - VAD_STOP_SECONDS
        await events.first(mark("utt-2"))
        await line.speak(goodbye)
        result["close"] = await call.wait_closed(timeout=30)
    except TimeoutError:
        result["close"] = (call.ws.close_code, f"client timed out waiting for the agent "
                           f"({call.close_reason!r}, {call.ws.exception()!r})")
    finally:
        sender.cancel()
    media_times = [at for event, at in zip(events, events.times, strict=True)
                   if event.get("event") == "media"]
    result["gaps"] = [b - a for a, b in zip(media_times, media_times[1:], strict=False) if b - a < 0.2]
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waves", default="1,20,40,80", help="concurrent calls per wave")
    parser.add_argument("--server-log", type=Path, help="write the server's log to this file")
    parser.add_argument("--spread", type=float, default=5.0,
                        help="seconds over which a wave's calls arrive")
    args = parser.parse_args()
    client_cpu0 = sum(os.times()[:2])
    voice = EspeakSynthesizer()
    yes = pcm16_to_ulaw(await voice.synthesize("yes", voice="en-us+m3", rate=160))
    goodbye = pcm16_to_ulaw(await voice.synthesize("goodbye", voice="en-us+m3", rate=160))

    async with bench_server(server_log=args.server_log) as bench:
        pid = bench.process.pid
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}; starter agent, callers say 'yes' then 'goodbye'")
        print(f"server RSS at idle: {rss_mb(pid):.0f} MB")
        print("calls  ok  v2v p50/p99 ms   server gap p99 max ms   client gap p99 ms  "
              "cpu core%  rss +MB/call")
        async with aiohttp.ClientSession() as http:
            for n in [int(x) for x in args.waves.split(",")]:
                idle_rss = rss_mb(pid)
                cpu0 = cpu_seconds(pid) + children_cpu_seconds(pid)
                began = time.monotonic()
                peak = [idle_rss]

                async def sample(peak: list[float]) -> None:
                    while True:
                        peak[0] = max(peak[0], rss_mb(pid))
                        await asyncio.sleep(0.5)

                sampler = asyncio.create_task(sample(peak))
                results = await asyncio.gather(*(
                    one_call(http, bench.base, bench.agent, bench.emulator, yes, goodbye,
                             args.spread * i / n)
                    for i in range(n)))
                sampler.cancel()
                wall = time.monotonic() - began
                cpu = cpu_seconds(pid) + children_cpu_seconds(pid) - cpu0
                runs = await bench.runs(http, n)
                ok = sum(1 for r in results if r["close"] == (1000, "agent hung up"))
                v2v = [r["v2v"] * 1000 for r in results if "v2v" in r]
                client_gaps = [g * 1000 for r in results for g in r["gaps"]]
                server_p99 = [r["logs"].get("outbound_audio", {}).get("gap_p99_ms", 0) for r in runs]
                server_max = [r["logs"].get("outbound_audio", {}).get("gap_max_ms", 0) for r in runs]
                print(f"{n:5d} {ok:3d}  {statistics.median(v2v):6.0f} / {percentile(v2v, 0.99):5.0f}"
                      f"     {max(server_p99):8.1f} {max(server_max):8.1f}"
                      f"       {percentile(client_gaps, 0.99):8.1f}"
                      f"       {cpu / wall * 100:6.0f}  {(peak[0] - idle_rss) / n:8.2f}")
                for failure in sorted({str(r["close"]) for r in results if r["close"][0] != 1000}
                                      | {f"run {r['state']}: {r['error']}" for r in runs if r["error"]}):
                    print(f"      not ok: {failure}")
                await asyncio.sleep(2)
        print(f"(the callers' own process used {sum(os.times()[:2]) - client_cpu0:.1f} s of CPU)")


if __name__ == "__main__":
    # callers on the same kind of loop as the server: they take less CPU from it
    with asyncio.Runner(loop_factory=server_event_loop) as runner:
        runner.run(main())
