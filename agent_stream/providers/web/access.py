"""Who may open a browser test call, and how the page proves it.

A stream socket cannot carry a CSRF token in a header, and a cookie alone would let any
site the admin visits open a call in their name. So the socket must come from this
server's own origin, carry the admin's signed-in session, and say in its first message a
one-time token the page minted for one agent a moment before (never in the URL, where
proxies log it). The token is good once, for a minute, for that agent and that user.
"""
from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Final, Protocol

from aiohttp import web
from yarl import URL

from ...errors import HandshakeError
from ...models import User
from ...security import SESSION_COOKIE, hash_session_token
from ...urls import public_url
from ..base import OneTimeTokens

PURPOSE: Final = "web_call"
# The page opens the socket right after minting; a minute is slack for a slow microphone
# permission prompt, not a need.
TTL_SECONDS: Final = 60.0
# Query parameters a token might be smuggled in: refused outright, never looked up.
URL_TOKEN_KEYS: Final = ("token", "call_token", "access_token")


class CallTokens(OneTimeTokens, Protocol):
    """What the handshake reads: sessions and one-time tokens (the store)."""

    async def use_one_time_token(self, purpose: str, token: str) -> dict[str, object] | None: ...

    async def session_user(self, token_hash: str) -> tuple[User, str] | None: ...


@dataclass(frozen=True)
class CallGrant:
    """A token redeemed: the call it opens and who opens it."""

    call_id: str
    user: User


async def mint(tokens: OneTimeTokens, *, agent_uuid: str, user_id: int) -> tuple[str, str]:
    """A one-time token for one call of `agent_uuid` by `user_id`: (token, the call's id)."""
    call_id = f"web-{uuidlib.uuid4()}"
    payload = {"agent_uuid": agent_uuid, "user_id": user_id, "call_id": call_id}
    return await tokens.create_one_time_token(PURPOSE, payload, TTL_SECONDS), call_id


def origin_of(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port made explicit, for comparing origins."""
    parsed = URL(url)
    return (parsed.scheme.lower(), (parsed.host or "").lower(), parsed.port)


def check_origin(request: web.Request) -> None:
    """The upgrade comes from a page of this server (as AGENT_STREAM_PUBLIC_URL or the
    proxy in front names it), or it is a 4400: another site's script must not dial."""
    origin = request.headers.get("Origin", "")
    if not origin:
        raise HandshakeError("browser call refused: the upgrade has no Origin")
    if origin == "null" or origin_of(origin) != origin_of(public_url(request)):
        raise HandshakeError("browser call refused: the page is not of this server's origin")


def refuse_url_token(request: web.Request) -> None:
    """A token in the URL would end up in access logs: never accepted, not even looked up."""
    if any(key in request.query for key in URL_TOKEN_KEYS):
        raise HandshakeError("browser call refused: a call token is never accepted in the URL")


async def session_user(request: web.Request, store: CallTokens) -> User:
    """The signed-in admin whose session cookie the upgrade carries, or a 4400."""
    cookie = request.cookies.get(SESSION_COOKIE)
    found = await store.session_user(hash_session_token(cookie)) if cookie else None
    if found is None:
        raise HandshakeError("browser call refused: not signed in (sign in to the admin again)")
    return found[0]


async def redeem(store: CallTokens, token: object, *, agent_uuid: str, user: User) -> CallGrant:
    """Use the start message's token up: it must be live, unused, and minted for this agent
    by this user; or a 4400 that says which."""
    if not isinstance(token, str) or not token or len(token) > 128:
        raise HandshakeError("malformed 'start' event: missing call token")
    payload = await store.use_one_time_token(PURPOSE, token)
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
