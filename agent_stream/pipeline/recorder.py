"""The stereo recording of a call (caller left, agent right) and the keys pressed.

Both sides stream to raw files as the call goes (a few MB per ten minutes on disk; about a
second of audio per track held in memory, more only while the disk lags); `finish`
interleaves them block by block into `<run id>.wav`. The caller track is the clock: agent
audio lands where the caller's audio was when it went out.

The event loop never touches the files. A write() to ext4 can block for tens of
milliseconds (journal commits, dirty-page throttling), and a blocked loop is a gap in every
live call's audio; so audio collects in memory and one writer thread shared by all calls
opens, appends to and closes the raw files, in the order calls asked. Merging a finished
call's tracks (seconds of work for a long call) runs on another thread, so live calls'
writes never wait behind it. The writer's thread is joined at interpreter exit, so what
was handed to it reaches the disk.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from .. import audio

log = logging.getLogger(__name__)

SAMPLE_WIDTH: Final = 2
# The raw tracks next to `<run id>.wav` while the call lasts.
CALLER_SUFFIX: Final = ".caller.pcm"
AGENT_SUFFIX: Final = ".agent.pcm"
MERGE_BLOCK_BYTES: Final = 32000
# Audio of one track held before it goes to the writer thread: one second at 8 kHz.
FLUSH_BYTES: Final = 16000

_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recording-writer")


@dataclass(frozen=True)
class Keypress:
    digit: str
    at_ms: int


class CallRecorder:
    """Owns the recording files of one call. Files are only touched on the writer thread."""

    def __init__(self, path: Path, *, sample_rate: int) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self._caller_path, self._agent_path = raw_tracks(path)
        self._files: dict[Path, BinaryIO] = {}
        self._caller = bytearray()
        self._agent = bytearray()
        self._recording = False
        self.caller_bytes = 0
        self.agent_bytes = 0
        self.keypresses: list[Keypress] = []
        self.failure: str | None = None  # why the recording could not be written
        self._finished: asyncio.Future[None] | None = None

    def open(self) -> None:
        self._recording = True
        _writer.submit(self._open_files)

    @property
    def caller_ms(self) -> int:
        """Position in the call by the caller's audio: the recording's clock."""
        return self.caller_bytes * 1000 // (SAMPLE_WIDTH * self.sample_rate)

    def write_caller(self, pcm: bytes) -> None:
        if not self._recording:
            return
        self._caller += pcm
        self.caller_bytes += len(pcm)
        if len(self._caller) >= FLUSH_BYTES:
            self._flush()

    def write_agent(self, pcm: bytes) -> None:
        if not self._recording:
            return
        if self.agent_bytes < self.caller_bytes:  # silence since the agent last spoke
            gap = self.caller_bytes - self.agent_bytes
            self._flush()  # what was said before it
            _writer.submit(self._write_silence, gap)
            self.agent_bytes += gap
        self._agent += pcm
        self.agent_bytes += len(pcm)
        if len(self._agent) >= FLUSH_BYTES:
            self._flush()

    def keypress(self, digit: str) -> None:
        self.keypresses.append(Keypress(digit, self.caller_ms))

    def _flush(self) -> None:
        """Hand both tracks' pending audio to the writer thread."""
        caller, agent = bytes(self._caller), bytes(self._agent)
        self._caller.clear()
        self._agent.clear()
        _writer.submit(self._append, caller, agent)

    async def finish(self) -> Path | None:
        """Write what is pending, then the stereo WAV; safe to call more than once.
        None when there is no recording (the disk refused it: see `failure`). Once begun,
        the work completes even if the caller is cancelled."""
        if self._recording:
            self._flush()
            self._recording = False
            self._finished = asyncio.ensure_future(self._close_and_merge())
        if self._finished is not None:
            await asyncio.shield(self._finished)
        return self.path if self.failure is None and self.path.exists() else None

    # -- on the writer thread ------------------------------------------------------------

    def _open_files(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for raw in (self._caller_path, self._agent_path):
                self._files[raw] = raw.open("wb")
        except Exception as exc:  # noqa: BLE001 - on the writer thread: recorded, not lost
            self._fail(exc)

    def _append(self, caller: bytes, agent: bytes) -> None:
        if self.failure is not None:
            return
        try:
            self._files[self._caller_path].write(caller)
            self._files[self._agent_path].write(agent)
        except Exception as exc:  # noqa: BLE001 - on the writer thread: recorded, not lost
            self._fail(exc)

    def _write_silence(self, size: int) -> None:
        block = bytes(min(size, MERGE_BLOCK_BYTES))
        for start in range(0, size, len(block)):
            self._append(b"", block[: size - start])

    def _close(self) -> None:
        for file in self._files.values():
            with contextlib.suppress(OSError):
                file.close()
        self._files.clear()

    async def _close_and_merge(self) -> None:
        await asyncio.wrap_future(_writer.submit(self._close))
        await asyncio.to_thread(self._merge_and_clean_up)

    def _merge_and_clean_up(self) -> None:
        if self.failure is None:
            try:
                self._merge()
            except Exception as exc:  # noqa: BLE001 - a bad track loses the recording only
                self._fail(exc)
        for raw in (self._caller_path, self._agent_path):
            with contextlib.suppress(OSError):
                raw.unlink()

    def _fail(self, exc: Exception) -> None:
        if self.failure is None:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.failure = f"{type(exc).__name__}: {reason}"
            log.warning("recording %s not written: %s", self.path.name, self.failure)

    def _merge(self) -> None:
        merge_tracks(self._caller_path, self._agent_path, self.path, sample_rate=self.sample_rate)


def raw_tracks(path: Path) -> tuple[Path, Path]:
    """The caller and agent raw files a recording at `path` streams to until it is merged."""
    return path.with_suffix(CALLER_SUFFIX), path.with_suffix(AGENT_SUFFIX)


def merge_tracks(caller: Path, agent: Path, out: Path, *, sample_rate: int) -> int:
    """Interleave two raw tracks into the stereo WAV `out` (caller left, agent right), block
    by block so a long call never sits in memory; returns its frames. A missing track is
    silence and a track cut off mid-sample loses the half sample, so what a crash left
    merges too."""
    frames = 0
    with (
        _open_or_empty(caller) as left,
        _open_or_empty(agent) as right,
        wave.open(str(out), "wb") as wav,
    ):
        wav.setnchannels(2)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(sample_rate)
        while True:
            a, b = left.read(MERGE_BLOCK_BYTES), right.read(MERGE_BLOCK_BYTES)
            if not a and not b:
                break
            # Blocks are whole samples; only a track's last block can end mid-sample.
            a, b = a[: len(a) - len(a) % SAMPLE_WIDTH], b[: len(b) - len(b) % SAMPLE_WIDTH]
            size = max(len(a), len(b))
            a, b = a.ljust(size, b"\0"), b.ljust(size, b"\0")
            wav.writeframesraw(audio.interleave_stereo(a, b))
            frames += size // SAMPLE_WIDTH
    return frames


def _open_or_empty(path: Path) -> BinaryIO:
    """A raw track for reading; one that was never written reads as silence of no length."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        return io.BytesIO()
