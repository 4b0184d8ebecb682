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
from .base import CallStart, HandshakeInput, LogAdapter, Wire, receive_event


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
