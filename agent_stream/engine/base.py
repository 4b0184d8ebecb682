"""What every engine does the same way: one pipeline processor between the transport's
input and output that collects the caller's turns, speaks with espeak-ng behind marks,
decides barge-in itself (only an interruptible utterance is cut), keeps the silence and
max-duration timers, and ends the call by hanging up or transferring once the last words
have been played. Engines decide what to say and where to go next.
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
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from ..pipeline.frames import (
    CallerStartedSpeaking,
    CallerStoppedSpeaking,
    ProviderMarkFrame,
    SpeechFrame,
)
from ..pipeline.transcript import CallTranscript, Utterance
from ..speech import Recognizer, Synthesizer
from . import CallActions, Node, Workflow, render

log = logging.getLogger(__name__)

NOT_UNDERSTOOD: Final = "Sorry, I didn't catch that."
STILL_THERE: Final = "Are you still there?"
GOODBYE: Final = "Goodbye."
# Longest caller turn we decode; longer speech is cut to its first seconds.
MAX_UTTERANCE_BYTES: Final = 8000 * 2 * 15
# Extra time allowed for a mark echo beyond the utterance's own length.
MARK_GRACE_SECONDS: Final = 3.0


class VoiceAgent(FrameProcessor):
    """Runs one call for one workflow; subclasses say what to do with each caller turn."""

    def __init__(
        self,
        *,
        workflow: Workflow,
        context: dict[str, Any],
        tts: Synthesizer,
        stt: Recognizer,
        transcript: CallTranscript,
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
        self._actions = actions
        self._log = call_log
        self._voice = str(workflow.setting("voice", "en-us"))
        self._silence_timeout = float(workflow.setting("silence_timeout_seconds", 10))
        self._max_duration = float(workflow.setting("max_duration_seconds", 600))
        self._node: Node = workflow.nodes[workflow.start]
        self._silences = 0
        self._speech = bytearray()
        self._speech_started_ms = 0
        self._lock = asyncio.Lock()
        self._marks: dict[str, asyncio.Event] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._finished = False

    # -- what engines decide -------------------------------------------------------------

    async def _entered(self, node: Node, utterance: Utterance | None) -> None:
        """A start or agent node was entered and its `say` queued: what now."""
        raise NotImplementedError

    async def _heard_speech(self, audio: bytes, start_ms: int, end_ms: int) -> None:
        """One whole caller turn (16-bit PCM at 8 kHz), between the VAD's start and stop."""
        raise NotImplementedError

    async def _heard_digit(self, digit: str) -> None:
        """The caller pressed a key."""
        raise NotImplementedError

    def _reprompt(self) -> str:
        """What to repeat after "Are you still there?"."""
        return render(self._node.say, self._context)

    async def _interrupted(self) -> None:
        """The caller cut the agent off: stop producing what nobody will hear."""

    async def _closing(self) -> None:
        """The pipeline is ending: release what the engine holds."""

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

    def _spawn(
        self, coroutine: Any, name: str = "agent step", *, awaited: bool = False
    ) -> asyncio.Task[None]:
        """Every step and timer of the agent runs supervised (see `_task_done`), except a
        task another step awaits and judges itself (`awaited`): it is only tracked, so the
        end of the call can stop it."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard if awaited else self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A step or timer that raised is our bug: it is logged with its traceback and the
        call ends (1011, the run failed) instead of going on in a state nobody planned."""
        self._tasks.discard(task)
        if task.cancelled() or (error := task.exception()) is None:
            return
        self._log.error("%s failed", task.get_name(), exc_info=error)
        if not self._finished:
            self._finished = True
            self._actions.fail(f"agent error in {task.get_name()}: {type(error).__name__}")

    async def _stop_everything(self) -> None:
        """The call ends: cancel every step and timer and wait for them (a failure among
        them was logged by `_task_done`)."""
        self._finished = True
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]  # timers too
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._closing()

    async def cleanup(self) -> None:
        """A pipeline cancelled before its StartFrame reached the end is only cleaned up
        (no EndFrame or CancelFrame passes here): the steps and timers still stop."""
        await self._stop_everything()
        await super().cleanup()  # type: ignore[no-untyped-call]

    # -- conversation --------------------------------------------------------------------

    async def _begin(self) -> None:
        self._start_timer("max_duration", self._max_duration, self._max_duration_reached)
        async with self._lock:
            await self._enter(self._node)

    async def _enter(self, node: Node) -> None:
        """Say the node's text, then act on its kind: end and transfer nodes finish the
        call once it has been heard; the engine decides what start and agent nodes do."""
        self._node, self._silences = node, 0
        self._log.info("node %s (%s)", node.id, node.kind)
        utterance = await self._say(render(node.say, self._context), node.interruptible)
        if node.kind == "end":
            await self._wait_played(utterance)
            await self._end("agent_hangup")
        elif node.kind == "transfer":
            await self._wait_played(utterance)
            await self._transfer(node.destination or "")
        else:
            await self._entered(node, utterance)

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
            text = f"{STILL_THERE} {self._reprompt()}".strip()
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
        utterance = self._transcript.queue(text, len(pcm), interruptible=interruptible)
        self._marks[utterance.id] = asyncio.Event()
        await self.push_frame(SpeechFrame(audio=pcm, mark=utterance.id))
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
            await self._interrupted()
            self._transcript.interrupting()
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

        self._timers[name] = self._spawn(run(), name=f"{name} timer")

    def _cancel_timer(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
