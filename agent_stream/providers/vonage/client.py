"""The Vonage Voice API for one call: every request carries a fresh JWT (RS256) signed with
the application's private key (claims application_id, iat, exp, jti). Validation reads the
phone leg (`call_uuid`), hang-up and transfer modify it; 404 means the call is over."""
from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ...errors import HandshakeError
from ..base import CallControl, ControlContext
from ..identifiers import api_url

# How long one request's JWT is valid (Vonage allows up to a day; a request needs seconds).
TOKEN_SECONDS: Final = 300
LIVE_STATUSES: Final = frozenset({"started", "ringing", "answered"})
# Loaded keys kept, by the SHA-256 of their PEM: even without OpenSSL's RSA check (done when
# the key was saved), no live call's audio should wait for a key to load more than once.
MAX_CACHED_KEYS: Final = 256
_loaded_keys: dict[str, RSAPrivateKey] = {}


def load_private_key(pem: str, *, checked: bool = False) -> RSAPrivateKey:
    """The application's private key, or ValueError saying what is wrong with what was
    pasted. A key `checked` when it was saved skips OpenSSL's RSA check (~30 ms of CPU)."""
    try:
        key = load_pem_private_key(pem.strip().encode(), password=None,
                                   unsafe_skip_rsa_key_validation=checked)
    except (ValueError, TypeError):
        raise ValueError(
            "That is not a private key: paste the whole private.key file Vonage gave the"
            " application, from -----BEGIN PRIVATE KEY----- to -----END PRIVATE KEY-----."
        ) from None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("Vonage signs with RS256: the application's key must be an RSA key.")
    return key


async def cached_private_key(pem: str) -> RSAPrivateKey:
    """The application's key, loaded once (off the event loop) and then kept."""
    digest = hashlib.sha256(pem.encode()).hexdigest()
    key = _loaded_keys.get(digest)
    if key is None:
        key = await asyncio.to_thread(load_private_key, pem, checked=True)
        if len(_loaded_keys) >= MAX_CACHED_KEYS:
            _loaded_keys.pop(next(iter(_loaded_keys)))
        _loaded_keys[digest] = key
    return key


def application_token(application_id: str, key: RSAPrivateKey, *, now: float | None = None) -> str:
    """A JWT for Vonage's REST API (RS256), valid for TOKEN_SECONDS, never reused (jti)."""
    issued = int(time.time() if now is None else now)
    claims = {"application_id": application_id, "iat": issued, "exp": issued + TOKEN_SECONDS,
              "jti": str(uuid.uuid4())}
    return jwt.encode(claims, key, algorithm="RS256")


def destination_endpoint(destination: str) -> dict[str, str]:
    """Where a transfer connects: a SIP URI as a sip endpoint, anything else as a phone
    number in E.164 without the + (as Vonage writes numbers)."""
    if destination.startswith(("sip:", "sips:")):
        return {"type": "sip", "uri": destination}
    return {"type": "phone", "number": destination.removeprefix("+")}


class VonageControl(CallControl):
    title = "Vonage"
    already_over = 404

    def __init__(self, call: ControlContext) -> None:
        super().__init__(call, headers={})
        self._application_id = call.config.value("application_id")
        self._pem = call.config.value("private_key")
        self._url = api_url(call.api_base_url, "v1", "calls", call.start.call_id)

    def __repr__(self) -> str:
        return f"<VonageControl {self._url.path}>"  # never the key

    async def _sign(self) -> None:
        """A fresh JWT on the next request (the key was checked when it was saved)."""
        key = await cached_private_key(self._pem)
        self._headers["Authorization"] = f"Bearer {application_token(self._application_id, key)}"

    async def validate(self) -> None:
        """The phone leg exists and is live (started, ringing or answered)."""
        try:
            await self._sign()
        except ValueError:
            raise HandshakeError(
                "the Vonage configuration's private key cannot be read: paste it again"
            ) from None
        call: Any = await self.fetch_live_call(self._url, read_json=True)
        status = call.get("status") if isinstance(call, dict) else None
        if status not in LIVE_STATUSES:
            raise HandshakeError(f"session validation failed: the Vonage call is {str(status)[:20]}")

    async def hangup(self) -> int:
        """204 when hung up."""
        await self._sign()
        return await self.act("PUT", self._url, "hangup", json={"action": "hangup"})

    async def transfer(self, destination: str) -> int:
        """The phone leg moves to an NCCO that connects it to `destination`."""
        await self._sign()
        ncco = [{"action": "connect", "endpoint": [destination_endpoint(destination)]}]
        body = {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}}
        return await self.act("PUT", self._url, "transfer", json=body)
