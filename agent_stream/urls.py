"""How providers and browsers reach this server: AGENT_STREAM_PUBLIC_URL when it is set,
else the request's own scheme and host as a proxy in front passes them on
(X-Forwarded-Proto, X-Forwarded-Host). Signature checks, stream URLs shown in the admin and
callback URLs handed to providers all use it."""
from __future__ import annotations

from aiohttp import web

from .keys import SETTINGS


def is_secure(request: web.Request) -> bool:
    """TLS at this process or at a proxy in front of it (X-Forwarded-Proto)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return (forwarded or request.scheme) in ("https", "wss")


def public_host(request: web.Request) -> str:
    """The host the client used, as a proxy passes it on (not what is no host name: bytes
    that are not UTF-8, which aiohttp reads as lone surrogates, or a control character)."""
    forwarded = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    return forwarded if forwarded.isprintable() and forwarded else request.host


def public_url(request: web.Request) -> str:
    """`https://host` (or `http://`): the configured public URL, else this request's."""
    configured = request.app[SETTINGS].public_url
    if configured:
        return configured.rstrip("/")
    return ("https" if is_secure(request) else "http") + "://" + public_host(request)


def websocket_url(url: str) -> str:
    """`url` as a WebSocket URL: wss:// for https:// (or wss://), ws:// otherwise."""
    scheme, _, rest = url.partition("://")
    return ("wss" if scheme in ("https", "wss") else "ws") + "://" + rest


def stream_base(request: web.Request) -> str:
    """`wss://host` behind TLS, `ws://host` otherwise: where providers should connect."""
    return websocket_url(public_url(request))
