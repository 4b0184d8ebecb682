"""Exotel's Voicebot applet (contract section 7): an App Bazaar flow streams the call to
`wss://API_KEY:API_TOKEN@HOST/api/v1/agent-stream/exotel/AGENT_UUID?sample-rate=8000`,
Exotel's snake-case JSON framing carries 16-bit PCM at 8, 16 or 24 kHz (answered at the
same rate, 100 ms a message), `start.account_sid` (or a `telephony_configuration` URL
parameter) selects the configuration, the upgrade's HTTP Basic credentials must be its API
key and token, and the Call resource validates the call. Hanging up is closing the socket;
Exotel offers no transfer of a stream."""
from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, ClassVar, Final
from urllib.parse import quote

import aiohttp
from aiohttp import web

from ...audio import Codec
from ...models import TelephonyConfig
from .. import base
from ..identifiers import is_identifier
from ..twilio_style import TwilioStyleCaller, read_connected_start
from .client import NO_TRANSFER, ExotelControl
from .wire import BIT_RATE, RAW, ExotelWire, chunk_bytes, parse_start

__all__ = ["NO_TRANSFER", "ExotelProvider", "chunk_bytes", "parse_start"]

MISSING_CREDENTIALS: Final = "missing HTTP Basic credentials (the Voicebot URL's API_KEY:API_TOKEN@)"
WRONG_CREDENTIALS: Final = "HTTP Basic credentials do not match the configuration's API key and token"
# What the Settings page shows instead of the token: it is never rendered.
TOKEN_PLACEHOLDER: Final = "API_TOKEN"
KEY_PLACEHOLDER: Final = "API_KEY"


class ExotelProvider(base.Provider):
    name = "exotel"
    title = "Exotel"
    account_field = "account_sid"
    account_label = "account SID"
    default_api_base_url = "https://api.exotel.com"
    start_account_key = "account_sid"
    caller_codecs: ClassVar[Mapping[str, tuple[str, int]]] = {
        "l16-8000": ("l16", 8000), "l16-16000": ("l16", 16000), "l16-24000": ("l16", 24000),
    }
    fields: ClassVar[tuple[base.ConfigField, ...]] = (
        base.ConfigField("account_sid", "Account SID", max_length=64, placeholder="yourcompany1",
                         help="Exotel dashboard, API settings: the account SID (streams name it as "
                              "start.account_sid).",
                         missing="Enter the Exotel account SID."),
        base.ConfigField("api_key", "API key", max_length=200,
                         help="API settings: the API key. Exotel sends it with the token on every "
                              "stream, and they validate each call.",
                         missing="Enter the Exotel API key."),
        base.ConfigField("api_token", "API token", secret=True, max_length=200, noun="API token",
                         help="The API token next to the key (never put it anywhere but the "
                              "Voicebot applet's URL).",
                         missing="Paste the Exotel API token."),
    )

    def check_field(self, name: str, value: str) -> str:
        value = super().check_field(name, value)
        if name == "account_sid" and not is_identifier(value):
            raise ValueError("An Exotel account SID is letters, digits and . _ : - only.")
        if name == "api_key" and (":" in value or any(c.isspace() for c in value)):
            raise ValueError("An Exotel API key has no colon or space: paste it again.")
        return value

    def stand_in_fields(self, api_base_url: str) -> dict[str, str]:
        return {**super().stand_in_fields(api_base_url), "api_key": "test-call-api-key"}

    async def read_start(self, given: base.HandshakeInput) -> base.CallStart:
        return parse_start(await read_connected_start(given))

    def check_upgrade(self, request: web.Request, config: TelephonyConfig) -> None:
        """The upgrade's HTTP Basic credentials must be the configuration's API key and
        token: the stream URL alone is no secret. Never logged, compared in constant time."""
        base.check_basic_credentials(request, config.value("api_key"), config.value("api_token"),
                                     missing=MISSING_CREDENTIALS, wrong=WRONG_CREDENTIALS)

    def wire(self, start: base.CallStart, *, log: base.LogAdapter) -> base.Wire:
        return ExotelWire(start, log=log)

    def control(self, call: base.ControlContext) -> base.CallControl:
        return ExotelControl(call)

    def webhook_log(
        self, request: web.Request, newer_form: bool, start: base.CallStart, config: TelephonyConfig
    ) -> dict[str, object]:
        return {"account": start.account_id, "sample_rate": start.codec.rate}

    def snippets(self, stream_url: str, config: TelephonyConfig | None) -> list[base.Snippet]:
        """The Voicebot applet's URL as Exotel takes it: the API key filled in when known,
        the token always a placeholder (a page never shows a secret)."""
        wss = base.as_wss(stream_url)
        key = quote(config.value("api_key"), safe="") if config else ""
        scheme, _, rest = wss.partition("://")
        applet = f"{scheme}://{key or KEY_PLACEHOLDER}:{TOKEN_PLACEHOLDER}@{rest}?sample-rate=8000"
        if config is not None:
            applet += f"&{base.CONFIG_PARAMETER}={config.id}"
        return [
            base.Snippet("Stream URL (Exotel connects over wss://)", "text", wss),
            base.Snippet(
                f"The Voicebot applet's URL: replace {TOKEN_PLACEHOLDER} with the API token"
                f"{'' if key else f' and {KEY_PLACEHOLDER} with the API key'}. sample-rate may be "
                "8000, 16000 or 24000 (the agent answers at the same rate); "
                f"{base.CONFIG_PARAMETER}=ID is only needed when several configurations share "
                "the account SID (Exotel passes up to 3 URL parameters)",
                "text", applet, label="Voicebot URL",
            ),
        ]

    def caller(self, codec: Codec, secrets: Mapping[str, str] | None) -> base.CallerSide:
        return ExotelCaller(codec, secrets)


class ExotelCaller(TwilioStyleCaller):
    """Exotel's end of a stream: snake case, numbers as strings, the rate in the start's
    media format, and the API key and token as HTTP Basic credentials on the upgrade."""

    stream_key = "stream_sid"
    sequence_key = "sequence_number"

    def connected(self) -> dict[str, Any]:
        return {"event": "connected"}

    def start(self, who: base.CallerIdentity) -> dict[str, Any]:
        return {
            "event": "start", "sequence_number": "1", "stream_sid": who.stream_id,
            "start": {
                "stream_sid": who.stream_id, "call_sid": who.call_id, "account_sid": who.account_id,
                "from": who.caller, "to": who.called,
                "custom_parameters": dict(who.custom_parameters),
                "media_format": {"encoding": RAW, "sample_rate": str(self.codec.rate),
                                 "bit_rate": str(BIT_RATE)},
            },
        }

    def media(self, who: base.CallerIdentity, payload: bytes, *, sequence: int, chunk: int) -> str:
        return self._event(who, "media", {
            "chunk": str(chunk), "timestamp": str((chunk - 1) * 20),
            "payload": base64.b64encode(payload).decode("ascii"),
        }, sequence)

    def dtmf(self, who: base.CallerIdentity, digit: str, sequence: int) -> str:
        return self._event(who, "dtmf", {"digit": digit, "duration": "100"}, sequence)

    def stop(self, who: base.CallerIdentity, sequence: int) -> str:
        return self._event(who, "stop", {"call_sid": who.call_id, "account_sid": who.account_id,
                                         "reason": "callended"}, sequence)

    def upgrade_headers(self, url: str) -> dict[str, str]:
        key, token = self.secrets.get("api_key"), self.secrets.get("api_token")
        return {"Authorization": aiohttp.encode_basic_auth(key, token)} if key and token else {}
