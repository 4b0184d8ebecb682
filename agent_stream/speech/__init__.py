"""Embedded, offline speech: espeak-ng synthesis, pocketsphinx recognition, energy VAD."""
from __future__ import annotations

from dataclasses import dataclass, field

from .stt import GrammarRecognizer
from .tts import EspeakSynthesizer


@dataclass
class SpeechServices:
    """The process-wide speech engines every call shares (one espeak thread, one decoder
    process); the decoder process starts on first use, not at import."""

    tts: EspeakSynthesizer = field(default_factory=EspeakSynthesizer)
    stt: GrammarRecognizer = field(default_factory=GrammarRecognizer)

    def close(self) -> None:
        self.tts.close()
        self.stt.close()
