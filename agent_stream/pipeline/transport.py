"""A pipecat transport over an aiohttp server WebSocket (pipecat ships FastAPI and
`websockets` ones only), modelled on pipecat's FastAPI transport.

Unlike pipecat's, the input side never reads the socket: the call's handler task is the
only reader (it also watches for `stop`, oversized and malformed frames) and hands each
decoded frame to `InputTransport.deliver`. The output side is the only writer of media.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

from aiohttp import web
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

log = logging.getLogger(__name__)

# When the outbound clock is this far behind, the agent was silent: start a new schedule.
# Smaller lateness is caught up against the absolute clock instead of restarting it
# (pipecat's transport restarts on any lateness, so delay only ever grows: issue #3315).
IDLE_RESET_SECONDS: Final = 0.2


class AiohttpWebsocketParams(TransportParams):
    """Transport parameters plus the provider's wire format."""

    serializer: FrameSerializer | None = None


class InputTransport(BaseInputTransport):
    """Turns frames the call handler decoded into pipeline input."""

    def __init__(self, params: AiohttpWebsocketParams, **kwargs: object) -> None:
        super().__init__(params, **kwargs)
        self._params = params
        self.started = asyncio.Event()

    async def setup(self, setup: FrameProcessorSetup) -> None:
        await super().setup(setup)
        if self._params.serializer:
            await self._params.serializer.setup(setup)

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        self.started.set()

    async def drain(self, timeout: float) -> None:
        """Wait until every delivered audio frame has entered the pipeline (before ending)."""
        queue = getattr(self, "_audio_in_queue", None)
        if queue is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.join(), timeout)

    async def deliver(self, frame: Frame) -> None:
        """Hand one decoded provider frame to the pipeline (called by the handler task)."""
        if isinstance(frame, InputAudioRawFrame):
            await self.push_audio_frame(frame)
        else:
            await self.push_frame(frame)


class OutputTransport(BaseOutputTransport):
    """Serializes pipeline output onto the socket, pacing audio in real time."""

    def __init__(
        self, ws: web.WebSocketResponse, params: AiohttpWebsocketParams, **kwargs: object
    ) -> None:
        super().__init__(params, **kwargs)
        self._ws = ws
        self._params = params
        self._send_interval = 0.0
        self._next_send_time = 0.0
        self.send_failures = 0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._send_interval = self.audio_chunk_size / (self.sample_rate * 2)
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            await self._write(frame)
            self._next_send_time = 0.0

    async def send_message(
        self, frame: OutputTransportMessageFrame | OutputTransportMessageUrgentFrame
    ) -> None:
        await self._write(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        if not await self._write(frame):
            return False
        await self._pace()
        return True

    async def _write(self, frame: Frame) -> bool:
        serializer = self._params.serializer
        if serializer is None or self._ws.closed:
            return False
        payload = await serializer.serialize(frame)
        if not payload:
            return True
        try:
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

    async def _pace(self) -> None:
        """Sleep until the next chunk is due on an absolute clock."""
        now = time.monotonic()
        if self._next_send_time == 0.0 or now - self._next_send_time > IDLE_RESET_SECONDS:
            self._next_send_time = now
        self._next_send_time += self._send_interval
        delay = self._next_send_time - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class AiohttpWebsocketTransport(BaseTransport):
    """The pair of pipeline processors that move one call's frames over its socket."""

    def __init__(self, ws: web.WebSocketResponse, params: AiohttpWebsocketParams) -> None:
        super().__init__()
        self._input = InputTransport(params, name=f"{self.name}#input")
        self._output = OutputTransport(ws, params, name=f"{self.name}#output")

    def input(self) -> InputTransport:
        return self._input

    def output(self) -> OutputTransport:
        return self._output
