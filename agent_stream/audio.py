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
