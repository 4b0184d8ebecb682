"""The stereo recording of a call (caller left, agent right) and the keys pressed.

Both sides stream to raw files as the call goes (a few MB per ten minutes on disk, nothing
held in memory); `finish` interleaves them block by block into `<run id>.wav`. The caller
track is the clock: agent audio lands where the caller's audio was when it went out.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_WIDTH: Final = 2
MERGE_BLOCK_BYTES: Final = 32000


@dataclass(frozen=True)
class Keypress:
    digit: str
    at_ms: int


class CallRecorder:
    """Owns the recording files of one call."""

    def __init__(self, path: Path, *, sample_rate: int) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self._caller_path = path.with_suffix(".caller.pcm")
        self._agent_path = path.with_suffix(".agent.pcm")
        self._caller: BinaryIO | None = None
        self._agent: BinaryIO | None = None
        self.caller_bytes = 0
        self.agent_bytes = 0
        self.keypresses: list[Keypress] = []
        self._started = time.monotonic()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._caller = self._caller_path.open("wb")
        self._agent = self._agent_path.open("wb")
        self._started = time.monotonic()

    @property
    def caller_ms(self) -> int:
        """Position in the call by the caller's audio: the recording's clock."""
        return self.caller_bytes * 1000 // (SAMPLE_WIDTH * self.sample_rate)

    def write_caller(self, pcm: bytes) -> None:
        if self._caller is not None:
            self._caller.write(pcm)
            self.caller_bytes += len(pcm)

    def write_agent(self, pcm: bytes) -> None:
        if self._agent is None:
            return
        if self.agent_bytes < self.caller_bytes:  # silence since the agent last spoke
            gap = self.caller_bytes - self.agent_bytes
            self._agent.write(bytes(gap))
            self.agent_bytes += gap
        self._agent.write(pcm)
        self.agent_bytes += len(pcm)

    def keypress(self, digit: str) -> None:
        self.keypresses.append(Keypress(digit, self.caller_ms))

    async def finish(self) -> Path | None:
        """Close both tracks and write the stereo WAV; safe to call more than once."""
        if self._caller is None or self._agent is None:
            return self.path if self.path.exists() else None
        self._caller.close()
        self._agent.close()
        self._caller = self._agent = None
        await asyncio.to_thread(self._merge)
        return self.path

    def _merge(self) -> None:
        with (
            self._caller_path.open("rb") as left,
            self._agent_path.open("rb") as right,
            wave.open(str(self.path), "wb") as out,
        ):
            out.setnchannels(2)
            out.setsampwidth(SAMPLE_WIDTH)
            out.setframerate(self.sample_rate)
            while True:
                a, b = left.read(MERGE_BLOCK_BYTES), right.read(MERGE_BLOCK_BYTES)
                if not a and not b:
                    break
                size = max(len(a), len(b))
                a, b = a.ljust(size, b"\0"), b.ljust(size, b"\0")
                out.writeframesraw(audioop.add(
                    audioop.tostereo(a, SAMPLE_WIDTH, 1, 0),
                    audioop.tostereo(b, SAMPLE_WIDTH, 0, 1),
                    SAMPLE_WIDTH,
                ))
        for raw in (self._caller_path, self._agent_path):
            with contextlib.suppress(FileNotFoundError):
                raw.unlink()
