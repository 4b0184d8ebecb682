"""Exotel's Voicebot (AgentStream) framing, pure: `connected`, then `start` (snake case:
the top-level `stream_sid`; `start.call_sid`, `account_sid`, `from`, `to`,
`custom_parameters`, and `media_format` with the rate the applet streams at, a string),
then `media` (base64 16-bit little-endian PCM at that rate), `dtmf`, `mark` echoes and
`stop`. Out: `media`, `mark` and `clear`, each naming the `stream_sid`, the audio in
chunks of exactly 100 ms at the call's rate (Exotel plays a short or odd-sized chunk with
a gap after it)."""
from __future__ import annotations

from typing import Any, Final

from ...audio import Codec
from ...errors import HandshakeError
from ...strict_json import whole_number
from ..base import INTERNAL_RATE, CallStart, LogAdapter, Packetizer, call_start, identifier, start_object
from ..twilio_style import TwilioStyleWire, custom_parameters

# What the Voicebot applet streams (its `sample-rate` URL parameter): 8000 by default.
SAMPLE_RATES: Final = (8000, 16000, 24000)
RAW: Final = "audio/x-raw"
BIT_RATE: Final = 16
CHUNK_SECONDS: Final = 0.1  # Exotel's chunks: at least 100 ms, multiples of 320 bytes
MAX_CHUNK_BYTES: Final = 100_000
_NEED: Final = "need 8000, 16000 or 24000"


def _number(value: Any) -> int | None:
    """A number Exotel writes as a string ("8000"); digits given as a number are taken too."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return whole_number(value, max_digits=9) if isinstance(value, str) else None


def media_codec(media_format: Any) -> Codec:
    """16-bit PCM at the rate `start.media_format` announces. The rate is never assumed:
    an applet set to 16 or 24 kHz read as 8 kHz is noise for the whole call, so a missing
    or other rate is a 4400 naming it (as is another encoding or sample width)."""
    if media_format is None:
        raise HandshakeError(f"malformed 'start' event: missing media_format.sample_rate ({_NEED})")
    if not isinstance(media_format, dict):
        raise HandshakeError("malformed 'start' event: media_format must be an object")
    encoding = media_format.get("encoding", RAW)
    if encoding != RAW:
        raise HandshakeError(f"unsupported media encoding {str(encoding)[:40]!r} (need {RAW})")
    bits = media_format.get("bit_rate", str(BIT_RATE))
    if _number(bits) != BIT_RATE:
        raise HandshakeError(f"unsupported bit_rate {str(bits)[:20]!r} (need {BIT_RATE})")
    if "sample_rate" not in media_format:
        raise HandshakeError(f"malformed 'start' event: missing media_format.sample_rate ({_NEED})")
    given = media_format["sample_rate"]
    rate = _number(given)
    if rate not in SAMPLE_RATES or rate is None:
        raise HandshakeError(f"unsupported sample_rate {str(given)[:20]!r} ({_NEED})")
    return Codec("l16", rate, internal_rate=INTERNAL_RATE)


def chunk_bytes(codec: Codec) -> int:
    """Exotel's chunk at the call's rate: 100 ms (1600, 3200 or 4800 bytes, all multiples
    of 320 and far under its 100,000-byte limit)."""
    return round(codec.bytes_per_second * CHUNK_SECONDS)


def parse_start(message: dict[str, Any]) -> CallStart:
    """Exotel's start event: the stream, call and account sids, the caller and called
    numbers, the URL's custom parameters and the media format."""
    start = start_object(message)
    stream_sid = identifier(message.get("stream_sid") or start.get("stream_sid"), "stream_sid")
    call_sid = identifier(start.get("call_sid"), "call_sid")
    account_sid = identifier(start.get("account_sid"), "account_sid")
    return call_start(
        "exotel", start, call_id=call_sid, stream_id=stream_sid, account_id=account_sid,
        codec=media_codec(start.get("media_format")),
        custom_parameters=custom_parameters(start.get("custom_parameters")),
    )


class ExotelWire(TwilioStyleWire):
    """One Exotel stream: Twilio's events in snake case, every message naming the
    `stream_sid`, the agent's audio in 100 ms chunks (the last one padded before a mark)."""

    def __init__(self, start: CallStart, *, log: LogAdapter) -> None:
        super().__init__(start, log=log, stream_key="stream_sid")
        self.packetizer = Packetizer(chunk_bytes(self.codec), self.codec.silence(1))
