"""What storing a finished recording in a bucket costs the event loop and the call's finish.

moto's S3 server runs in a process of its own on a loopback port (the bench needs
`requirements-dev.txt`); a ten-minute call's stereo WAV (8 kHz, 19.2 MB) is saved through
`S3Recordings.save`, as a call's finishing task does, while a ticker on the loop measures
how late it wakes (every 5 ms).
Prints the figures; decides nothing.

    python bench/recordings_bench.py [--minutes 10] [--rounds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import subprocess  # noqa: E402

from aiobotocore.session import get_session  # noqa: E402
from aiohttp.test_utils import unused_port  # noqa: E402
from common import TICK_SECONDS, ticker  # noqa: E402

from agent_stream.recordings.s3 import S3Recordings  # noqa: E402

BUCKET = "bench-recordings"


def make_wav(path: Path, minutes: float) -> int:
    frames = int(minutes * 60 * 8000)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(bytes(range(256)) * (frames * 4 // 256))
    return path.stat().st_size


async def started_moto(host: str, port: int) -> subprocess.Popen[bytes]:
    """moto's server in its own process (its parsing would hold this one's GIL), once it
    takes connections (for at most 30 s)."""
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("moto's server did not start") from None
            await asyncio.sleep(0.1)
        else:
            writer.close()
            return server


async def main(minutes: float, rounds: int) -> None:
    host, port = "127.0.0.1", unused_port()
    server = await started_moto(host, port)
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_EC2_METADATA_DISABLED="true")
    async with get_session().create_client("s3", region_name="us-east-1",
                                           endpoint_url=os.environ["AWS_ENDPOINT_URL"]) as s3:
        await s3.create_bucket(Bucket=BUCKET)
    with tempfile.TemporaryDirectory() as spool:
        async with S3Recordings.connect(BUCKET, "bench") as store:
            seconds, lags = [], []
            for n in range(rounds):
                wav = Path(spool) / f"{n + 1}.wav"
                size = await asyncio.to_thread(make_wav, wav, minutes)
                stop = asyncio.Event()
                ticks: list[float] = []
                tick = asyncio.create_task(ticker(ticks, stop))
                await asyncio.sleep(0.05)
                started = time.perf_counter()
                await store.save(wav)
                seconds.append(time.perf_counter() - started)
                stop.set()
                await tick
                lags.extend(ticks)
    server.terminate()
    server.wait()
    lags.sort()
    how = "in one request"
    print(f"upload of a {minutes:g}-minute stereo WAV ({size / 1e6:.1f} MB) to moto S3 "
          f"on loopback {how}, {rounds} rounds")
    print(f"  save(): median {statistics.median(seconds) * 1000:.0f} ms, "
          f"max {max(seconds) * 1000:.0f} ms")
    print(f"  event loop lag during the uploads ({len(lags)} ticks of {TICK_SECONDS * 1000:g} ms): "
          f"p50 {lags[len(lags) // 2] * 1000:.1f} ms, p99 {lags[int(len(lags) * 0.99)] * 1000:.1f} ms, "
          f"max {lags[-1] * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.minutes, args.rounds))
