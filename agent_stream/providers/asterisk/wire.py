"""Asterisk's WebSocket channel driver (chan_websocket) framing, pure: TEXT frames carry
control events and commands, BINARY frames raw audio in the channel's format.

Events come in one of two forms, chosen per call by the dialplan's `f()` option: JSON
(`{"event":"MEDIA_START",...}`, Asterisk 20.18, 22.8, 23.2 and later) or the older plain
text, `EVENT key:value key:value` (`MEDIA_START`, `DTMF_END`) or `EVENT argument`
(`MEDIA_MARK_PROCESSED <correlation id>`). We answer in the form `MEDIA_START` came in:
JSON `{"command":"MARK_MEDIA","correlation_id":"utt-1"}`, or plain `MARK_MEDIA utt-1`
(the correlation id is the command's one argument, as chan_websocket.c reads it: the rest
of the line after the first space). Asterisk parses a command in the other form as an
error and ignores it.

Out: binary audio in multiples of `optimal_frame_size` (Asterisk drops the remainder of
any other message) and never over 65,500 bytes (a larger message closes the socket and
hangs up the call); `FLUSH_MEDIA` on barge-in, `MARK_MEDIA` as the playback mark,
`HANGUP`. In: `DTMF_END`, `MEDIA_MARK_PROCESSED` (a mark reached the front of the queue),
`MEDIA_XOFF`/`MEDIA_XON` (stop and resume sending). There is no stop event: the call ends
when the socket closes.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from pipecat.frames.frames import Frame

from ... import strict_json
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

EVENT: Final = "MEDIA_START"
JSON_FORM: Final = "json"
PLAIN_FORM: Final = "plain-text"
# chan_websocket's formats we speak -> (our encoding, rate).
FORMATS: Final = {"ulaw": ("ulaw", 8000), "alaw": ("alaw", 8000), "slin16": ("l16", 16000)}
# The largest WebSocket message chan_websocket takes (a larger one hangs up the call).
MAX_MESSAGE: Final = 65_500
PACKET_SECONDS: Final = 0.02
# Events we expect and have no use for (answers to commands we never send, mostly).
IGNORED_EVENTS: Final = frozenset({
    "STATUS", "MEDIA_BUFFERING_COMPLETED", "QUEUE_DRAINED", "DTMF_BEGIN",
})
# URL query parameters the stream URL itself may use (the query form's provider).
_URL_PARAMETERS: Final = frozenset({"provider"})
MAX_PARAMETERS: Final = 50
MAX_PARAMETER_KEY: Final = 100
MAX_PARAMETER_VALUE: Final = 500


def parse_control(data: str) -> tuple[str, dict[str, Any]] | None:
    """A TEXT control message as (event or command, its parameters), in either form; None
    when it is neither. Plain text: the first word names it; `key:value` words are
    parameters, a lone word its `argument`."""
    text = data.strip()
    if text.startswith("{"):
        try:
            message = strict_json.loads(text)
        except ValueError:
            return None
        if not isinstance(message, dict):
            return None
        name = message.get("event", message.get("command"))
        return (name, message) if isinstance(name, str) and name else None
    name, _, rest = text.partition(" ")
    if not name:
        return None
    parameters: dict[str, Any] = {}
    for word in rest.split():
        key, colon, value = word.partition(":")
        if colon and key:
            parameters[key] = value
        else:
            parameters.setdefault("argument", word)
    return name, parameters


def control_form(data: str) -> str:
    """Which form a control message came in."""
    return JSON_FORM if data.lstrip().startswith("{") else PLAIN_FORM


def command(form: str, name: str, **parameters: str) -> str:
    """A command in the stream's form: JSON, or plain text with its one argument."""
    if form == JSON_FORM:
        return json.dumps({"command": name, **parameters}, separators=(",", ":"))
    return " ".join([name, *parameters.values()])


def uri_parameters(query: Mapping[str, str]) -> dict[str, str]:
    """The dialplan's `v(k=v,...)` options, which chan_websocket appends to the stream URL
    as its query: the call's custom parameters (bounded in number and size)."""
    parameters: dict[str, str] = {}
    for key, value in query.items():
        if key in _URL_PARAMETERS or not key or key in parameters:
            continue
        if len(parameters) == MAX_PARAMETERS:
            break
        parameters[key[:MAX_PARAMETER_KEY]] = value.strip()[:MAX_PARAMETER_VALUE]
    return parameters


def media_codec(fields: Mapping[str, Any]) -> tuple[Codec, int]:
    """The channel's codec and optimal frame size, or the 4400 naming what is wrong."""
    name = fields.get("format")
    found = FORMATS.get(name) if isinstance(name, str) else None
    if found is None:
        raise HandshakeError(
            f"unsupported format {str(name)[:40]!r} (need {', '.join(FORMATS)})"
        )
    size = fields.get("optimal_frame_size")
    if isinstance(size, str):
        size = strict_json.whole_number(size) or size
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_MESSAGE:
        raise HandshakeError(
            f"malformed '{EVENT}' event: optimal_frame_size must be 1 to {MAX_MESSAGE},"
            f" not {str(fields.get('optimal_frame_size'))[:20]!r}"
        )
    encoding, rate = found
    if encoding == "l16" and size % 2:
        raise HandshakeError(f"malformed '{EVENT}' event: odd optimal_frame_size {size} for {name}")
    return Codec(encoding, rate, internal_rate=INTERNAL_RATE), size


def parse_start(data: str | bytes, query: Mapping[str, str]) -> CallStart:
    """`MEDIA_START` in either form, and the stream URL's query (the `v()` options): the
    channel id is the call (ARI knows it by it), the connection id the stream."""
    if not isinstance(data, str):
        raise HandshakeError(f"expected a text '{EVENT}' event, got a binary frame")
    form = control_form(data)
    parsed = parse_control(data)
    if parsed is None:
        if form == JSON_FORM:
            raise HandshakeError(f"malformed '{EVENT}' event: not JSON")
        raise HandshakeError(f"expected '{EVENT}' event, got an empty message")
    name, fields = parsed
    if name != EVENT:
        raise HandshakeError(f"expected '{EVENT}' event, got {name[:40]!r}")
    channel_id = identifier(fields.get("channel_id"), "channel_id", event=EVENT)
    connection_id = identifier(fields.get("connection_id"), "connection_id", event=EVENT)
    codec, frame_size = media_codec(fields)
    parameters = uri_parameters(query)
    start = call_start(
        "asterisk", fields, call_id=channel_id, stream_id=connection_id, account_id=None,
        codec=codec, custom_parameters=parameters, numbers=parameters,
    )
    start.gathered["asterisk_control_format"] = form
    start.gathered["asterisk_optimal_frame_size"] = frame_size
    return start


def form_of(start: CallStart) -> str:
    """The control form of the call's stream (what its MEDIA_START came in)."""
    return str(start.gathered.get("asterisk_control_format", JSON_FORM))


def packet_size(codec: Codec, optimal_frame_size: int) -> int:
    """The outbound message size: the smallest multiple of the optimal frame size holding
    20 ms of audio, and never more than Asterisk takes in one message."""
    per_packet = round(codec.bytes_per_second * PACKET_SECONDS)
    frames = max(1, -(-per_packet // optimal_frame_size))
    return min(frames, MAX_MESSAGE // optimal_frame_size) * optimal_frame_size


class AsteriskWire(BinaryAudioWire):
    """One chan_websocket stream: binary audio in packets Asterisk plays whole, commands in
    the stream's own form, MEDIA_XOFF and MEDIA_XON holding and releasing our audio."""

    def __init__(self, start: CallStart, *, log: LogAdapter) -> None:
        size = int(start.gathered["asterisk_optimal_frame_size"])
        super().__init__(start, log=log, packet_bytes=packet_size(start.codec, size))
        self.form = form_of(start)

    def mark_message(self, name: str) -> str:
        return command(self.form, "MARK_MEDIA", correlation_id=name)

    def clear_message(self) -> str:
        return command(self.form, "FLUSH_MEDIA")

    def decode_text(self, data: str) -> Frame | None:
        parsed = parse_control(data)
        if parsed is None:
            self.problem("malformed control message")
            return None
        event, fields = parsed
        if event == "DTMF_END":
            return self.dtmf_frame(fields.get("digit"))
        if event == "MEDIA_MARK_PROCESSED":
            return self.mark_echo(fields.get("correlation_id", fields.get("argument")))
        if event == "MEDIA_XOFF":
            self.may_send.clear()
            return None
        if event == "MEDIA_XON":
            self.may_send.set()
            return None
        if event in IGNORED_EVENTS:
            return None
        if event == "ERROR":
            self.problem("error event from Asterisk")
        else:
            self.problem("repeated MEDIA_START" if event == EVENT else "unknown event")
        return None
