"""A cheap inline voice-activity detector: frame energy against an adaptive noise floor.

One C call (audio.rms) per 20 ms frame, no model and no thread hop: pipecat's Silero
VAD costs an ONNX session (~10 MB) and a thread hop every 20 ms per call.
"""
from __future__ import annotations

from typing import Final, Literal

from .. import audio

MIN_SPEECH_RMS: Final = 300.0
FLOOR_FACTOR: Final = 4.0

VadEvent = Literal["start", "stop"]


class EnergyVad:
    """Says when the caller starts and stops speaking; `stop_seconds` of quiet ends a turn."""

    def __init__(
        self, *, frame_ms: int = 20, start_ms: int = 60, stop_seconds: float = 0.5
    ) -> None:
        self._start_frames = max(1, start_ms // frame_ms)
        self.start_ms = self._start_frames * frame_ms
        self._stop_frames = max(1, int(stop_seconds * 1000) // frame_ms)
        self._floor = MIN_SPEECH_RMS / FLOOR_FACTOR
        self._loud = 0
        self._quiet = 0
        self.speaking = False
        self.stop_seconds = stop_seconds

    def feed(self, pcm: bytes) -> VadEvent | None:
        """One frame of 16-bit PCM; returns "start"/"stop" on a transition."""
        rms = audio.rms(pcm)
        loud = rms > max(MIN_SPEECH_RMS, self._floor * FLOOR_FACTOR)
        if not loud:
            self._floor = 0.95 * self._floor + 0.05 * rms
        if self.speaking:
            self._quiet = 0 if loud else self._quiet + 1
            if self._quiet >= self._stop_frames:
                self.speaking, self._loud = False, 0
                return "stop"
            return None
        self._loud = self._loud + 1 if loud else 0
        if self._loud >= self._start_frames:
            self.speaking, self._quiet = True, 0
            return "start"
        return None
