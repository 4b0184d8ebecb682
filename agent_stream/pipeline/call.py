"""One call's pipecat pipeline: provider input, the agent, provider output.

The input transport records the caller and runs the VAD; the agent (an engine processor)
listens and speaks; the output transport paces audio to the provider and reports what went
out to the transcript and the recording.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Final

from aiohttp import web
from pipecat.frames.frames import EndFrame, Frame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.workers.runner import WorkerRunner

from ..providers.base import INTERNAL_RATE, Wire
from ..recordings import RecordingStore
from ..speech.vad import EnergyVad
from .recorder import CallRecorder
from .transcript import CallTranscript
from .transport import AiohttpWebsocketParams, AiohttpWebsocketTransport

log = logging.getLogger(__name__)

PIPELINE_START_TIMEOUT: Final = 5.0
PIPELINE_END_TIMEOUT: Final = 3.0
# Every call is recorded at the provider's rate. The raw tracks do not say theirs, so the
# start after a crash merges what a killed call left at this one.
RECORDING_SAMPLE_RATE: Final = INTERNAL_RATE


async def let_live_calls_run() -> None:
    """Setting up a call is a few milliseconds of pure Python, and every live call has an
    audio message due each 20 ms: between the steps of a setup, they go first."""
    await asyncio.sleep(0)


class CallPipeline:
    """Builds, starts and stops the pipeline of one call; owns its recording and transcript."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        serializer: Wire,
        recording_path: Path,
        recordings: RecordingStore,
    ) -> None:
        self.serializer = serializer
        self.recorder = CallRecorder(
            recording_path, sample_rate=RECORDING_SAMPLE_RATE, store=recordings
        )
        self.transcript = CallTranscript(bytes_per_second=INTERNAL_RATE * 2)
        self.vad = EnergyVad()
        params = AiohttpWebsocketParams(
            audio_in_enabled=False,  # the input transport feeds audio itself, see transport.py
            audio_in_sample_rate=INTERNAL_RATE,
            audio_out_enabled=True,
            audio_out_sample_rate=INTERNAL_RATE,
            audio_out_10ms_chunks=2,
            audio_out_auto_silence=False,
            audio_out_end_silence_secs=0,
            serializer=serializer,
        )
        self.transport = AiohttpWebsocketTransport(
            ws, params, recorder=self.recorder, transcript=self.transcript, vad=self.vad
        )
        self.worker: PipelineWorker | None = None
        self._runner: WorkerRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self._line_sends: set[asyncio.Task[bool]] = set()
        if serializer.shows_live_lines:
            self.transcript.listener = self._send_line  # only a peer that shows live lines

    async def start(self, agent: FrameProcessor) -> None:
        """Open the recording, start the pipeline with `agent` in it, wait until it runs."""
        self.recorder.open()
        self.transcript.started = time.monotonic()  # same zero as the caller track
        self.worker = PipelineWorker(
            Pipeline([self.transport.input(), agent, self.transport.output()]),
            params=PipelineParams(
                audio_in_sample_rate=INTERNAL_RATE, audio_out_sample_rate=INTERNAL_RATE
            ),
            enable_rtvi=False,
            enable_turn_tracking=False,
            idle_timeout_secs=None,
            check_dangling_tasks=False,
        )
        await let_live_calls_run()
        self._runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
        await self._runner.add_workers(self.worker)
        await let_live_calls_run()
        self._task = asyncio.create_task(self._runner.run(), name="call-pipeline")
        waiter = asyncio.create_task(self.transport.input().started.wait())
        done, _ = await asyncio.wait(
            {waiter, self._task}, timeout=PIPELINE_START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            raise RuntimeError("the call pipeline did not start")

    def _send_line(self, role: str, text: str) -> None:
        """A live transcript line to the peer, on its own task (the transcript is told from
        inside the engine and the output transport, which must not wait on the socket)."""
        message = self.serializer.transcript_message(role, text)
        if message is None:
            return
        task = asyncio.create_task(self.transport.output().send_messages([message]),
                                   name="transcript line")
        self._line_sends.add(task)
        task.add_done_callback(self._line_sends.discard)

    async def deliver(self, frame: Frame) -> None:
        await self.transport.input().deliver(frame)

    async def stop(self, *, graceful: bool, recording_wait: float | None = None) -> str | None:
        """End the pipeline (letting queued output drain when graceful), then write the
        recording. Returns the store's reference to it (None while the store has not
        answered within `recording_wait` seconds: `recorder.still_storing`)."""
        try:
            if self._task is not None and self.worker is not None:
                if graceful and not self._task.done():
                    await self.worker.queue_frame(EndFrame())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(self._task), PIPELINE_END_TIMEOUT)
                if not self._task.done():
                    await self.worker.cancel()
                    # wait, never for good: a stuck pipeline must not keep the run open
                    await asyncio.wait({self._task}, timeout=PIPELINE_END_TIMEOUT)
                    if not self._task.done():
                        log.error("the call pipeline did not stop within %.0f s", PIPELINE_END_TIMEOUT)
                        self._task.cancel()
        finally:
            for line in list(self._line_sends):  # the call is over: a line still unsent never will be
                line.cancel()
            path = await self.recorder.finish(wait=recording_wait)
        return path

    def release(self) -> None:
        """The call is over and everything it produced has been read: break the reference
        cycles of its pipeline, so that reference counting frees the call at once instead of
        a full garbage collection that would pause every live call (memory.py)."""
        self.transcript.listener = None  # a bound method of ours: a cycle through the transcript
        if self._task is not None and self._task.done():  # nothing runs in the pipeline any more
            break_pipecat_cycles(self._runner, self.worker)


# What survives `break_pipecat_cycles`: values that cannot hold a reference back.
_PLAIN: Final = (str, bytes, int, float, bool, type(None))


def break_pipecat_cycles(*roots: object) -> int:
    """Drop the references pipecat's objects of one finished pipeline hold, so that they
    free by reference counting; returns how many objects were cut loose.

    Why: pipecat's objects point at each other by design. Each processor points at its
    neighbours (`link` sets both directions), a pipeline at its source and sink and they
    back at it through bound methods, a processor's setup at the worker, the worker and
    its runner at their bus and registry and those back at them, media senders at their
    transport. A finished call leaves all of it, with our transports, agent, recorder,
    transcript, socket and request hanging off it, as reference cycles (~650 objects per
    call) that only a full collection frees, and a full collection pauses every live call.

    How: the objects are found through pipecat's public `pipeline` and `processors`
    properties only, and every attribute that could hold a reference is dropped, whatever
    its name, so a pipecat upgrade that renames its internals changes nothing here; one
    that renames those properties finds fewer objects, and what is not cut loose is left to
    the collector as before. Plain values (names, flags, counters) are kept, so a late log
    line that names an object still works. Call it only once the pipeline's run has ended:
    the objects are unusable afterwards.
    """
    found: list[object] = []
    seen: set[int] = set()
    todo = [root for root in roots if root is not None]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        found.append(obj)
        pipeline = _property(obj, "pipeline")  # a worker's whole pipeline
        if pipeline is not None:
            todo.append(pipeline)
        processors = _property(obj, "processors")  # a pipeline's, source and sink included
        if isinstance(processors, list):
            todo.extend(processors)
    for obj in found:
        attributes = getattr(obj, "__dict__", None)
        if isinstance(attributes, dict):
            for name in [n for n, value in attributes.items() if not isinstance(value, _PLAIN)]:
                del attributes[name]
    return len(found)


def _property(obj: object, name: str) -> object:
    """`obj.name`, or None if this pipecat has no such thing or it cannot be read."""
    try:
        return getattr(obj, name, None)
    except Exception:
        return None
