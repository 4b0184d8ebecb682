"""Plivo's Audio Streaming framing, pure: no `connected`, `start` first (camelCase ids,
`mediaFormat` mu-law at 8 kHz or L16 at 8 or 16 kHz, `extra_headers` as "k1=v1;k2=v2"),
then `media`, `dtmf`, `playedStream` (a checkpoint reached) and `clearedAudio`; no `stop`,
the socket just closes. Out: `playAudio` in the stream's own content type and rate,
`checkpoint` and `clearAudio`."""
from __future__ import annotations

import base64
import json
from typing import Any, Final

from pipecat.frames.frames import Frame

from ...audio import Codec
from ...errors import HandshakeError
from ...strict_json import whole_number
from ..base import (
    CONFIG_PARAMETER,
    INTERNAL_RATE,
    CallStart,
    LogAdapter,
    Wire,
    call_start,
    identifier,
    start_object,
)

MULAW: Final = "audio/x-mulaw"
L16: Final = "audio/x-l16"
# What Plivo streams, as (content type, rate) -> our codec's encoding.
MEDIA_FORMATS: Final = {(MULAW, 8000): "ulaw", (L16, 8000): "l16", (L16, 16000): "l16"}
CONTENT_TYPES: Final = {"ulaw": MULAW, "l16": L16}
# Plivo allows letters and digits only in extraHeaders: this key names the configuration.
CONFIG_HEADER: Final = "telephonyconfiguration"
MAX_HEADER_KEY: Final = 100
MAX_HEADER_VALUE: Final = 500


def parse_extra_headers(value: Any) -> dict[str, str]:
    """`extra_headers` ("k1=v1;k2=v2") as custom parameters; `telephonyconfiguration` is
    our `telephony_configuration`. Pairs without a key are dropped."""
    if isinstance(value, dict):  # not what Plivo documents, but unambiguous
        pairs = [(str(k), str(v)) for k, v in value.items() if isinstance(v, (str, int, float))]
    elif isinstance(value, str):
        pairs = [(k, v) for k, _, v in (item.partition("=") for item in value.split(";"))]
    else:
        return {}
    parameters: dict[str, str] = {}
    for key, text in pairs:
        key = key.strip()[:MAX_HEADER_KEY]
        if key:
            name = CONFIG_PARAMETER if key.lower() == CONFIG_HEADER else key
            parameters[name] = text.strip()[:MAX_HEADER_VALUE]
    return parameters


def extra_headers_text(parameters: dict[str, str]) -> str:
    """Custom parameters as Plivo's `extraHeaders` carries them (the inverse of the above)."""
    return ";".join(
        f"{CONFIG_HEADER if key == CONFIG_PARAMETER else key}={value}"
        for key, value in parameters.items()
    )


def _rate(value: Any) -> int | None:
    """A sample rate as a number (Plivo sends one; digits in a string are taken too)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return whole_number(value) if isinstance(value, str) else None


def media_codec(start: dict[str, Any]) -> Codec:
    """The stream's codec from `start.mediaFormat` (absent: Plivo's default, mu-law at
    8 kHz); anything Plivo does not stream is a 4400 that names it."""
    media_format = start.get("mediaFormat") or {}
    if not isinstance(media_format, dict):
        raise HandshakeError("malformed 'start' event: mediaFormat must be an object")
    encoding = media_format.get("encoding", MULAW)
    given_rate = media_format.get("sampleRate", 8000)
    rate = _rate(given_rate)
    known = MEDIA_FORMATS.get((encoding, rate)) if isinstance(encoding, str) and rate else None
    if known is None or rate is None:
        raise HandshakeError(
            f"unsupported media format {str(encoding)[:40]} at {str(given_rate)[:10]} Hz"
            f" (need {MULAW} at 8000 or {L16} at 8000 or 16000)"
        )
    return Codec(known, rate, internal_rate=INTERNAL_RATE)


def parse_start(message: dict[str, Any]) -> CallStart:
    """Plivo's start event: callId, streamId and accountId (the auth id), the media format,
    and `extra_headers` at the top level of the message."""
    start = start_object(message)
    call_id = identifier(start.get("callId"), "callId")
    stream_id = identifier(start.get("streamId") or message.get("streamId"), "streamId")
    account_id = identifier(start.get("accountId"), "accountId")
    return call_start(
        "plivo", start, call_id=call_id, stream_id=stream_id, account_id=account_id,
        codec=media_codec(start), custom_parameters=parse_extra_headers(message.get("extra_headers")),
    )


class PlivoWire(Wire):
    """One Plivo stream: `playAudio` says the stream's content type and rate on every
    message (Plivo plays nothing else), a checkpoint is our mark, `clearedAudio` only
    confirms a clear."""

    def __init__(self, start: CallStart, *, log: LogAdapter) -> None:
        super().__init__(start, log=log)
        self._format = {"contentType": CONTENT_TYPES[self.codec.encoding], "sampleRate": self.codec.rate}

    def media_message(self, payload: bytes) -> str:
        media = {**self._format, "payload": base64.b64encode(payload).decode()}
        return json.dumps({"event": "playAudio", "media": media})

    def mark_message(self, name: str) -> str:
        return json.dumps({"event": "checkpoint", "streamId": self.start.stream_id, "name": name})

    def clear_message(self) -> str:
        return json.dumps({"event": "clearAudio", "streamId": self.start.stream_id})

    def decode(self, data: str | bytes) -> Frame | None:
        decoded = self.json_event(data)
        if decoded is None:
            return None
        event, message = decoded
        if event == "media":
            return self.media_frame(message.get("media"))
        if event == "dtmf":
            body = message.get("dtmf")
            return self.dtmf_frame(body.get("digit") if isinstance(body, dict) else None)
        if event == "playedStream":
            return self.mark_echo(message.get("name"))
        if event == "clearedAudio":  # confirms a clear: expected, not a problem
            return None
        self.problem("repeated start event" if event == "start" else "unknown event")
        return None
