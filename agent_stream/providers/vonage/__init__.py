"""Vonage Voice API (contract section 7): an NCCO `connect` to a `websocket` endpoint,
binary 16-bit PCM at 8, 16 or 24 kHz in 20 ms frames, the NCCO `headers` carrying the
phone leg's `call_uuid` (and `telephony_configuration`, where an organization has several
applications), the upgrade's bearer JWT (its `application_id` selects the configuration;
with a signature secret configured it must verify), the Voice API with an RS256 JWT of
the application's private key for validation, hang-up and transfer."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ...audio import Codec
from ...errors import HandshakeError
from ...models import TelephonyConfig
from ...security import same_secret
from .. import base
from .client import VonageControl, load_private_key
from .wire import CONNECTED, VonageWire, parse_connected

__all__ = ["VonageProvider", "parse_connected"]

UUID_PATTERN: Final = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# What the upgrade's JWT may be off by, in seconds (clocks of two hosts).
LEEWAY_SECONDS: Final = 60
# How old (by its `iat`) the upgrade's JWT may be: Vonage signs each upgrade as it makes it,
# so an older one is a replay, whatever `exp` it carries (or none).
MAX_TOKEN_AGE_SECONDS: Final = 300


def bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def claimed_application(request: web.Request) -> str | None:
    """The `application_id` the upgrade's JWT claims, read without verifying (it only says
    which configuration to verify it with; check_upgrade does that where one can)."""
    token = bearer(request)
    if token is None:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, UnicodeError):  # UnicodeError: bytes that are not UTF-8
        return None
    application = claims.get("application_id") if isinstance(claims, dict) else None
    return application if isinstance(application, str) and application else None


class VonageProvider(base.Provider):
    name = "vonage"
    title = "Vonage"
    account_field = "application_id"
    account_label = "application"
    start_account_key = "application_id claim"
    default_api_base_url = "https://api.nexmo.com"
    stand_in_account = "00000000-0000-4000-8000-000000000000"
    live_call_answer: ClassVar[Mapping[str, Any]] = {"status": "answered"}
    caller_codecs: ClassVar[Mapping[str, tuple[str, int]]] = {
        "l16": ("l16", 16000), "l16-8000": ("l16", 8000), "l16-24000": ("l16", 24000),
    }
    fields: ClassVar[tuple[base.ConfigField, ...]] = (
        base.ConfigField("application_id", "Application ID", placeholder="aaaaaaaa-bbbb-…",
                         max_length=36,
                         help="Dashboard, Applications: the ID of the Voice application whose answer"
                              " URL returns the NCCO.",
                         missing="Enter the Vonage application ID.", pattern=UUID_PATTERN,
                         pattern_message="An application ID is a UUID (8-4-4-4-12 hexadecimal)."),
        base.ConfigField("private_key", "Private key", secret=True, multiline=True, max_length=10_000,
                         hint_shown=False, noun="private key",
                         help="The application's private.key (PEM): it signs the JWTs of the Voice API"
                              " that validate, hang up and transfer calls.",
                         missing="Paste the application's private key (PEM)."),
        base.ConfigField("signature_secret", "Signature secret", secret=True, required=False,
                         max_length=200,
                         help="Optional. Settings, Signature secret: with it, every stream must come"
                              ' with a JWT Vonage signed (NCCO "authorization": {"type": "vonage"}).'),
    )

    def check_field(self, name: str, value: str) -> str:
        value = super().check_field(name, value)
        if name == "private_key":
            load_private_key(value)
            return value + "\n"
        return value.lower() if name == "application_id" else value

    def checked_account(self, account_id: str) -> str:
        return base.identifier(account_id.strip().lower(), self.start_account_key)

    async def read_start(self, given: base.HandshakeInput) -> base.CallStart:
        message = await base.receive_event(given, CONNECTED)
        return parse_connected(message, application_id=claimed_application(given.request))

    def check_upgrade(self, request: web.Request, config: TelephonyConfig) -> None:
        """With a signature secret, the upgrade's JWT must verify with it (HS256) and claim
        this application, if it names one."""
        secret = config.value("signature_secret")
        if not secret:
            return
        token = bearer(request)
        if token is None:
            raise HandshakeError("missing Vonage signature (Authorization: Bearer JWT)")
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], leeway=LEEWAY_SECONDS,
                                options={"require": ["iat"]})
        except (jwt.PyJWTError, UnicodeError):  # UnicodeError: bytes that are not UTF-8
            raise HandshakeError("Vonage signature does not verify with the signature secret") from None
        issued = claims.get("iat")
        too_old = time.time() - MAX_TOKEN_AGE_SECONDS - LEEWAY_SECONDS
        if not isinstance(issued, (int, float)) or issued < too_old:
            raise HandshakeError("Vonage signature is too old (a replayed upgrade?)")
        claimed = claims.get("application_id")
        if claimed is not None and not same_secret(
            str(claimed).lower(), config.value("application_id").lower()
        ):
            raise HandshakeError("Vonage signature is for another application")

    def wire(self, start: base.CallStart, *, log: base.LogAdapter) -> base.Wire:
        return VonageWire(start, log=log)

    def control(self, call: base.ControlContext) -> base.CallControl:
        return VonageControl(call)

    def webhook_log(
        self, request: web.Request, newer_form: bool, start: base.CallStart, config: TelephonyConfig
    ) -> dict[str, object]:
        return {"application": start.account_id, "signed": bearer(request) is not None}

    def snippets(self, stream_url: str, config: TelephonyConfig | None) -> list[base.Snippet]:
        headers: dict[str, str] = {"call_uuid": "<the answer webhook's uuid>"}
        if config:
            headers[base.CONFIG_PARAMETER] = str(config.id)
        endpoint: dict[str, Any] = {
            "type": "websocket", "uri": base.as_wss(stream_url),
            "content-type": "audio/l16;rate=16000", "headers": headers,
        }
        if config and config.value("signature_secret"):
            endpoint["authorization"] = {"type": "vonage"}
        ncco = [{"action": "connect", "endpoint": [endpoint]}]
        return [
            base.Snippet("Stream URL (Vonage connects over wss://)", "text", base.as_wss(stream_url)),
            base.Snippet("What your application's answer URL returns (set call_uuid to the uuid"
                         " of the answer request: hang-up and transfer act on that leg)", "json",
                         json.dumps(ncco, indent=2), label="NCCO"),
        ]

    def stand_in_secrets(self) -> dict[str, str]:
        """A key made for this test call only (the loopback API accepts any JWT)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return {"private_key": pem.decode()}

    def caller(self, codec: Codec, secrets: Mapping[str, str] | None) -> base.CallerSide:
        return VonageCaller(codec, secrets)


class VonageCaller(base.CallerSide):
    """Vonage's end of a stream: the connected message with the NCCO headers, 20 ms binary
    frames, DTMF and notify as text, a JWT on the upgrade; no stop (the socket closes)."""

    def opening(self, who: base.CallerIdentity) -> list[str | bytes]:
        message: dict[str, Any] = {
            "event": CONNECTED, "content-type": f"audio/l16;rate={self.codec.rate}",
            "call_uuid": who.call_id, **who.custom_parameters,
        }
        if who.caller:
            message["from"] = who.caller
        if who.called:
            message["to"] = who.called
        return [json.dumps(message)]

    def media(self, who: base.CallerIdentity, payload: bytes, *, sequence: int, chunk: int) -> bytes:
        return payload

    def dtmf(self, who: base.CallerIdentity, digit: str, sequence: int) -> str:
        return json.dumps({"event": "websocket:dtmf", "digit": digit, "duration": 260})

    def played(self, who: base.CallerIdentity, name: str, sequence: int) -> str:
        return json.dumps({"event": "websocket:notify", "payload": {"mark": name}})

    def cleared(self, who: base.CallerIdentity, sequence: int) -> str:
        return json.dumps({"event": "websocket:cleared"})

    def stop(self, who: base.CallerIdentity, sequence: int) -> None:
        return None  # Vonage sends no stop: the socket closes

    def heard(self, message: dict[str, Any]) -> base.Heard:
        action = message.get("action")
        if action == "notify":
            payload = message.get("payload") or {}
            return base.Heard("mark", name=str(payload.get("mark", "")), raw=message)
        if action == "clear":
            return base.Heard("clear", raw=message)
        return base.Heard("other", raw=message)

    def heard_binary(self, data: bytes) -> base.Heard:
        return base.Heard("media", data, raw=data)

    def upgrade_headers(self, url: str) -> dict[str, str]:
        """Vonage signs the upgrade with the account's signature secret (HS256) when the
        NCCO asks for `"authorization": {"type": "vonage"}`."""
        secret = self.secrets.get("signature_secret")
        if not secret:
            return {}
        issued = int(time.time())
        claims: dict[str, Any] = {"iss": "Vonage", "iat": issued, "exp": issued + 300,
                                  "jti": str(uuid.uuid4())}
        if self.secrets.get("application_id"):
            claims["application_id"] = self.secrets["application_id"]
        return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}
