"""A pipecat transport over an aiohttp server WebSocket (pipecat ships FastAPI and
`websockets` ones only), modelled on pipecat's FastAPI transport.

Unlike pipecat's, the input side never reads the socket: the call's handler task is the
only reader (it also watches for `stop`, oversized and malformed frames) and hands each
decoded frame to `InputTransport.deliver`. There the caller's audio is recorded and run
through an inline VAD, and only speech (with a little pre-roll) enters the pipeline: a
quiet caller costs no pipeline work. The output side is the only writer of media.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Final

from aiohttp import web
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from ..providers.base import Wire
from ..speech.vad import EnergyVad
from .frames import (
    CallerStartedSpeaking,
    CallerStoppedSpeaking,
    ProviderMarkFrame,
    SpeechFrame,
)
from .recorder import CallRecorder
from .transcript import CallTranscript

log = logging.getLogger(__name__)

# When the outbound clock is this far behind, the agent was silent: start a new schedule.
# Smaller lateness is caught up against the absolute clock instead of restarting it
# (pipecat's transport restarts on any lateness, so delay only ever grows: issue #3315).
IDLE_RESET_SECONDS: Final = 0.2
# Caller audio kept from just before the VAD fired, so the first syllable is not lost.
PREROLL_FRAMES: Final = 15
# Agent speech queued for the speaker at most; a longer utterance waits for room as it plays.
MAX_QUEUED_SPEECH_SECONDS: Final = 20.0
# Outbound gaps kept for the run's percentiles (about 33 minutes of agent audio); a
# longer call's later gaps still count, reach the metrics and its maximum.
KEPT_GAPS: Final = 100_000
# Later gaps held for the metrics at most: their feed empties them every 5 s (~250).
LATER_GAPS_HELD: Final = 10_000


class AiohttpWebsocketParams(TransportParams):
    """Transport parameters plus the provider's wire format."""

    serializer: Wire | None = None


class InputTransport(BaseInputTransport):
    """Turns frames the call handler decoded into pipeline input."""

    def __init__(
        self,
        params: AiohttpWebsocketParams,
        recorder: CallRecorder,
        transcript: CallTranscript,
        vad: EnergyVad,
        **kwargs: object,
    ) -> None:
        super().__init__(params, **kwargs)
        self._serializer = params.serializer
        self._recorder = recorder
        self._transcript = transcript
        self._vad = vad
        self._preroll: deque[InputAudioRawFrame] = deque(maxlen=PREROLL_FRAMES)
        self.started = asyncio.Event()

    # pipecat's processors override BaseObject.setup(task_manager) with another argument
    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        if self._serializer:
            await self._serializer.setup(setup)

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        self.started.set()

    async def deliver(self, frame: Frame) -> None:
        """Hand one decoded provider frame to the pipeline (called by the handler task)."""
        if isinstance(frame, InputAudioRawFrame):
            await self._audio(frame)
            return
        if isinstance(frame, InputDTMFFrame):
            self._recorder.keypress(frame.button.value)
        elif isinstance(frame, ProviderMarkFrame):
            self._transcript.mark_played(frame.mark)
        await self.push_frame(frame)

    async def _audio(self, frame: InputAudioRawFrame) -> None:
        self._recorder.write_caller(frame.audio)
        event = self._vad.feed(frame.audio)
        # Transcript times are wall-clock offsets, like the agent's lines; the VAD fires a
        # little after speech starts and `stop_seconds` after it ends.
        now_ms = self._transcript.now_ms()
        if event == "start":
            await self.push_frame(CallerStartedSpeaking(at_ms=max(0, now_ms - self._vad.start_ms)))
            while self._preroll:
                await self.push_frame(self._preroll.popleft())
        if self._vad.speaking or event == "stop":
            await self.push_frame(frame)
        else:
            self._preroll.append(frame)
        if event == "stop":
            stopped_ms = now_ms - int(self._vad.stop_seconds * 1000)
            await self.push_frame(CallerStoppedSpeaking(at_ms=max(0, stopped_ms)))


class OutputTransport(BaseOutputTransport):
    """Serializes pipeline output onto the socket, pacing audio in real time, and tells
    the transcript and the recorder what actually went out."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        params: AiohttpWebsocketParams,
        recorder: CallRecorder,
        transcript: CallTranscript,
        **kwargs: object,
    ) -> None:
        super().__init__(params, **kwargs)
        self._ws = ws
        self._serializer = params.serializer
        self._recorder = recorder
        self._transcript = transcript
        self._send_interval = 0.0
        self._unsent: list[bytes] = []  # PCM a packetizing wire holds: not heard yet
        self._next_send_time = 0.0
        self.send_failures = 0
        self.gaps: list[float] = []  # seconds between media sends while speaking
        # Gaps past KEPT_GAPS: counted and handed to the metrics (their feed empties this),
        # not kept for the run's percentiles.
        self.later_gaps: list[float] = []
        self.later_gap_count = 0
        self.later_gap_max = 0.0
        self._last_send = 0.0
        # (20 ms of PCM, None) or (None, mark name), in the order they go out
        self._speech: deque[tuple[bytes | None, str | None]] = deque()
        self._speech_ready = asyncio.Event()
        self._speech_room = asyncio.Event()
        self._max_queued_chunks = 0
        self._interruptions = 0  # a queued utterance that waited across one is dropped
        self._speaker: asyncio.Task[None] | None = None

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._send_interval = self.audio_chunk_size / (self.sample_rate * 2)
        self._max_queued_chunks = max(1, int(MAX_QUEUED_SPEECH_SECONDS / self._send_interval))
        self._speaker = self.create_task(self._speak(), name="speech-sender")
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame) -> None:
        await self._stop_speaking()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await self._stop_speaking()
        await super().cancel(frame)

    async def cleanup(self) -> None:
        """A pipeline cancelled before its StartFrame reached the end is only cleaned up
        (no EndFrame or CancelFrame passes here): the speaker still stops, rather than
        wait for good on speech that will never come."""
        await self._stop_speaking()
        await super().cleanup()  # type: ignore[no-untyped-call]

    async def _stop_speaking(self) -> None:
        self._drop_queued_speech()  # an utterance waiting for room must not wait for good
        if self._speaker is not None:
            await self.cancel_task(self._speaker)
            self._speaker = None

    def _drop_queued_speech(self) -> None:
        """Nothing queued will be sent: an utterance still waiting for room gives up its rest."""
        self._speech.clear()
        self._interruptions += 1
        self._speech_room.set()

    async def write_transport_frame(self, frame: Frame) -> None:
        """An utterance reached the head of the output queue: hand it to the speaker, as
        much at a time as the queue's bound allows. Barge-in while it waits drops the rest."""
        if not isinstance(frame, SpeechFrame):
            await super().write_transport_frame(frame)
            return
        chunk = self.audio_chunk_size
        interruptions = self._interruptions
        for i in range(0, len(frame.audio), chunk):
            while len(self._speech) >= self._max_queued_chunks and self._interruptions == interruptions:
                self._speech_room.clear()
                await self._speech_room.wait()
            if self._interruptions != interruptions:
                return
            self._speech.append((frame.audio[i:i + chunk], None))
            self._speech_ready.set()
        self._speech.append((None, frame.mark))
        self._speech_ready.set()

    async def _speak(self) -> None:
        """Send queued speech one 20 ms chunk at a time on an absolute clock; hold it while
        the provider asks us to stop sending (nothing is dropped or sent twice)."""
        assert self._serializer is not None
        serializer = self._serializer
        while True:
            if not self._speech:
                self._speech_ready.clear()
                self._last_send = 0.0
                await self._speech_ready.wait()
                continue
            if not serializer.may_send.is_set():
                await serializer.may_send.wait()
                self._last_send = self._next_send_time = 0.0  # a pause is not a gap
                continue  # a clear may have emptied the queue meanwhile
            pcm, mark = self._speech.popleft()
            self._speech_room.set()
            if pcm is None:
                # a packetizing provider's last partial packet plays before the mark
                last = serializer.flush_messages()
                if await self.send_messages(last):
                    self._sent()
                    if await self.send_messages([serializer.mark_message(mark or "")]):
                        self._transcript.mark_sent(mark or "")
                if last:  # that packet plays before whatever is said next
                    await self._pace(self._packet_seconds(len(last)))
                continue
            await self.write_audio_frame(
                OutputAudioRawFrame(audio=pcm, sample_rate=self.sample_rate, num_channels=1)
            )

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            self._drop_queued_speech()
            await self._write(frame)
            self._transcript.cleared()
            self._next_send_time = 0.0
            self._last_send = 0.0
            self._unsent.clear()  # the wire dropped what it held: nobody hears it

    async def send_message(
        self, frame: OutputTransportMessageFrame | OutputTransportMessageUrgentFrame
    ) -> None:
        await self._write(frame)  # marks travel in SpeechFrames, see _speak

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        serializer = self._serializer
        if serializer is None or self._ws.closed:
            return False
        messages = serializer.audio_messages(frame.audio, frame.sample_rate)
        if not await self.send_messages(messages):
            return False
        self._unsent.append(frame.audio)
        if messages:
            self._sent()
            # a packetizing provider (Exotel's 100 ms) sends every few chunks: it gets them
            # at once, then a pause as long as the audio sent; gaps are between sends
            now = time.monotonic()
            if self._last_send:
                if len(self.gaps) < KEPT_GAPS:
                    self.gaps.append(now - self._last_send)
                else:
                    self._later_gap(now - self._last_send)
            self._last_send = now
            packetizer = serializer.packetizer
            seconds = (self._packet_seconds(len(messages)) if packetizer is not None
                       else len(frame.audio) / (frame.sample_rate * 2))
            await self._pace(seconds)
        return True

    def _packet_seconds(self, packets: int) -> float:
        """How long `packets` of a packetizing wire play."""
        serializer = self._serializer
        assert serializer is not None and serializer.packetizer is not None
        return packets * serializer.packetizer.size / serializer.codec.bytes_per_second

    def _later_gap(self, gap: float) -> None:
        """A gap of a long call, past the ones kept: counted, and on to the metrics."""
        self.later_gap_count += 1
        self.later_gap_max = max(self.later_gap_max, gap)
        if len(self.later_gaps) < LATER_GAPS_HELD:
            self.later_gaps.append(gap)

    def _sent(self) -> None:
        """The audio the wire held went out: now it is recorded and in the transcript."""
        for pcm in self._unsent:
            self._recorder.write_agent(pcm)
            self._transcript.audio_sent(len(pcm))
        self._unsent.clear()

    async def _write(self, frame: Frame) -> bool:
        serializer = self._serializer
        if serializer is None or self._ws.closed:
            return False
        payload = await serializer.serialize(frame)
        return await self.send_messages([payload] if payload else [])

    async def send_messages(self, messages: list[str | bytes]) -> bool:
        """Send each message, in order; False when the socket is closed or refuses one."""
        if self._ws.closed:
            return False
        try:
            for payload in messages:
                if isinstance(payload, bytes):
                    await self._ws.send_bytes(payload)
                else:
                    await self._ws.send_str(payload)
        except (ConnectionError, RuntimeError) as exc:
            self.send_failures += 1
            if self.send_failures == 1:
                log.info("provider socket refused a frame: %s", type(exc).__name__)
            return False
        return True

    async def _pace(self, seconds: float) -> None:
        """Sleep until the next message is due on an absolute clock, `seconds` of audio later."""
        now = time.monotonic()
        if self._next_send_time == 0.0 or now - self._next_send_time > IDLE_RESET_SECONDS:
            self._next_send_time = now
        self._next_send_time += seconds
        delay = self._next_send_time - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class AiohttpWebsocketTransport(BaseTransport):
    """The pair of pipeline processors that move one call's frames over its socket."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        params: AiohttpWebsocketParams,
        *,
        recorder: CallRecorder,
        transcript: CallTranscript,
        vad: EnergyVad,
    ) -> None:
        super().__init__()
        self._input = InputTransport(params, recorder, transcript, vad, name=f"{self.name}#input")
        self._output = OutputTransport(ws, params, recorder, transcript, name=f"{self.name}#output")

    def input(self) -> InputTransport:
        return self._input

    def output(self) -> OutputTransport:
        return self._output

