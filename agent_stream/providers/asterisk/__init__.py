"""Asterisk (contract section 7): the WebSocket channel driver, chan_websocket (Asterisk
20.16, 21.11, 22.6, 23.0 and later; JSON control messages and MARK_MEDIA from 20.18, 22.8
and 23.2), dials this server from the dialplan, `Dial(WebSocket/NAME/c(ulaw)f(json)v(...))`,
asking for the `media` subprotocol. The stream names no account: the `v()` options (the
URL's query) are the call's custom parameters, `telephony_configuration` among them, else
the organization's only Asterisk configuration is used. ARI, at the configuration's own
URL, validates the channel and takes the transfer's channel variable; the hang-up is the
`HANGUP` command on the socket. The `ari` alias names the same provider."""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Final
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web

from ...audio import Codec
from ...models import TelephonyConfig
from ...urls import websocket_url
from .. import base
from .client import CALLER_PARAMETER, TRANSFER_VARIABLE, AsteriskControl
from .wire import (
    EVENT,
    FORMATS,
    JSON_FORM,
    PLAIN_FORM,
    AsteriskWire,
    parse_control,
    parse_start,
)

__all__ = ["PLAIN_FORM", "AsteriskCaller", "AsteriskProvider", "caller_channel", "parse_start"]

# The name of the websocket_client.conf entry the snippets dial.
CONNECTION_NAME: Final = "agent_stream"
# What a configuration's ARI URL may start with.
_SCHEMES: Final = ("http", "https")


def websocket_client_conf(stream_url: str, config: TelephonyConfig | None) -> str:
    """The websocket_client.conf entry that dials `stream_url` (placeholders, never the
    real media password)."""
    uri = websocket_url(stream_url)
    lines = [
        f"[{CONNECTION_NAME}]",
        "type = websocket_client",
        f"uri = {uri}",
        "protocols = media",
        "connection_type = per_call_config",
    ]
    if uri.startswith("wss://"):
        lines.append("tls_enabled = yes")
    if config is None or config.value("media_username"):
        user = config.value("media_username") if config else "MEDIA_USERNAME"
        lines += [f"username = {user}", "password = MEDIA_PASSWORD"]
    return "\n".join(lines)


def dialplan(config: TelephonyConfig | None) -> str:
    """extensions.conf: answer, stream to the agent, then dial the transfer's destination
    if the agent set one (the caller's channel variable, or the global variable named after
    the caller, cleared once read and at the hang-up, should the caller leave first),
    otherwise hang up."""
    selection = f",telephony_configuration={config.id}" if config else ""
    named = f"{TRANSFER_VARIABLE}_${{FILTER(0-9A-Za-z,${{UNIQUEID}})}}"
    return "\n".join([
        "[agent-stream]",
        "exten => _X.,1,Answer()",
        f" same => n,Dial(WebSocket/{CONNECTION_NAME}/c(ulaw)f(json)"
        f"v({CALLER_PARAMETER}=${{UNIQUEID}}{selection}))",
        f" same => n,Set(DESTINATION=${{{TRANSFER_VARIABLE}}})",
        ' same => n,GotoIf($["${DESTINATION}" != ""]?transfer)',
        f" same => n,Set(DESTINATION=${{GLOBAL({named})}})",
        f" same => n,Set(GLOBAL({named})=)",
        ' same => n,GotoIf($["${DESTINATION}" != ""]?transfer)',
        " same => n,Hangup()",
        " same => n(transfer),Dial(${DESTINATION})",
        " same => n,Hangup()",
        f"exten => h,1,Set(GLOBAL({named})=)",
    ])


class AsteriskProvider(base.Provider):
    name = "asterisk"
    title = "Asterisk"
    aliases: ClassVar[tuple[str, ...]] = ("ari",)
    api_url_field = "ari_url"
    account_field = None  # the stream names no account
    caller_codecs: ClassVar[Mapping[str, tuple[str, int]]] = FORMATS
    fields: ClassVar[tuple[base.ConfigField, ...]] = (
        base.ConfigField("ari_url", "ARI URL", max_length=300, placeholder="http://pbx.example.com:8088/ari",
                         help="Where this PBX's ARI answers (http.conf's server and the /ari prefix).",
                         missing="Enter the ARI URL, e.g. http://pbx.example.com:8088/ari."),
        base.ConfigField("ari_username", "ARI user", max_length=100,
                         help="An ari.conf user: it validates each call and sets the transfer's variable.",
                         missing="Enter the ARI user (a section of ari.conf)."),
        base.ConfigField("ari_password", "ARI password", secret=True, max_length=200,
                         help="That user's password.", missing="Enter the ARI user's password."),
        base.ConfigField("media_username", "Media username", required=False, max_length=100,
                         help="The username of websocket_client.conf: when given, streams without "
                              "these HTTP Basic credentials are refused."),
        base.ConfigField("media_password", "Media password", secret=True, required=False,
                         max_length=200, noun="media password",
                         help="The password of websocket_client.conf."),
    )

    def check_field(self, name: str, value: str) -> str:
        value = super().check_field(name, value)
        if name != "ari_url":
            return value
        parts = urlsplit(value)
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ValueError("The ARI URL is an http:// or https:// URL, e.g. http://pbx.example.com:8088/ari.")
        if parts.username is not None or parts.query or parts.fragment:
            raise ValueError("The ARI URL names no credentials, query or fragment: the user and "
                             "password have fields of their own.")
        return value.rstrip("/")

    def stand_in_fields(self, api_base_url: str) -> dict[str, str]:
        """A CLI test call's ARI is the loopback stand-in."""
        return {"ari_url": f"{api_base_url}/ari", "ari_username": "test-call"}

    async def read_start(self, given: base.HandshakeInput) -> base.CallStart:
        """MEDIA_START, in JSON or plain text; the URL's query holds the v() options."""
        return parse_start(await base.receive_message(given, EVENT), given.request.query)

    def check_upgrade(self, request: web.Request, config: TelephonyConfig) -> None:
        """With a media username configured, the upgrade must carry it and its password
        (HTTP Basic, as websocket_client.conf sends them): the stream URL is no secret."""
        user = config.value("media_username")
        if not user:
            return
        base.check_basic_credentials(
            request, user, config.value("media_password"),
            missing="missing HTTP Basic credentials (the configuration has a media username)",
            wrong="HTTP Basic credentials do not match the media username and password",
        )

    def wire(self, start: base.CallStart, *, log: base.LogAdapter) -> base.Wire:
        return AsteriskWire(start, log=log)

    def control(self, call: base.ControlContext) -> base.CallControl:
        return AsteriskControl(call)

    def webhook_log(
        self, request: web.Request, newer_form: bool, start: base.CallStart, config: TelephonyConfig
    ) -> dict[str, object]:
        return {"account": None, "channel": start.fields.get("channel"),
                "control_format": start.gathered.get("asterisk_control_format")}

    def snippets(self, stream_url: str, config: TelephonyConfig | None) -> list[base.Snippet]:
        return [
            base.Snippet("Stream URL (Asterisk's WebSocket channel dials it)", "text",
                         websocket_url(stream_url)),
            base.Snippet("websocket_client.conf (Asterisk 20.16, 21.11, 22.6, 23 or later)", "text",
                         websocket_client_conf(stream_url, config), label="configuration"),
            base.Snippet("extensions.conf: stream the call to the agent, then dial its transfer "
                         "(f(json) and marks need Asterisk 20.18, 22.8, 23.2 or later)", "text",
                         dialplan(config), label="dialplan"),
        ]

    def caller(self, codec: Codec, secrets: Mapping[str, str] | None) -> base.CallerSide:
        return AsteriskCaller(codec, secrets)


def caller_channel(channel_id: str) -> str:
    """The simulated caller's channel: the one whose dialplan dialed the WebSocket channel."""
    return f"{channel_id}-caller"


class AsteriskCaller(base.CallerSide):
    """Asterisk's end of a stream, as the README's dialplan makes it: the `v()` options in
    the URL (`caller`, the dialing channel, unless the identity's parameters name one),
    MEDIA_START in `form` (JSON unless set to plain text before the handshake), binary
    audio, DTMF_END, MEDIA_MARK_PROCESSED for each MARK_MEDIA. HANGUP is read as a
    hang-up; the socket is left for the server to close (as it does right after)."""

    subprotocols: ClassVar[tuple[str, ...]] = ("media",)

    def __init__(self, codec: Codec, secrets: Mapping[str, str] | None = None) -> None:
        super().__init__(codec, secrets)
        self.form = JSON_FORM
        self.format = next(name for name, found in FORMATS.items() if found == (codec.encoding, codec.rate))
        # 20 ms of the format, as Asterisk computes it
        self.optimal_frame_size = codec.bytes_per_second // 50

    def stream_url(self, url: str, call_id: str, custom_parameters: Mapping[str, str]) -> str:
        """The v() options as chan_websocket appends them: the README's dialplan passes the
        caller's channel; the identity's parameters come after it (and may replace it)."""
        parameters = {CALLER_PARAMETER: caller_channel(call_id), **custom_parameters}
        return f"{url}{'&' if '?' in url else '?'}{urlencode(parameters)}"

    def upgrade_headers(self, url: str) -> dict[str, str]:
        """websocket_client.conf's username and password, where configured."""
        user = self.secrets.get("media_username")
        if not user:
            return {}
        return {"Authorization": aiohttp.encode_basic_auth(user, self.secrets.get("media_password", ""))}

    def opening(self, who: base.CallerIdentity) -> list[str | bytes]:
        channel = f"WebSocket/{CONNECTION_NAME}-{who.call_id[-8:]}"
        if self.form == JSON_FORM:
            return [json.dumps({
                "event": EVENT, "connection_id": who.stream_id, "channel": channel,
                "channel_id": who.call_id, "format": self.format,
                "optimal_frame_size": self.optimal_frame_size, "ptime": 20,
                "channel_variables": {"CALLERID(num)": who.caller or ""},
            })]
        return [f"{EVENT} connection_id:{who.stream_id} channel:{channel} channel_id:{who.call_id}"
                f" format:{self.format} optimal_frame_size:{self.optimal_frame_size} ptime:20"]

    def media(self, who: base.CallerIdentity, payload: bytes, *, sequence: int, chunk: int) -> bytes:
        return payload

    def dtmf(self, who: base.CallerIdentity, digit: str, sequence: int) -> str:
        if self.form == JSON_FORM:
            return self._json("DTMF_END", channel_id=who.call_id, digit=digit)
        return f"DTMF_END digit:{digit} channel_id:{who.call_id}"

    def played(self, who: base.CallerIdentity, name: str, sequence: int) -> str:
        if self.form == JSON_FORM:
            return self._json("MEDIA_MARK_PROCESSED", channel_id=who.call_id, correlation_id=name)
        return f"MEDIA_MARK_PROCESSED {name}"

    def flow(self, who: base.CallerIdentity, event: str) -> str:
        """MEDIA_XOFF or MEDIA_XON, as Asterisk sends them when its queue fills and drains."""
        return self._json(event, channel_id=who.call_id) if self.form == JSON_FORM else event

    @staticmethod
    def _json(event: str, **fields: str) -> str:
        return json.dumps({"event": event, **fields})

    def stop(self, who: base.CallerIdentity, sequence: int) -> None:
        return None  # no stop event: the socket closes

    def read(self, data: str | bytes) -> base.Heard | None:
        if isinstance(data, bytes):
            return base.Heard("media", data, raw=data)
        parsed = parse_control(data)
        if parsed is None:
            return base.Heard("other", raw=data)
        name, fields = parsed
        raw: Any = fields if data.lstrip().startswith("{") else data
        if name == "MARK_MEDIA":
            mark = fields.get("correlation_id", fields.get("argument", ""))
            return base.Heard("mark", name=str(mark), raw=raw)
        if name == "FLUSH_MEDIA":
            return base.Heard("clear", raw=raw)
        if name == "HANGUP":
            return base.Heard("hangup", raw=raw)
        return base.Heard("other", raw=raw)

    def heard(self, message: dict[str, Any]) -> base.Heard:
        return self.read(json.dumps(message)) or base.Heard("other", raw=message)

