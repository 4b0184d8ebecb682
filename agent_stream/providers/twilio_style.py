"""The JSON media-stream framing Twilio made and Cloudonix and Telnyx follow: `connected`
then `start`, then `media` (base64 audio), `dtmf`, `mark` echoes and `stop`; out `media`,
`mark` and `clear`. What differs between them (where the stream id sits, snake or camel
case, the codec) is a parameter of `TwilioStyleWire`; their handshakes share
`read_connected_start`.
"""
from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any

from pipecat.frames.frames import Frame

from ..errors import HandshakeError
from .base import (
    CallerIdentity,
    CallerSide,
    CallStart,
    HandshakeInput,
    Heard,
    LogAdapter,
    Wire,
    receive_event,
)


class TwilioStyleWire(Wire):
    """`stream_key` names the stream id in outbound messages (Twilio, Cloudonix: streamSid);
    None leaves it out (Telnyx)."""

    def __init__(self, start: CallStart, *, log: LogAdapter, stream_key: str | None) -> None:
        super().__init__(start, log=log)
        self._stream = {stream_key: start.stream_id} if stream_key else {}

    def media_message(self, payload: bytes) -> str:
        media = {"payload": base64.b64encode(payload).decode()}
        return json.dumps({"event": "media", **self._stream, "media": media})

    def mark_message(self, name: str) -> dict[str, Any]:
        return {"event": "mark", **self._stream, "mark": {"name": name}}

    def clear_message(self) -> str:
        return json.dumps({"event": "clear", **self._stream})

    def decode(self, data: str | bytes) -> Frame | None:
        decoded = self.json_event(data)
        if decoded is None:
            return None
        event, message = decoded
        body = message.get(event)
        if event == "media":
            return self._media(body)
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

    def _media(self, body: Any) -> Frame | None:
        payload = body.get("payload") if isinstance(body, dict) else None
        if not isinstance(payload, str):
            self.problem("media without payload")
            return None
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self.problem("bad base64 payload")
            return None
        return self.audio_frame(audio)


async def read_connected_start(given: HandshakeInput) -> dict[str, Any]:
    """`connected`, then the `start` event (returned whole), or the 4400 why not."""
    await receive_event(given, "connected", time.monotonic)
    return await receive_event(given, "start", time.monotonic)


def start_object(message: dict[str, Any]) -> dict[str, Any]:
    """The `start` object of a start event, or a 4400."""
    start = message.get("start")
    if not isinstance(start, dict):
        raise HandshakeError("malformed 'start' event: missing 'start' object")
    return start


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

    def read(self, data: str | bytes) -> Heard | None:
        if not isinstance(data, str):
            return None
        try:
            message = json.loads(data)
        except ValueError:
            return None
        if not isinstance(message, dict):
            return None
        event = message.get("event")
        if event == "media":
            payload = message.get("media", {}).get("payload", "")
            return Heard("media", base64.b64decode(payload), raw=message)
        if event == "mark":
            return Heard("mark", name=str(message.get("mark", {}).get("name", "")), raw=message)
        if event == "clear":
            return Heard("clear", raw=message)
        return Heard("other", raw=message)
