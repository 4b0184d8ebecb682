"""The scripted engine (the embedded default, no LLM): say each node's text, match the
caller's reply to the outgoing edges by phrase or keypress, re-prompt once, then fall back.

It is one pipeline processor between the transport's input and output: it collects the
caller's speech between the VAD's start and stop, decodes it against a grammar of the
phrases the node expects, speaks with espeak-ng, and decides barge-in itself (only an
interruptible utterance is cut).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Final

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from ..pipeline.frames import CallerStartedSpeaking, CallerStoppedSpeaking, ProviderMarkFrame
from ..pipeline.transcript import CallTranscript, Utterance
from ..providers.cloudonix import CloudonixSerializer
from ..speech.stt import GrammarRecognizer
from ..speech.tts import EspeakSynthesizer
from . import CallActions, Edge, Node, Workflow, render

log = logging.getLogger(__name__)

NOT_UNDERSTOOD: Final = "Sorry, I didn't catch that."
STILL_THERE: Final = "Are you still there?"
GOODBYE: Final = "Goodbye."
# Longest caller turn we decode; longer speech is cut to its first seconds.
MAX_UTTERANCE_BYTES: Final = 8000 * 2 * 15
# Extra time allowed for a mark echo beyond the utterance's own length.
MARK_GRACE_SECONDS: Final = 3.0
AUDIO_CHUNK_BYTES: Final = 320  # 20 ms at 8 kHz, the transport's chunk


class ScriptedAgent(FrameProcessor):
    """Walks one workflow for one call."""

    def __init__(
        self,
        *,
        workflow: Workflow,
        context: dict[str, Any],
        tts: EspeakSynthesizer,
        stt: GrammarRecognizer,
        transcript: CallTranscript,
        serializer: CloudonixSerializer,
        actions: CallActions,
        call_log: logging.LoggerAdapter | logging.Logger = log,  # type: ignore[type-arg]
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._workflow = workflow
        self._context = context
        self._tts = tts
        self._stt = stt
        self._transcript = transcript
        self._serializer = serializer
        self._actions = actions
        self._log = call_log
        self._voice = str(workflow.setting("voice", "en-us"))
        self._silence_timeout = float(workflow.setting("silence_timeout_seconds", 10))
        self._max_duration = float(workflow.setting("max_duration_seconds", 600))
        self._node: Node = workflow.nodes[workflow.start]
        self._misses = 0
        self._silences = 0
        self._speech = bytearray()
        self._speech_started_ms = 0
        self._lock = asyncio.Lock()
        self._marks: dict[str, asyncio.Event] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished = False

    # -- frames --------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._spawn(self._begin())
        elif isinstance(frame, CallerStartedSpeaking):
            self._cancel_timer("silence")
            await self._barge_in()
            self._speech.clear()
            self._speech_started_ms = frame.at_ms
        elif isinstance(frame, InputAudioRawFrame):
            if len(self._speech) < MAX_UTTERANCE_BYTES:
                self._speech.extend(frame.audio)
        elif isinstance(frame, CallerStoppedSpeaking):
            audio, self._speech = bytes(self._speech), bytearray()
            self._spawn(self._heard_speech(audio, self._speech_started_ms, frame.at_ms))
        elif isinstance(frame, InputDTMFFrame):
            self._cancel_timer("silence")
            await self._barge_in()
            self._spawn(self._heard_digit(frame.button.value))
        elif isinstance(frame, ProviderMarkFrame):
            event = self._marks.pop(frame.mark, None)
            if event:
                event.set()
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop_everything()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("agent step failed: %r", task.exception())

    async def _stop_everything(self) -> None:
        self._finished = True
        for task in [*self._tasks, *self._timers.values()]:
            task.cancel()
        for task in [*self._tasks, *self._timers.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- conversation --------------------------------------------------------------------

    async def _begin(self) -> None:
        self._start_timer("max_duration", self._max_duration, self._max_duration_reached)
        async with self._lock:
            await self._enter(self._node)

    async def _enter(self, node: Node) -> None:
        """Say the node's text, then act on its kind."""
        self._node, self._misses, self._silences = node, 0, 0
        self._log.info("node %s (%s)", node.id, node.kind)
        utterance = await self._say(render(node.say, self._context), node.interruptible)
        if node.kind == "end" or (node.kind in ("start", "agent") and not node.edges):
            await self._wait_played(utterance)
            await self._end("agent_hangup")
        elif node.kind == "transfer":
            await self._wait_played(utterance)
            await self._transfer(node.destination or "")
        else:
            self._listen_after(utterance)

    async def _heard_speech(self, audio: bytes, start_ms: int, end_ms: int) -> None:
        phrases = self._node.phrases
        text = await self._stt.recognize(audio, phrases) if phrases else None
        async with self._lock:
            if self._finished:
                return
            self._transcript.caller_said(text or "(not understood)", start_ms, end_ms)
            self._log.info("caller said %r", text)
            edge = next((e for e in self._node.edges if text and e.matches_words(text)), None)
            await self._follow(edge)

    async def _heard_digit(self, digit: str) -> None:
        async with self._lock:
            if self._finished:
                return
            at = self._transcript.now_ms()
            self._transcript.caller_said(f"(pressed {digit})", at, at)
            edge = next((e for e in self._node.edges if e.dtmf == digit), None)
            await self._follow(edge)

    async def _follow(self, edge: Edge | None) -> None:
        """Take the matched edge; otherwise re-prompt once, then take the fallback."""
        if edge is not None:
            await self._enter(self._workflow.nodes[edge.target])
            return
        self._misses += 1
        fallback = self._node.fallback
        if self._misses > 1 and fallback is not None:
            await self._enter(self._workflow.nodes[fallback.target])
        elif self._misses > 2:
            await self._say(GOODBYE, False, wait=True)
            await self._end("agent_hangup")
        else:
            text = f"{NOT_UNDERSTOOD} {render(self._node.say, self._context)}"
            self._listen_after(await self._say(text, self._node.interruptible))

    def _listen_after(self, utterance: Utterance | None) -> None:
        """Once the caller has heard the prompt, give them `silence_timeout` to answer."""

        async def wait_then_time() -> None:
            await self._wait_played(utterance)
            await asyncio.sleep(self._silence_timeout)
            await self._silence()

        self._start_timer("silence", None, wait_then_time)

    async def _silence(self) -> None:
        async with self._lock:
            if self._finished:
                return
            self._silences += 1
            if self._silences > 1:
                await self._say(GOODBYE, False, wait=True)
                await self._end("silence_timeout")
                return
            text = f"{STILL_THERE} {render(self._node.say, self._context)}"
            self._listen_after(await self._say(text, self._node.interruptible))

    async def _max_duration_reached(self) -> None:
        self._log.info("max duration of %.0f s reached", self._max_duration)
        await self._end("max_duration")

    # -- speaking ------------------------------------------------------------------------

    async def _say(self, text: str, interruptible: bool, *, wait: bool = False) -> Utterance | None:
        """Synthesize `text`, queue its audio and a mark behind it."""
        if not text.strip():
            return None
        pcm = await self._tts.synthesize(text, voice=self._voice)
        # whole 20 ms chunks: the transport holds back a partial chunk until more audio
        # comes, which would send this utterance's tail after its mark
        pcm += bytes(-len(pcm) % AUDIO_CHUNK_BYTES)
        utterance = self._transcript.queue(text, len(pcm), interruptible=interruptible)
        self._marks[utterance.id] = asyncio.Event()
        await self.push_frame(OutputAudioRawFrame(audio=pcm, sample_rate=8000, num_channels=1))
        await self.push_frame(self._serializer.mark_frame(utterance.id))
        if wait:
            await self._wait_played(utterance)
        return utterance

    async def _wait_played(self, utterance: Utterance | None) -> None:
        """Until the provider echoes the utterance's mark (or it plainly should have)."""
        if utterance is None:
            return
        event = self._marks.get(utterance.id)
        if event is None:
            return
        seconds = utterance.audio_bytes / self._transcript.bytes_per_second + MARK_GRACE_SECONDS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def _barge_in(self) -> None:
        """The caller talks over the agent: cut an interruptible utterance at once."""
        playing = self._transcript.playing
        if playing is not None and playing.interruptible and playing.sent_bytes:
            self._log.info("barge-in: cutting %s", playing.id)
            await self.push_frame(InterruptionFrame())
            for event in self._marks.values():
                event.set()  # nothing queued will play now
            self._marks.clear()

    # -- ending --------------------------------------------------------------------------

    async def _end(self, reason: str) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            await self._actions.hangup()
        finally:
            self._actions.finish(reason)

    async def _transfer(self, destination: str) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            await self._actions.transfer(destination)
        finally:
            self._actions.finish("transfer", {"transfer_destination": destination})

    # -- timers --------------------------------------------------------------------------

    def _start_timer(self, name: str, seconds: float | None, callback: Any) -> None:
        self._cancel_timer(name)

        async def run() -> None:
            if seconds is not None:
                await asyncio.sleep(seconds)
                await callback()
            else:
                await callback()

        self._timers[name] = asyncio.get_running_loop().create_task(run())

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
