"""Plivo Audio Streaming (contract section 7): `<Stream bidirectional="true">` in Plivo
XML, Plivo's JSON framing (mu-law at 8 kHz or L16 at 8 or 16 kHz, answered in the same),
`start.accountId` (the auth id) or `extra_headers` selecting the configuration, the Call
resource of the REST API for validation, hang-up and transfer (through a one-time URL of
this server that answers the Dial)."""
from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

from ...audio import Codec
from ...models import TelephonyConfig
from .. import base
from . import transfer
from .client import PlivoControl
from .wire import CONFIG_HEADER, CONTENT_TYPES, PlivoWire, extra_headers_text, parse_start

__all__ = ["PlivoProvider", "parse_start"]


class PlivoProvider(base.Provider):
    name = "plivo"
    title = "Plivo"
    account_field = "auth_id"
    account_label = "auth ID"
    default_api_base_url = "https://api.plivo.com"
    stand_in_account = "MA" + "0" * 18
    caller_codecs: ClassVar[Mapping[str, tuple[str, int]]] = {
        "ulaw": ("ulaw", 8000), "l16": ("l16", 16000), "l16-8000": ("l16", 8000),
    }
    start_account_key = "accountId"
    fields: ClassVar[tuple[base.ConfigField, ...]] = (
        base.ConfigField("auth_id", "Auth ID", placeholder="MA…", max_length=40,
                         help="Console, Overview: the Auth ID (MA… for an account, SA… for a subaccount).",
                         missing="Enter the Auth ID (MA… or SA…).", pattern="[MS]A[A-Z0-9]{18}",
                         pattern_message="An Auth ID is MA (or SA for a subaccount) followed by"
                                         " 18 capital letters and digits."),
        base.ConfigField("auth_token", "Auth token", secret=True, max_length=200,
                         help="The Auth Token next to it: it validates calls, hangs up and transfers.",
                         missing="Paste the account's auth token."),
    )

    async def read_start(self, given: base.HandshakeInput) -> base.CallStart:
        """Plivo sends no `connected`: `start` is the first message."""
        return parse_start(await base.receive_event(given, "start"))

    def wire(self, start: base.CallStart, *, log: base.LogAdapter) -> base.Wire:
        return PlivoWire(start, log=log)

    def control(self, call: base.ControlContext) -> base.CallControl:
        return PlivoControl(call, transfer_link=partial(transfer.transfer_link, call.tokens, call.public_url))

    def snippets(self, stream_url: str, config: TelephonyConfig | None) -> list[base.Snippet]:
        wss = base.as_wss(stream_url)
        headers = (f" extraHeaders={quoteattr(f'{CONFIG_HEADER}={config.id}')}" if config else "")
        xml = ('<Response><Stream bidirectional="true" keepCallAlive="true" '
               f'contentType="audio/x-mulaw;rate=8000"{headers}>{escape(wss)}</Stream></Response>')
        return [
            base.Snippet("Stream URL (Plivo connects over wss://)", "text", wss),
            base.Snippet("What your Plivo application's answer URL returns (bidirectional=\"true\" "
                         "or the caller never hears the agent)", "xml", xml, label="Plivo XML"),
        ]

    def caller(self, codec: Codec, secrets: Mapping[str, str] | None) -> base.CallerSide:
        return PlivoCaller(codec, secrets)

    def routes(self) -> list[web.RouteDef]:
        return transfer.routes()


class PlivoCaller(base.CallerSide):
    """Plivo's end of a stream: `start` alone opens it, numbers are numbers, the end is the
    socket closing."""

    def _format(self) -> dict[str, Any]:
        return {"encoding": CONTENT_TYPES[self.codec.encoding], "sampleRate": self.codec.rate}

    def start(self, who: base.CallerIdentity) -> dict[str, Any]:
        message: dict[str, Any] = {
            "event": "start", "sequenceNumber": 1,
            "start": {"callId": who.call_id, "streamId": who.stream_id,
                      "accountId": who.account_id, "tracks": ["inbound"],
                      "mediaFormat": self._format()},
        }
        if who.custom_parameters:
            message["extra_headers"] = extra_headers_text(who.custom_parameters)
        return message

    def opening(self, who: base.CallerIdentity) -> list[str | bytes]:
        return [json.dumps(self.start(who))]

    def _event(self, who: base.CallerIdentity, event: str, sequence: int, **body: Any) -> str:
        return json.dumps({"event": event, "sequenceNumber": sequence, "streamId": who.stream_id,
                           **body})

    def media(self, who: base.CallerIdentity, payload: bytes, *, sequence: int, chunk: int) -> str:
        return self._event(who, "media", sequence, media={
            "track": "inbound", "timestamp": str(int(time.time() * 1000)), "chunk": chunk,
            "payload": base64.b64encode(payload).decode("ascii"),
        })

    def dtmf(self, who: base.CallerIdentity, digit: str, sequence: int) -> str:
        return self._event(who, "dtmf", sequence, dtmf={
            "track": "inbound", "digit": digit, "timestamp": str(int(time.time() * 1000)),
        })

    def played(self, who: base.CallerIdentity, name: str, sequence: int) -> str:
        return self._event(who, "playedStream", sequence, name=name)

    def cleared(self, who: base.CallerIdentity, sequence: int) -> str:
        return self._event(who, "clearedAudio", sequence)

    def stop(self, who: base.CallerIdentity, sequence: int) -> None:
        return None  # Plivo sends no stop: the socket closes

    def heard(self, message: dict[str, Any]) -> base.Heard:
        event = message.get("event")
        if event == "playAudio":
            media = message.get("media") or {}
            return base.Heard("media", base64.b64decode(media.get("payload", "")), raw=message)
        if event == "checkpoint":
            return base.Heard("mark", name=str(message.get("name", "")), raw=message)
        if event == "clearAudio":
            return base.Heard("clear", raw=message)
        return base.Heard("other", raw=message)

