"""Records what the caller sends: audio to a WAV file as it arrives, DTMF digits pressed."""
from __future__ import annotations

import time
import wave
from dataclasses import dataclass
from pathlib import Path

from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


@dataclass(frozen=True)
class Keypress:
    digit: str
    at_ms: int


class CallRecorder(FrameProcessor):
    """Writes caller audio straight to disk (nothing held in memory) and notes keypresses."""

    def __init__(self, path: Path, *, sample_rate: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.path = path
        self._sample_rate = sample_rate
        self._wav: wave.Wave_write | None = None
        self._started = time.monotonic()
        self.keypresses: list[Keypress] = []
        self.audio_bytes = 0

    def open(self) -> None:
        """Create the file before any audio arrives, so every run has a recording."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wav = wave.open(str(self.path), "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(self._sample_rate)
        self._started = time.monotonic()

    def close(self) -> None:
        """Finish the WAV header; safe to call more than once."""
        if self._wav is not None:
            self._wav.close()
            self._wav = None

    @property
    def seconds(self) -> float:
        return self.audio_bytes / (2 * self._sample_rate)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and self._wav is not None:
            self._wav.writeframesraw(frame.audio)
            self.audio_bytes += len(frame.audio)
        elif isinstance(frame, InputDTMFFrame):
            elapsed = int((time.monotonic() - self._started) * 1000)
            self.keypresses.append(Keypress(frame.button.value, elapsed))
        elif isinstance(frame, (EndFrame, CancelFrame)):
            self.close()
        await self.push_frame(frame, direction)
