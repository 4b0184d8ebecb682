"""Phone-audio primitives in one place: mu-law, resampling, level and stereo interleaving.

They are the C routines of `audioop`, which is in the standard library up to Python 3.12
and comes from the `audioop-lts` package (pinned in requirements.txt) from 3.13 on; this
is the only module that imports it. All PCM here is 16-bit little-endian mono.
"""
from __future__ import annotations

import warnings
from typing import Final

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # 3.11 and 3.12 warn on import
    import audioop

SAMPLE_WIDTH: Final = 2


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """G.711 mu-law to 16-bit PCM (same rate, twice the bytes)."""
    return audioop.ulaw2lin(ulaw, SAMPLE_WIDTH)


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """16-bit PCM to G.711 mu-law, as the phone network carries it."""
    return audioop.lin2ulaw(pcm, SAMPLE_WIDTH)


def resample(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample one whole piece of audio (an utterance, a recording): no state carried."""
    if from_rate == to_rate:
        return pcm
    converted, _ = audioop.ratecv(pcm, SAMPLE_WIDTH, 1, from_rate, to_rate, None)
    return converted


def rms(pcm: bytes) -> int:
    """Root-mean-square level of a frame, the voice activity detector's measure."""
    return audioop.rms(pcm, SAMPLE_WIDTH)


def interleave_stereo(left: bytes, right: bytes) -> bytes:
    """Two mono tracks of equal length to one stereo block (left, right per sample)."""
    return audioop.add(
        audioop.tostereo(left, SAMPLE_WIDTH, 1, 0),
        audioop.tostereo(right, SAMPLE_WIDTH, 0, 1),
        SAMPLE_WIDTH,
    )


def alaw_to_pcm16(alaw: bytes) -> bytes:
    """G.711 A-law (European and Indian phone legs) to 16-bit PCM."""
    return audioop.alaw2lin(alaw, SAMPLE_WIDTH)


def pcm16_to_alaw(pcm: bytes) -> bytes:
    """16-bit PCM to G.711 A-law."""
    return audioop.lin2alaw(pcm, SAMPLE_WIDTH)


ENCODINGS: Final = ("ulaw", "alaw", "l16")
# One byte of silence in each encoding (what pads a provider's last partial frame).
SILENCE_BYTE: Final = {"ulaw": b"\xff", "alaw": b"\xd5", "l16": b"\x00"}
# audioop.ratecv's filter state, carried from one frame to the next.
_RateState = tuple[int, tuple[tuple[int, int], ...]] | None


class Codec:
    """How one call's audio travels on its provider's wire: an encoding (`ulaw`, `alaw`, or
    `l16`: 16-bit little-endian PCM) at a rate, converted from and to the pipeline's PCM at
    `internal_rate`. A resampler's filter state is kept per direction for the whole call
    (starting it afresh per 20 ms frame clicks, audibly so at 16 kHz)."""

    def __init__(self, encoding: str, rate: int, *, internal_rate: int = 8000) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}")
        self.encoding = encoding
        self.rate = rate
        self.internal_rate = internal_rate
        self._in_state: _RateState = None
        self._out_state: _RateState = None

    def __repr__(self) -> str:
        return f"<Codec {self.encoding}/{self.rate}>"

    @property
    def bytes_per_second(self) -> int:
        return self.rate * (SAMPLE_WIDTH if self.encoding == "l16" else 1)

    def silence(self, size: int) -> bytes:
        """`size` bytes of silence on the wire."""
        return SILENCE_BYTE[self.encoding] * size

    def decode(self, payload: bytes) -> bytes:
        """What the provider sent, as pipeline PCM."""
        if self.encoding == "ulaw":
            pcm = ulaw_to_pcm16(payload)
        elif self.encoding == "alaw":
            pcm = alaw_to_pcm16(payload)
        else:
            pcm = payload[: len(payload) - len(payload) % SAMPLE_WIDTH]
        if self.rate != self.internal_rate:
            pcm, self._in_state = audioop.ratecv(
                pcm, SAMPLE_WIDTH, 1, self.rate, self.internal_rate, self._in_state
            )
        return pcm

    def encode(self, pcm: bytes, sample_rate: int) -> bytes:
        """Pipeline PCM at `sample_rate`, as the provider takes it."""
        if sample_rate != self.rate:
            pcm, self._out_state = audioop.ratecv(
                pcm, SAMPLE_WIDTH, 1, sample_rate, self.rate, self._out_state
            )
        if self.encoding == "ulaw":
            return pcm16_to_ulaw(pcm)
        if self.encoding == "alaw":
            return pcm16_to_alaw(pcm)
        return pcm
