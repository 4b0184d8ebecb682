"""Twilio Media Streams (contract section 7): `<Connect><Stream>` in TwiML, Twilio's JSON
framing with mu-law at 8 kHz, `start.accountSid` selecting the configuration, the upgrade
signed with `X-Twilio-Signature`, the Call resource of the REST API for validation,
hang-up and transfer."""
from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar, Final
from xml.sax.saxutils import quoteattr

from aiohttp import web

from ...audio import Codec
from ...errors import HandshakeError
from ...models import TelephonyConfig
from ...security import same_secret
from ...urls import public_url
from .. import base
from ..twilio_style import (
    MULAW_FORMAT,
    TwilioStyleCaller,
    TwilioStyleWire,
    custom_parameters,
    mulaw_codec,
    read_connected_start,
)
from .client import TwilioControl

SIGNATURE_HEADER: Final = "X-Twilio-Signature"


def signature(auth_token: str, url: str) -> str:
    """What Twilio sends as X-Twilio-Signature for a request to `url` without parameters:
    base64 of HMAC-SHA1 keyed with the account's auth token."""
    digest = hmac.new(auth_token.encode(), url.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signed_url(request: web.Request) -> str:
    """The stream URL as Twilio requested it: wss:// + the public host + the path (Twilio
    only speaks wss; TLS usually ends at a proxy in front of us)."""
    return base.as_wss(public_url(request)) + request.raw_path


def parse_start(message: dict[str, Any]) -> base.CallStart:
    """Twilio's start event: accountSid, callSid and streamSid, custom parameters."""
    start = base.start_object(message)
    stream_sid = base.identifier(start.get("streamSid") or message.get("streamSid"), "streamSid")
    call_sid = base.identifier(start.get("callSid"), "callSid")
    account_sid = base.identifier(start.get("accountSid"), "accountSid")
    parameters = custom_parameters(start.get("customParameters"))
    return base.call_start(
        "twilio", start, call_id=call_sid, stream_id=stream_sid, account_id=account_sid,
        codec=mulaw_codec(start), custom_parameters=parameters,
        # Twilio's start names neither number: a TwiML <Parameter> may
        numbers={**start, **{k: v for k, v in parameters.items() if v}},
    )


class TwilioProvider(base.Provider):
    name = "twilio"
    title = "Twilio"
    account_field = "account_sid"
    default_api_base_url = "https://api.twilio.com"
    stand_in_account = "AC" + "0" * 32
    start_account_key = "accountSid"
    fields: ClassVar[tuple[base.ConfigField, ...]] = (
        base.ConfigField("account_sid", "Account SID", placeholder="AC…", max_length=34,
                         help="Console, Account info: the SID that starts with AC.",
                         missing="Enter the account SID (AC…).", pattern="AC[0-9a-fA-F]{32}",
                         pattern_message="An account SID is AC followed by 32 hexadecimal characters."),
        base.ConfigField("auth_token", "Auth token", secret=True, max_length=200,
                         help="The account's auth token: it signs every stream Twilio opens.",
                         missing="Paste the account's auth token."),
    )

    async def read_start(self, given: base.HandshakeInput) -> base.CallStart:
        return parse_start(await read_connected_start(given))

    def check_upgrade(self, request: web.Request, config: TelephonyConfig) -> None:
        """The upgrade must carry Twilio's signature of the stream URL with this account's
        auth token: anyone else can know the URL."""
        given = request.headers.get(SIGNATURE_HEADER)
        if not given:
            raise HandshakeError(f"missing {SIGNATURE_HEADER}")
        expected = signature(config.value("auth_token"), signed_url(request))
        if not same_secret(given, expected):
            raise HandshakeError(f"{SIGNATURE_HEADER} does not match the stream URL and auth token")

    def wire(self, start: base.CallStart, *, log: base.LogAdapter) -> base.Wire:
        return TwilioStyleWire(start, log=log, stream_key="streamSid")

    def control(self, call: base.ControlContext) -> base.CallControl:
        return TwilioControl(call)

    def snippets(self, stream_url: str, config: TelephonyConfig | None) -> list[base.Snippet]:
        wss = base.as_wss(stream_url)
        parameter = (f'<Parameter name="{base.CONFIG_PARAMETER}" value={quoteattr(str(config.id))}/>'
                     if config else "")
        twiml = (f"<Response><Connect><Stream url={quoteattr(wss)}>{parameter}</Stream>"
                 "</Connect><Hangup/></Response>")
        return [
            base.Snippet("Stream URL (Twilio connects over wss:// only)", "text", wss),
            base.Snippet("What your number's TwiML answers", "xml", twiml, label="TwiML"),
        ]

    def caller(self, codec: Codec, secrets: Mapping[str, str] | None) -> base.CallerSide:
        return TwilioCaller(codec, secrets)


class TwilioCaller(TwilioStyleCaller):
    """Twilio's end of a stream: its start event, and the signature on the upgrade."""

    def start(self, who: base.CallerIdentity) -> dict[str, Any]:
        return {
            "event": "start", "sequenceNumber": "1", "streamSid": who.stream_id,
            "start": {
                "accountSid": who.account_id, "streamSid": who.stream_id, "callSid": who.call_id,
                "tracks": ["inbound"], "customParameters": dict(who.custom_parameters),
                "mediaFormat": MULAW_FORMAT,
            },
        }

    def upgrade_headers(self, url: str) -> dict[str, str]:
        token = self.secrets.get("auth_token")
        if not token:
            return {}
        return {SIGNATURE_HEADER: signature(token, base.as_wss(url))}
