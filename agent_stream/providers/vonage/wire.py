"""Vonage Voice API WebSocket framing, pure: a text `websocket:connected` first (its
`content-type` says the rate; the NCCO's `headers` arrive flattened beside it), then binary
16-bit little-endian PCM in frames of exactly 20 ms both ways, text `websocket:dtmf`,
`websocket:notify` (a notify's payload back once the audio before it played) and
`websocket:cleared`. Out: binary frames, `{"action":"notify"}` as our mark and
`{"action":"clear"}` on barge-in. No stop event: the socket closes."""
from __future__ import annotations

import json
import re
from typing import Any, Final

from pipecat.frames.frames import Frame

from ...audio import Codec
from ...errors import HandshakeError
from ..base import (
    INTERNAL_RATE,
    BinaryAudioWire,
    CallStart,
    LogAdapter,
    call_start,
    identifier,
)

CONNECTED: Final = "websocket:connected"
RATES: Final = (8000, 16000, 24000)
FRAME_MS: Final = 20
# `audio/l16;rate=16000`, spaces allowed around the parameter
_CONTENT_TYPE_RE: Final = re.compile(r"audio/l16\s*;\s*rate\s*=\s*(\d+)", re.IGNORECASE | re.ASCII)
# The connected message's own keys: everything else came from the NCCO's headers.
_OWN_KEYS: Final = frozenset({"event", "content-type"})
MAX_HEADER_VALUE: Final = 500


def frame_bytes(rate: int) -> int:
    """One 20 ms frame of 16-bit PCM at `rate` (320 B at 8 kHz, 640 at 16 kHz)."""
    return rate * 2 * FRAME_MS // 1000


def content_rate(content_type: Any) -> int:
    """The rate `content-type` announces, or a 4400 naming what came."""
    match = _CONTENT_TYPE_RE.fullmatch(content_type.strip()) if isinstance(content_type, str) else None
    rate = int(match.group(1)) if match else None
    if rate not in RATES:
        raise HandshakeError(
            f"unsupported content-type {str(content_type)[:40]!r}"
            " (need audio/l16;rate=8000, 16000 or 24000)"
        )
    return rate


def ncco_headers(message: dict[str, Any]) -> dict[str, str]:
    """The NCCO `headers` as Vonage flattens them into the connected message (text values)."""
    return {
        str(key)[:100]: str(value)[:MAX_HEADER_VALUE]
        for key, value in message.items()
        if key not in _OWN_KEYS and isinstance(value, (str, int, float)) and not isinstance(value, bool)
    }


def parse_connected(message: dict[str, Any], *, application_id: str | None) -> CallStart:
    """The connected message: the rate, the required `call_uuid` header (the phone leg the
    REST API acts on), the caller and called numbers where the NCCO passes `from`/`to`.
    `application_id` is what the upgrade's JWT claims (it selects the configuration)."""
    rate = content_rate(message.get("content-type"))
    call_uuid = identifier(message.get("call_uuid"), "call_uuid header", event=CONNECTED)
    headers = ncco_headers(message)
    parameters = {k: v for k, v in headers.items() if k not in ("call_uuid", "from", "to")}
    return call_start(
        "vonage", message, call_id=call_uuid, stream_id=call_uuid, account_id=application_id,
        codec=Codec("l16", rate, internal_rate=INTERNAL_RATE), custom_parameters=parameters,
        fields=dict(message), numbers=headers,
    )


class VonageWire(BinaryAudioWire):
    """One Vonage socket: exactly 20 ms a binary frame out (the last one padded), a notify
    whose payload names our mark, a clear."""

    def __init__(self, start: CallStart, *, log: LogAdapter) -> None:
        super().__init__(start, log=log, packet_bytes=frame_bytes(start.codec.rate))

    def mark_message(self, name: str) -> str:
        return json.dumps({"action": "notify", "payload": {"mark": name}})

    def clear_message(self) -> str:
        return json.dumps({"action": "clear"})

    def decode_text(self, data: str) -> Frame | None:
        decoded = self.json_event(data)
        if decoded is None:
            return None
        event, message = decoded
        if event == "websocket:dtmf":
            return self.dtmf_frame(message.get("digit"))
        if event == "websocket:notify":
            payload = message.get("payload")
            return self.mark_echo(payload.get("mark") if isinstance(payload, dict) else None)
        if event == "websocket:cleared":  # confirms a clear: expected, not a problem
            return None
        self.problem("repeated connected event" if event == CONNECTED else "unknown event")
        return None
