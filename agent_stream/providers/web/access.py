"""Who may open a browser test call: a socket from this server's own origin, carrying the
admin's signed-in session, whose first message names a call token (call_tokens.py) minted
for this agent by that user. Any of them missing is a 4400 that says which."""
from __future__ import annotations

from typing import Final, Protocol

from aiohttp import web
from yarl import URL

from ...errors import HandshakeError
from ...models import User
from ...security import SESSION_COOKIE, hash_session_token
from ...urls import public_url

# Query parameters a token might be smuggled in: refused outright, never looked up.
URL_TOKEN_KEYS: Final = ("token", "call_token", "access_token")


class Sessions(Protocol):
    """Where sign-in sessions live (the store)."""

    async def session_user(self, token_hash: str) -> tuple[User, str] | None: ...


def origin_of(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) of a URL, the port made explicit, for comparing origins; None
    for what is no URL (a bad port or IPv6 address, bytes that are not UTF-8)."""
    try:
        parsed = URL(url)
        return (parsed.scheme.lower(), (parsed.host or "").lower(), parsed.port)
    except ValueError:  # UnicodeError included
        return None


def check_origin(request: web.Request) -> None:
    """The upgrade comes from a page of this server (as AGENT_STREAM_PUBLIC_URL or the
    proxy in front names it), or it is a 4400: another site's script must not dial."""
    origin = request.headers.get("Origin", "")
    if not origin:
        raise HandshakeError("browser call refused: the upgrade has no Origin")
    given = origin_of(origin) if origin != "null" else None
    if given is None or given != origin_of(public_url(request)):
        raise HandshakeError("browser call refused: the page is not of this server's origin")


def refuse_url_token(request: web.Request) -> None:
    """A token in the URL would end up in access logs: never accepted, not even looked up."""
    if any(key in request.query for key in URL_TOKEN_KEYS):
        raise HandshakeError("browser call refused: a call token is never accepted in the URL")


async def session_user(request: web.Request, sessions: Sessions) -> User:
    """The signed-in admin whose session cookie the upgrade carries, or a 4400."""
    cookie = request.cookies.get(SESSION_COOKIE)
    found = await sessions.session_user(hash_session_token(cookie)) if cookie else None
    if found is None:
        raise HandshakeError("browser call refused: not signed in (sign in to the admin again)")
    return found[0]
