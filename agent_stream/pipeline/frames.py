"""Frames of our own that travel through a call's pipeline next to pipecat's."""
from __future__ import annotations

from dataclasses import dataclass

from pipecat.frames.frames import DataFrame, SystemFrame


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


@dataclass
class SpeechFrame(DataFrame):
    """One agent utterance: 8 kHz 16-bit PCM for the provider, then a mark named `mark`.

    The output transport sends it in 20 ms media messages from its own paced queue, so a
    second of speech is one pipeline frame, not fifty.
    """

    audio: bytes = b""
    mark: str = ""
