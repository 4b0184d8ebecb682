"""The stereo recording of a call (caller left, agent right) and the keys pressed.

Both sides stream to raw files as the call goes (a few MB per ten minutes on disk; about a
second of audio per track held in memory, more only while the disk lags); `finish`
interleaves them block by block into `<run id>.wav` beside them, which then goes to the
configured recordings store (agent_stream/recordings: a directory keeps it where it is, a
bucket takes an upload). The caller track is the clock: agent audio lands where the
caller's audio was when it went out.

The event loop never touches the files. A write() to ext4 can block for tens of
milliseconds (journal commits, dirty-page throttling), and a blocked loop is a gap in every
live call's audio; so audio collects in memory and one writer thread shared by all calls
opens, appends to and closes the raw files, in the order calls asked. Merging a finished
call's tracks (seconds of work for a long call) runs on another thread, so live calls'
writes never wait behind it. The writer's thread is joined at interpreter exit, so what
was handed to it reaches the disk.

A process killed mid-call (SIGKILL, power loss) leaves the raw tracks behind, without what
was still in memory; the next server start merges them into the run's recording with the
same code (`recover_recordings`). So does a call whose store refused the finished WAV (a
bucket down): its tracks stay for the next start.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

from .. import audio
from ..errors import NotFound
from ..recordings import LocalRecordings, RecordingStore
from ..store import ACTIVE_STATES, Store

log = logging.getLogger(__name__)

SAMPLE_WIDTH: Final = 2
# The raw tracks next to `<run id>.wav` while the call lasts.
CALLER_SUFFIX: Final = ".caller.pcm"
AGENT_SUFFIX: Final = ".agent.pcm"
# A raw track's name: a run id as the stream names recordings (no leading zero), a suffix.
_RAW_TRACK_NAME: Final = re.compile(
    rf"([1-9][0-9]{{0,17}})(?:{re.escape(CALLER_SUFFIX)}|{re.escape(AGENT_SUFFIX)})"
)
MERGE_BLOCK_BYTES: Final = 32000
# Audio of one track held before it goes to the writer thread: one second at 8 kHz.
FLUSH_BYTES: Final = 16000

_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recording-writer")


@dataclass(frozen=True)
class Keypress:
    digit: str
    at_ms: int


class CallRecorder:
    """Owns the recording files of one call. Files are only touched on the writer thread.
    `path` is where the WAV merges (the raw tracks beside it); `store` keeps it after (the
    default: a directory store of `path`'s folder, where it stays)."""

    def __init__(
        self, path: Path, *, sample_rate: int, store: RecordingStore | None = None
    ) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.store: RecordingStore = store or LocalRecordings(path.parent)
        self.reference: str | None = None  # where the store keeps the recording
        self._caller_path, self._agent_path = raw_tracks(path)
        self._files: dict[Path, BinaryIO] = {}
        self._caller = bytearray()
        self._agent = bytearray()
        self._recording = False
        self.caller_bytes = 0
        self.agent_bytes = 0
        self.keypresses: list[Keypress] = []
        self.failure: str | None = None  # why the recording could not be written or stored
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

    async def finish(self, *, wait: float | None = None) -> str | None:
        """Write what is pending, then the stereo WAV, and hand it to the store; safe to
        call more than once. Returns the store's reference to the recording: None when
        there is none (the disk or the store refused it: see `failure`), or when the store
        takes longer than `wait` seconds (then `still_storing`: `stored()` says how it
        went). Once begun, the work completes even if the caller is cancelled."""
        if self._recording:
            self._flush()
            self._recording = False
            self._finished = asyncio.ensure_future(self._close_and_merge())
        if self._finished is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._finished), wait)
            if not self._finished.done():
                return None
        return self.reference if self.failure is None else None

    @property
    def still_storing(self) -> bool:
        """The recording is on its way to a store that has not answered yet."""
        return self._finished is not None and not self._finished.done()

    async def stored(self) -> str | None:
        """`finish()`'s answer, however long the store takes."""
        return await self.finish()

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
        await asyncio.to_thread(self._merge_or_fail)
        if self.failure is None:
            try:
                self.reference = await self.store.save(self.path)
            except Exception as exc:  # noqa: BLE001 - a refusing store loses the recording only
                self._fail(exc)
                # The tracks stay: the next start merges and stores them again.
                await asyncio.to_thread(_remove, self.path)
                return
        await asyncio.to_thread(_remove, self._caller_path, self._agent_path)

    def _merge_or_fail(self) -> None:
        if self.failure is None:
            try:
                self._merge()
            except Exception as exc:  # noqa: BLE001 - a bad track loses the recording only
                self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        if self.failure is None:
            self.failure = _describe(exc)
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
        out.open("wb") as file,  # opened here: wave.open(name) leaks a half object on failure
        wave.open(file, "wb") as wav,
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


def _describe(exc: Exception) -> str:
    """A failure as an operator reads it: its kind and the system's words, without paths."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{type(exc).__name__}: {reason}"


# -- after a crash ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    """What the start did with the raw tracks a killed process left behind."""

    recovered: int  # runs that got their recording
    removed: int  # runs whose tracks nobody can use, deleted


async def recover_recordings(
    store: Store, directory: Path, *, sample_rate: int, recordings: RecordingStore | None = None
) -> Recovery:
    """Merge the raw tracks a killed call left in the spool `directory` into its ended run's
    recording, saved to `recordings` (default: a directory store of `directory`) as the
    recorder would have, and delete the tracks no run can use; tracks of a run still open
    belong to a live process and stay. Call it after the crash sweep has ended the runs."""
    target = recordings or LocalRecordings(directory)
    run_ids = await asyncio.to_thread(_leftover_run_ids, directory)
    outcomes: list[str] = []
    for run_id in run_ids:
        outcomes.append(await _recover_run(store, target, directory, run_id, sample_rate))
        if outcomes[-1] == "refused":  # a store that is down: one wait at start, not one a run
            log.warning("recordings store refused: the other leftovers wait for the next start")
            break
    return Recovery(outcomes.count("recovered"), outcomes.count("removed"))


async def _recover_run(
    store: Store, recordings: RecordingStore, directory: Path, run_id: int, sample_rate: int
) -> Literal["recovered", "removed", "kept", "refused"]:
    """One run's leftover tracks: merged when its run ended without a recording, else
    deleted, unless the run is still open. A merge that fails only loses this recording; a
    store that refuses it keeps the tracks for the next start."""
    try:
        run = await store.get_run_by_id(run_id)
    except NotFound:
        run = None
    if run is not None and run.state in ACTIVE_STATES:  # another process's call: its tracks too
        return "kept"
    path = directory / f"{run_id}.wav"
    caller, agent = raw_tracks(path)
    outcome: Literal["recovered", "removed"] = "removed"
    if run is not None and run.recording_path is None:
        try:
            frames = await asyncio.to_thread(
                merge_tracks, caller, agent, path, sample_rate=sample_rate
            )
        except Exception as exc:  # noqa: BLE001 - unusable tracks lose this recording only
            log.warning("recording of %s not recovered: %s", run.name, _describe(exc))
            if await asyncio.to_thread(path.is_file):
                await asyncio.to_thread(_remove, path)  # half a WAV no run points to
        else:
            if frames == 0:  # killed before a second of audio reached the disk: nothing to hear
                await asyncio.to_thread(_remove, path, caller, agent)
                return "removed"
            try:
                reference = await recordings.save(path)
            except Exception as exc:  # noqa: BLE001 - the store is down: try at the next start
                log.warning("recording of %s not stored (kept for the next start): %s",
                            run.name, _describe(exc))
                await asyncio.to_thread(_remove, path)
                return "refused"
            await store.set_run_recording(run.id, reference, logs={
                "recording_recovered": True,
                "recording_recovered_seconds": round(frames / sample_rate, 2),
            })
            outcome = "recovered"
    # Only now: a start that dies before the run points to its recording merges again.
    await asyncio.to_thread(_remove, caller, agent)
    return outcome


def _leftover_run_ids(directory: Path) -> list[int]:
    """The run ids with raw tracks in `directory`; none where it does not exist yet."""
    try:
        names = [entry.name for entry in directory.iterdir()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted({int(match[1]) for name in names if (match := _RAW_TRACK_NAME.fullmatch(name))})


def _remove(*paths: Path) -> None:
    """Delete files that may already be gone; one that stays is said, not raised."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("leftover %s not removed: %s", path.name, _describe(exc))
