"""The JSON media-stream framing Twilio made and Cloudonix and Telnyx follow: `connected`
then `start`, then `media` (base64 audio), `dtmf`, `mark` echoes and `stop`; out `media`,
`mark` and `clear`. What differs between them (where the stream id sits, snake or camel
case, the codec) is a parameter of `TwilioStyleWire`; their handshakes share
`read_connected_start`.
"""
from __future__ import annotations

import base64
import json
from typing import Any, Final
from xml.sax.saxutils import escape

from pipecat.frames.frames import Frame

from ..audio import Codec
from ..errors import HandshakeError
from .base import (
    INTERNAL_RATE,
    CallerIdentity,
    CallerSide,
    CallStart,
    HandshakeInput,
    Heard,
    LogAdapter,
    Wire,
    receive_event,
)

SAMPLE_RATE: Final = 8000


class TwilioStyleWire(Wire):
    """`stream_key` names the stream id in outbound messages (Twilio, Cloudonix: streamSid);
    None leaves it out (Telnyx)."""

    def __init__(self, start: CallStart, *, log: LogAdapter, stream_key: str | None) -> None:
        super().__init__(start, log=log)
        self._stream = {stream_key: start.stream_id} if stream_key else {}

    def media_message(self, payload: bytes) -> str:
        media = {"payload": base64.b64encode(payload).decode()}
        return json.dumps({"event": "media", **self._stream, "media": media})

    def mark_message(self, name: str) -> str:
        return json.dumps({"event": "mark", **self._stream, "mark": {"name": name}})

    def clear_message(self) -> str:
        return json.dumps({"event": "clear", **self._stream})

    def decode(self, data: str | bytes) -> Frame | None:
        decoded = self.json_event(data)
        if decoded is None:
            return None
        event, message = decoded
        body = message.get(event)
        if event == "media":
            return self.media_frame(body)
        if event == "dtmf":
            return self.dtmf_frame(body.get("digit") if isinstance(body, dict) else None)
        if event == "mark":
            return self.mark_echo(body.get("name") if isinstance(body, dict) else None)
        if event == "stop":
            return self.stop_frame()
        if event in ("connected", "start"):
            self.problem(f"repeated {event} event")
        elif event == "error":
            self.problem("error event from the provider")
        else:
            self.problem("unknown event")
        return None


def mulaw_codec(start: dict[str, Any]) -> Codec:
    """`start.mediaFormat` (absent: the default): mu-law at 8 kHz, all Twilio's framing
    streams, or the 4400 naming what it announced instead."""
    media_format = start.get("mediaFormat") or {}
    if not isinstance(media_format, dict):
        raise HandshakeError("malformed 'start' event: mediaFormat must be an object")
    encoding = media_format.get("encoding", "audio/x-mulaw")
    rate = media_format.get("sampleRate", SAMPLE_RATE)
    if encoding != "audio/x-mulaw" or rate != SAMPLE_RATE:
        raise HandshakeError(f"unsupported media format {encoding} at {rate} Hz (need 8 kHz mu-law)")
    return Codec("ulaw", SAMPLE_RATE, internal_rate=INTERNAL_RATE)


async def read_connected_start(given: HandshakeInput) -> dict[str, Any]:
    """`connected`, then the `start` event (returned whole), or the 4400 why not."""
    await receive_event(given, "connected")
    return await receive_event(given, "start")


def dial_response(destination: str) -> str:
    """The markup Twilio (TwiML) and Cloudonix (CXML) both read as "dial `destination`"."""
    return f"<Response><Dial>{escape(destination)}</Dial></Response>"


# The start event's mediaFormat of every Twilio-framed mu-law stream.
MULAW_FORMAT: Final = {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1}


def custom_parameters(value: Any) -> dict[str, str]:
    """Custom parameters as text (a provider may send numbers; anything else is dropped)."""
    if not isinstance(value, dict):
        return {}
    return {
        str(k)[:100]: str(v)[:500] for k, v in value.items() if isinstance(v, (str, int, float))
    }


class TwilioStyleCaller(CallerSide):
    """The provider's end of a Twilio-framed stream. `start` builds the start event from
    who the call is; the rest is the same for Cloudonix, Twilio and Telnyx (Telnyx names
    the stream `stream_id` and uses snake case)."""

    stream_key = "streamSid"
    sequence_key = "sequenceNumber"

    def connected(self) -> dict[str, Any]:
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}

    def start(self, who: CallerIdentity) -> dict[str, Any]:
        raise NotImplementedError

    def opening(self, who: CallerIdentity) -> list[str | bytes]:
        return [json.dumps(self.connected()), json.dumps(self.start(who))]

    def _event(self, who: CallerIdentity, event: str, body: dict[str, Any], sequence: int) -> str:
        return json.dumps({"event": event, self.sequence_key: str(sequence),
                           self.stream_key: who.stream_id, event: body})

    def media(self, who: CallerIdentity, payload: bytes, *, sequence: int, chunk: int) -> str:
        return self._event(who, "media", {
            "track": "inbound", "chunk": str(chunk), "timestamp": str((chunk - 1) * 20),
            "payload": base64.b64encode(payload).decode("ascii"),
        }, sequence)

    def dtmf(self, who: CallerIdentity, digit: str, sequence: int) -> str:
        return self._event(who, "dtmf", {"track": "inbound_track", "digit": digit}, sequence)

    def played(self, who: CallerIdentity, name: str, sequence: int) -> str:
        return self._event(who, "mark", {"name": name}, sequence)

    def stop(self, who: CallerIdentity, sequence: int) -> str:
        return self._event(who, "stop", {"callSid": who.call_id}, sequence)

    def heard(self, message: dict[str, Any]) -> Heard:
        event = message.get("event")
        if event == "media":
            payload = message.get("media", {}).get("payload", "")
            return Heard("media", base64.b64decode(payload), raw=message)
        if event == "mark":
            return Heard("mark", name=str(message.get("mark", {}).get("name", "")), raw=message)
        if event == "clear":
            return Heard("clear", raw=message)
        return Heard("other", raw=message)
