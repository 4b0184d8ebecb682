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

    async def stop(self, *, graceful: bool) -> str | None:
        """End the pipeline (letting queued output drain when graceful), then write the
        recording. Returns the store's reference to it."""
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
            path = await self.recorder.finish()
        return path
