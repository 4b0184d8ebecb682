"""Frames of our own that travel through a call's pipeline next to pipecat's."""
from __future__ import annotations

from dataclasses import dataclass

from pipecat.frames.frames import SystemFrame


@dataclass
class ProviderMarkFrame(SystemFrame):
    """The provider echoed a mark: the audio sent before it has been played to the caller."""

    mark: str = ""


@dataclass
class StreamStopFrame(SystemFrame):
    """The provider ended the stream (`stop` event): the caller hung up."""


@dataclass
class CallerStartedSpeaking(SystemFrame):
    """The VAD heard the caller start talking, `at_ms` into the call."""

    at_ms: int = 0


@dataclass
class CallerStoppedSpeaking(SystemFrame):
    """The caller has been quiet long enough to end the turn, `at_ms` into the call."""

    at_ms: int = 0
