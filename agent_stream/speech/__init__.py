"""Embedded, offline speech: espeak-ng synthesis, pocketsphinx recognition, energy VAD."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .stt import GrammarRecognizer
from .tts import EspeakSynthesizer


class Recognizer(Protocol):
    """Speech to text for one caller turn: 16-bit PCM at 8 kHz, and the phrases the agent
    listens for (a grammar for the embedded decoder, a hint for a vendor). None: not
    understood."""

    async def recognize(self, pcm8k: bytes, phrases: tuple[str, ...]) -> str | None: ...


class Synthesizer(Protocol):
    """Text to speech: 16-bit PCM at 8 kHz."""

    async def synthesize(self, text: str, *, voice: str = ..., rate: int = ...) -> bytes: ...


@dataclass
class SpeechServices:
    """The process-wide speech engines every call shares (one espeak thread, one decoder
    process); the decoder process starts on first use, not at import."""

    tts: EspeakSynthesizer = field(default_factory=EspeakSynthesizer)
    stt: GrammarRecognizer = field(default_factory=GrammarRecognizer)

    def close(self) -> None:
        self.tts.close()
        self.stt.close()
