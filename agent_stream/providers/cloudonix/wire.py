"""Cloudonix's media stream: Twilio's framing (contract section 2.3), pure and testable
without a socket. `start.session` is the Cloudonix session token (`callSid` when absent);
the domain is `start.accountSid` on the path form of the URL."""
from __future__ import annotations

from typing import Any

from ...errors import HandshakeError
from ..base import CallStart, identifier, start_object, text_field
from ..twilio_style import custom_parameters, mulaw_codec


def parse_start(message: dict[str, Any]) -> CallStart:
    """Check a `start` event: streamSid and callSid are required, session defaults to callSid."""
    start = start_object(message)
    stream_sid = identifier(start.get("streamSid") or message.get("streamSid"), "streamSid")
    call_sid = identifier(start.get("callSid"), "callSid")
    session = start.get("session") or call_sid
    if not isinstance(session, str):
        raise HandshakeError("malformed 'start' event: session must be a string")
    session = identifier(session, "session")
    return CallStart(
        call_id=session,
        stream_id=stream_sid,
        account_id=text_field(start, "accountSid"),
        caller=text_field(start, "from"),
        called=text_field(start, "to"),
        custom_parameters=custom_parameters(start.get("customParameters")),
        codec=mulaw_codec(start),
        fields=start,
        gathered={
            "cloudonix_call_sid": call_sid,
            "cloudonix_stream_sid": stream_sid,
            "cloudonix_session": session,
        },
    )
