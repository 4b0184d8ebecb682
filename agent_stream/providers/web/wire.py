"""The browser test call's framing, pure: binary 16-bit little-endian PCM at 16 kHz mono
both ways, 20 ms (640 bytes) a message out; text JSON for the rest. Out: `clear`
(barge-in), `mark` (echoed by the page when its playback reaches it), `transcript`
(live lines), `hangup` and `transfer`. In: audio, `mark`, `dtmf`, `hangup`."""
from __future__ import annotations

import json
from typing import Any, Final

from pipecat.frames.frames import Frame

from ...audio import Codec
from ..base import INTERNAL_RATE, BinaryAudioWire, CallStart, LogAdapter

RATE: Final = 16000
FRAME_BYTES: Final = 640  # 20 ms of 16-bit PCM at 16 kHz


def web_codec() -> Codec:
    """What the page captures and plays (it resamples to and from its own rate)."""
    return Codec("l16", RATE, internal_rate=INTERNAL_RATE)


def event(kind: str, /, **body: Any) -> str:
    """One JSON control message to the page."""
    return json.dumps({"event": kind, **body})


class WebWire(BinaryAudioWire):
    """One browser call: audio travels as bare binary frames, control as JSON text."""

    shows_live_lines = True

    def __init__(self, start: CallStart, *, log: LogAdapter) -> None:
        super().__init__(start, log=log, packet_bytes=FRAME_BYTES)

    def mark_message(self, name: str) -> str:
        return event("mark", name=name)

    def clear_message(self) -> str:
        return event("clear")

    def transcript_message(self, role: str, text: str) -> str:
        return event("transcript", role=role, text=text)

    def decode(self, data: str | bytes) -> Frame | None:
        if isinstance(data, bytes) and len(data) % 2:  # the page sends whole samples
            self.problem("odd-sized audio frame")
            return None
        return super().decode(data)

    def decode_text(self, data: str) -> Frame | None:
        decoded = self.json_event(data)
        if decoded is None:
            return None
        name, message = decoded
        if name == "mark":
            return self.mark_echo(message.get("name"))
        if name == "dtmf":
            return self.dtmf_frame(message.get("digit"))
        if name == "hangup":
            return self.stop_frame()
        self.problem("repeated start event" if name == "start" else "unknown event")
        return None
