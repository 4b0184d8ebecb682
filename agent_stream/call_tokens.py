"""The one-time token of a browser test call: minted by the admin's call panel (and the CLI
test call) for one call of one agent by one user, redeemed by the `web` provider's
handshake. A stream socket cannot carry a CSRF token in a header, and a cookie alone
would let any site the admin visits open a call in their name; so the page says this
token in its first message (never in the URL, where proxies log it). Good once, for a
minute; only its hash is stored (the store's one-time tokens)."""
from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Final, Protocol

from .errors import HandshakeError
from .models import User

PURPOSE: Final = "web_call"
# The page opens the socket right after minting; a minute is slack for a slow network,
# not a need (the microphone prompt comes before the token).
TTL_SECONDS: Final = 60.0
MAX_TOKEN_LENGTH: Final = 128


class CallTokens(Protocol):
    """Where one-time tokens live (the store)."""

    async def create_one_time_token(
        self, purpose: str, payload: dict[str, Any], ttl_seconds: float
    ) -> str: ...

    async def use_one_time_token(self, purpose: str, token: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class CallGrant:
    """A token redeemed: the call it opens and who opens it."""

    call_id: str
    user: User


async def mint(tokens: CallTokens, *, agent_uuid: str, user_id: int) -> tuple[str, str]:
    """A token for one call of `agent_uuid` by `user_id`: (the token, the call's id)."""
    call_id = f"web-{uuidlib.uuid4()}"
    payload = {"agent_uuid": agent_uuid, "user_id": user_id, "call_id": call_id}
    return await tokens.create_one_time_token(PURPOSE, payload, TTL_SECONDS), call_id


async def redeem(tokens: CallTokens, token: object, *, agent_uuid: str, user: User) -> CallGrant:
    """Use the start message's token up: it must be live, unused, and minted for this agent
    by this user; or a 4400 that says which."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise HandshakeError("malformed 'start' event: missing call token")
    payload = await tokens.use_one_time_token(PURPOSE, token)
    if payload is None:
        raise HandshakeError("browser call refused: the call token is unknown, used or expired")
    if payload.get("agent_uuid") != agent_uuid:
        raise HandshakeError("browser call refused: the call token is for another agent")
    if payload.get("user_id") != user.id:
        raise HandshakeError("browser call refused: the call token is another user's")
    call_id = payload.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise HandshakeError("browser call refused: the call token names no call")
    return CallGrant(call_id, user)
