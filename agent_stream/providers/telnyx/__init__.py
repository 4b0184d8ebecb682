"""Telnyx media streaming (contract section 7), from TeXML `<Connect><Stream>` or Call
Control's `stream_url`: Twilio-like JSON framing with a top-level snake-case `stream_id`,
the payload in the codec the start announces (PCMU or PCMA at 8 kHz), `start.user_id`
selecting the configuration, an optional stream auth token on the upgrade, and Call
Control's REST API for validation, hang-up and transfer."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Final
from xml.sax.saxutils import quoteattr

from aiohttp import web

from ...audio import Codec
from ...errors import HandshakeError
from ...models import TelephonyConfig
from ...security import same_secret
from .. import base
from ..identifiers import is_identifier
from ..twilio_style import (
    TwilioStyleCaller,
    TwilioStyleWire,
    custom_parameters,
    read_connected_start,
)
from .client import TelnyxControl

__all__ = ["AUTH_HEADER", "TelnyxProvider", "parse_start"]

SAMPLE_RATE: Final = 8000
AUTH_HEADER: Final = "x-telnyx-streaming-auth-token"
# What start.media_format.encoding may say, and the codec it means. Older Telnyx examples
# wrote mu-law as "audio/x-mulaw"; the current documentation says "PCMU".
ENCODINGS: Final = {"PCMU": "ulaw", "audio/x-mulaw": "ulaw", "PCMA": "alaw"}
# Our codec's encoding to Telnyx's name of it.
_TELNYX_NAMES: Final = {"ulaw": "PCMU", "alaw": "PCMA"}
# Start fields never kept on the run (in case Telnyx ever echoes the token there).
_UNLOGGED: Final = frozenset({"stream_auth_token"})


def media_codec(media_format: Any) -> Codec:
    """The codec `start.media_format` announces (PCMU, Telnyx's default, when it says none):
    PCMU or PCMA at 8 kHz, or the 4400 naming what it announced instead, since audio read
    in another codec than its own is static for the whole call."""
    if media_format is None:
        media_format = {}
    if not isinstance(media_format, dict):
        raise HandshakeError("malformed 'start' event: media_format must be an object")
    encoding = media_format.get("encoding", "PCMU")
    if encoding not in ENCODINGS:
        raise HandshakeError(f"unsupported media encoding {str(encoding)[:40]!r} (need PCMU or PCMA)")
    rate = media_format.get("sample_rate", SAMPLE_RATE)
    if str(rate) != str(SAMPLE_RATE):
        raise HandshakeError(f"unsupported sample rate {str(rate)[:20]} Hz (need {SAMPLE_RATE})")
    return Codec(ENCODINGS[encoding], SAMPLE_RATE, internal_rate=base.INTERNAL_RATE)


def start_parameters(value: Any) -> dict[str, str]:
    """`start.custom_parameters`: an object, as the stream documents it, or the list of
    name/value pairs Call Control takes them as."""
    if isinstance(value, list):
        value = {
            item["name"]: item.get("value", "")
            for item in value
            if isinstance(item, dict) and isinstance(item.get("name"), str)
        }
    return custom_parameters(value)


def parse_start(message: dict[str, Any]) -> base.CallStart:
    """Telnyx's start event: the top-level stream_id, the call control id, the user id, the
    custom parameters and the media format."""
    start = base.start_object(message)
    stream_id = base.identifier(message.get("stream_id"), "stream_id")
    call_control_id = base.identifier(start.get("call_control_id"), "call_control_id")
    user_id = base.text_field(start, "user_id")
    if user_id is not None:
        user_id = base.identifier(user_id, "user_id")
    return base.call_start(
        "telnyx", start, call_id=call_control_id, stream_id=stream_id, account_id=user_id,
        codec=media_codec(start.get("media_format")),
        custom_parameters=start_parameters(start.get("custom_parameters")),
        fields={k: v for k, v in start.items() if k not in _UNLOGGED},
    )


class TelnyxProvider(base.Provider):
    name = "telnyx"
    title = "Telnyx"
    account_field = "account_id"
    account_label = "user id"
    default_api_base_url = "https://api.telnyx.com"
    stand_in_account = "00000000-0000-4000-8000-000000000000"
    start_account_key = "user_id"
    # Our names or Telnyx's.
    caller_codecs: ClassVar[Mapping[str, tuple[str, int]]] = {
        "ulaw": ("ulaw", SAMPLE_RATE), "PCMU": ("ulaw", SAMPLE_RATE),
        "alaw": ("alaw", SAMPLE_RATE), "PCMA": ("alaw", SAMPLE_RATE),
    }
    fields: ClassVar[tuple[base.ConfigField, ...]] = (
        base.ConfigField("api_key", "API key", secret=True, max_length=400, placeholder="KEY…",
                         help="Mission Control, API keys: it validates each call, hangs up and transfers.",
                         missing="Paste a Telnyx API key (KEY…)."),
        base.ConfigField("account_id", "User id", required=False, max_length=64,
                         placeholder="xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
                         help="The user id Telnyx streams carry (start.user_id). Leave it empty when "
                              "this is your only Telnyx configuration."),
        base.ConfigField("stream_auth_token", "Stream auth token", secret=True, required=False,
                         max_length=4000, noun="stream auth token",
                         help="The stream_auth_token your Call Control requests set: when given, "
                              "streams without it are refused."),
    )

    def check_field(self, name: str, value: str) -> str:
        value = super().check_field(name, value)
        if name == "account_id":
            if not is_identifier(value):
                raise ValueError("A Telnyx user id is letters, digits and dashes (a UUID).")
            return value.lower()
        return value

    def checked_account(self, account_id: str) -> str:
        return super().checked_account(account_id).lower()

    async def read_start(self, given: base.HandshakeInput) -> base.CallStart:
        return parse_start(await read_connected_start(given))

    def check_upgrade(self, request: web.Request, config: TelephonyConfig) -> None:
        """With a stream auth token configured, the upgrade must carry it: the stream URL
        alone is no secret."""
        expected = config.value("stream_auth_token")
        if not expected:
            return
        given = request.headers.get(AUTH_HEADER)
        if not given:
            raise HandshakeError(f"missing {AUTH_HEADER}")
        if not same_secret(given, expected):
            raise HandshakeError(f"{AUTH_HEADER} does not match the configured stream auth token")

    def wire(self, start: base.CallStart, *, log: base.LogAdapter) -> base.Wire:
        return TwilioStyleWire(start, log=log, stream_key=None)

    def control(self, call: base.ControlContext) -> base.CallControl:
        return TelnyxControl(call)

    def webhook_log(
        self, request: web.Request, newer_form: bool, start: base.CallStart, config: TelephonyConfig
    ) -> dict[str, object]:
        return {"account": start.account_id, "encoding": _TELNYX_NAMES[start.codec.encoding]}

    def snippets(self, stream_url: str, config: TelephonyConfig | None) -> list[base.Snippet]:
        """TeXML and Call Control, both bidirectional in RTP (the default, mp3, never plays
        the agent to the caller), with the stream's codec pinned to the one played back."""
        wss = base.as_wss(stream_url)
        texml = (f'<Response><Connect><Stream url={quoteattr(wss)} bidirectionalMode="rtp" '
                 'bidirectionalCodec="PCMU" codec="PCMU"/></Connect></Response>')
        parameters: dict[str, Any] = {
            "stream_url": wss,
            "stream_track": "inbound_track",
            "stream_codec": "PCMU",
            "stream_bidirectional_mode": "rtp",
            "stream_bidirectional_codec": "PCMU",
        }
        if config is not None:
            parameters["custom_parameters"] = [{"name": base.CONFIG_PARAMETER, "value": str(config.id)}]
        return [
            base.Snippet("Stream URL (Telnyx connects over wss:// only)", "text", wss),
            base.Snippet("What your TeXML application answers", "xml", texml, label="TeXML"),
            base.Snippet("Or, with Call Control, the parameters of answer or streaming_start", "json",
                         json.dumps(parameters, indent=2), label="JSON"),
        ]

    def caller(self, codec: Codec, secrets: Mapping[str, str] | None) -> base.CallerSide:
        return TelnyxCaller(codec, secrets)


class TelnyxCaller(TwilioStyleCaller):
    """Telnyx's end of a stream: snake case, the stream id beside each event rather than
    in it, the codec named PCMU or PCMA, and the stream auth token on the upgrade."""

    stream_key = "stream_id"
    sequence_key = "sequence_number"

    def connected(self) -> dict[str, Any]:
        return {"event": "connected", "version": "1.0.0"}

    def start(self, who: base.CallerIdentity) -> dict[str, Any]:
        return {
            "event": "start", "sequence_number": "1", "stream_id": who.stream_id,
            "start": {
                "user_id": who.account_id, "call_control_id": who.call_id,
                "from": who.caller, "to": who.called,
                "custom_parameters": dict(who.custom_parameters),
                "media_format": {"encoding": _TELNYX_NAMES[self.codec.encoding],
                                 "sample_rate": SAMPLE_RATE, "channels": 1},
            },
        }

    def stop(self, who: base.CallerIdentity, sequence: int) -> str:
        return self._event(who, "stop", {"user_id": who.account_id,
                                         "call_control_id": who.call_id}, sequence)

    def upgrade_headers(self, url: str) -> dict[str, str]:
        token = self.secrets.get("stream_auth_token")
        return {AUTH_HEADER: token} if token else {}
