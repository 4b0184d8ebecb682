"""Benchmark of one conversation per call over each provider's own framing: JSON text with
base64 audio (Cloudonix, Twilio, Telnyx, Plivo, Exotel) against binary frames (Vonage,
Asterisk), the same agent and callers otherwise.

For each provider a server process of its own (python app.py), the provider's REST API
played by the contract suite's emulator, and a wave of concurrent real-time calls: each
caller's line carries a frame every 20 ms in the provider's codec and framing, waits for
the greeting, says "yes", waits for the answer, says "goodbye" and is hung up on.
Measured per provider: server CPU per call-second (main process and speech decoder), the
outbound audio gap p99 as the server sent it (worst call) and as the callers received it.

Run on demand, not in CI:  python bench/provider_bench.py [--providers cloudonix,vonage] [--calls 40]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from common import bench_server, children_cpu_seconds, cpu_seconds, percentile

from agent_stream.audio import Codec
from agent_stream.providers.base import Heard
from agent_stream.server import server_event_loop
from agent_stream.simulator import SimulatedCall, connect, stream_url
from agent_stream.speech.tts import EspeakSynthesizer
from tests.provider_kits import KITS, Kit

FRAME_SECONDS = 0.02
VAD_STOP_SECONDS = 0.5


class TimedHeard(list):  # type: ignore[type-arg]
    """What a caller heard, each message stamped on arrival, waking whoever waits for it."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self._waiters: list[tuple[Callable[[Heard, float], bool], asyncio.Future[float]]] = []

    def append(self, item: Any) -> None:
        now = time.monotonic()
        self.times.append(now)
        super().append(item)
        for waiter in [w for w in self._waiters if w[0](item, now)]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(now)

    async def first(self, matches: Callable[[Heard, float], bool], timeout: float = 30.0) -> float:
        for heard, at in zip(self, self.times, strict=True):
            if matches(heard, at):
                return at
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        waiter = (matches, future)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)


def mark(name: str) -> Callable[[Heard, float], bool]:
    return lambda heard, _: heard.kind == "mark" and heard.name == name


def media_after(moment: float) -> Callable[[Heard, float], bool]:
    return lambda heard, at: at > moment and heard.kind == "media"


class Line:
    """A phone line in the provider's framing: one pre-encoded frame every 20 ms."""

    def __init__(self, call: SimulatedCall) -> None:
        self._call = call
        self._codec = Codec(call.side.codec.encoding, call.side.codec.rate)
        self._frame_bytes = self._codec.bytes_per_second // 50
        self._silence = self._message(self._codec.silence(self._frame_bytes))
        self._queue: list[str | bytes] = []
        self.speech_ended: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def _message(self, payload: bytes) -> str | bytes:
        return self._call.side.media(self._call.identity, payload, sequence=0, chunk=0)

    def speak(self, pcm_8k: bytes) -> asyncio.Future[float]:
        encoded = self._codec.encode(pcm_8k, 8000)
        size = self._frame_bytes
        self.speech_ended = asyncio.get_running_loop().create_future()
        self._queue = [self._message(encoded[i:i + size]) for i in range(0, len(encoded), size)]
        return self.speech_ended

    async def run(self) -> None:
        start, n = time.monotonic(), 0
        while not self._call.ws.closed:
            if self._queue:
                frame = self._queue.pop(0)
                if not self._queue and not self.speech_ended.done():
                    self.speech_ended.set_result(time.monotonic())
            else:
                frame = self._silence
            try:
                await self._call.send(frame)
            except (ConnectionError, RuntimeError):
                return
            n += 1
            await asyncio.sleep(max(0.0, start + n * FRAME_SECONDS - time.monotonic()))


async def one_call(http: aiohttp.ClientSession, base: str, agent: str, kit: Kit, account: str,
                   secret: str, yes: bytes, goodbye: bytes, delay: float) -> dict[str, Any]:
    await asyncio.sleep(delay)
    who = kit.identity(account)
    kit.make_live(account, who)
    url = stream_url(base, agent, provider=kit.provider, newer_form=True)
    call = await connect(http, url, provider=kit.provider, encoding=kit.encoding,
                         secrets=kit.secrets(secret), **who)
    heard = call.heard = TimedHeard()
    call.start_reading()
    await call.handshake()
    line = Line(call)
    sender = asyncio.create_task(line.run())
    result: dict[str, Any] = {}
    try:
        await heard.first(mark("utt-1"))
        ended = await line.speak(yes)
        result["v2v"] = await heard.first(media_after(ended)) - ended - VAD_STOP_SECONDS
        await heard.first(mark("utt-2"))
        await line.speak(goodbye)
        result["close"] = await call.wait_closed(timeout=30)
    except TimeoutError:
        result["close"] = (call.ws.close_code, f"client timed out ({call.close_reason!r})")
    finally:
        sender.cancel()
    arrivals = [at for item, at in zip(heard, heard.times, strict=True) if item.kind == "media"]
    result["gaps"] = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False) if b - a < 0.2]
    return result


async def bench_provider(name: str, calls: int, spread: float, yes: bytes, goodbye: bytes,
                         server_log: Path | None) -> None:
    kit = KITS[name]()
    async with bench_server(server_log=server_log, kit=kit) as bench:
        pid = bench.process.pid
        async with aiohttp.ClientSession() as http:
            cpu0 = cpu_seconds(pid) + children_cpu_seconds(pid)
            results = await asyncio.gather(*(
                one_call(http, bench.base, bench.agent, kit, bench.account, bench.secret, yes,
                         goodbye, spread * i / calls)
                for i in range(calls)))
            cpu = cpu_seconds(pid) + children_cpu_seconds(pid) - cpu0
            runs = await bench.runs(http, calls)
    ok = sum(1 for r in results if r["close"][0] == 1000)
    call_seconds = sum(r["duration_seconds"] or 0.0 for r in runs)
    server_p99 = [r["logs"].get("outbound_audio", {}).get("gap_p99_ms", 0.0) for r in runs]
    server_max = [r["logs"].get("outbound_audio", {}).get("gap_max_ms", 0.0) for r in runs]
    client_gaps = [g * 1000 for r in results for g in r["gaps"]]
    v2v = [r["v2v"] * 1000 for r in results if "v2v" in r]
    print(f"{name:10s} {ok:3d}/{calls:<3d} {cpu / call_seconds * 1000:8.2f}"
          f"      {max(server_p99):6.1f} {max(server_max):7.1f}     {percentile(client_gaps, 0.99):6.1f}"
          f"    {percentile(v2v, 0.5):5.0f}")
    for failure in sorted({str(r["close"]) for r in results if r["close"][0] != 1000}
                          | {f"run {r['state']}: {r['error']}" for r in runs if r["error"]}):
        print(f"      not ok: {failure}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", default="cloudonix,vonage", help="comma-separated")
    parser.add_argument("--calls", type=int, default=40, help="concurrent calls per provider")
    parser.add_argument("--spread", type=float, default=5.0, help="seconds over which calls arrive")
    parser.add_argument("--server-log", type=Path, help="write the server's log to this file")
    args = parser.parse_args()
    voice = EspeakSynthesizer()
    yes = await voice.synthesize("yes", voice="en-us+m3", rate=160)
    goodbye = await voice.synthesize("goodbye", voice="en-us+m3", rate=160)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
          f" {args.calls} concurrent calls each, starter agent, callers say 'yes' then 'goodbye'")
    print("provider    ok      CPU ms/call-s  server gap p99 max ms  client gap p99 ms  v2v p50 ms")
    for name in args.providers.split(","):
        await bench_provider(name, args.calls, args.spread, yes, goodbye, args.server_log)
        await asyncio.sleep(1)


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=server_event_loop) as runner:
        runner.run(main())
