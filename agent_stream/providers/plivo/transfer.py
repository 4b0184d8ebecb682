"""The one-time URL Plivo fetches to transfer a call: Plivo's transfer API takes no inline
XML, only a URL, so this server answers the Dial itself.

The URL carries a random token (only its hash is stored, with the destination); it answers
once, for a few minutes, and only the XML of the destination it was made for. It needs no
session or API key (Plivo fetches it), so it serves nothing else: any other token, a second
fetch or a late one is a bare 404.
"""
from __future__ import annotations

import re
from typing import Final

from aiohttp import web

from ...keys import STORE
from ...openapi import undocumented
from ...security import SECRET_ROUTE_VARIABLE
from ..base import OneTimeTokens
from .client import dial_xml

PURPOSE: Final = "plivo-transfer"
# Plivo fetches the URL within seconds of the transfer request; this is slack, not a need.
TTL_SECONDS: Final = 600.0
ROUTE_NAME: Final = "plivo_transfer"
PATH_PREFIX: Final = "/api/v1/providers/plivo/transfer/"
# What `new_one_time_token` makes (URL-safe base64); anything else is not worth a lookup.
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,64}")


async def transfer_link(tokens: OneTimeTokens, public_url: str, destination: str) -> str:
    """A one-time URL of this server (as Plivo reaches it) answering the Dial to
    `destination`."""
    token = await tokens.create_one_time_token(PURPOSE, {"destination": destination}, TTL_SECONDS)
    return f"{public_url.rstrip('/')}{PATH_PREFIX}{token}"


@undocumented("a one-time URL Plivo fetches during a transfer, not the management API")
async def transfer_xml(request: web.Request) -> web.Response:
    """GET by Plivo, once: the Plivo XML that dials the destination the token was made for."""
    token = request.match_info[SECRET_ROUTE_VARIABLE]
    payload = None
    if _TOKEN_RE.fullmatch(token):
        payload = await request.app[STORE].use_one_time_token(PURPOSE, token)
    destination = payload.get("destination") if payload else None
    if not isinstance(destination, str) or not destination:
        return web.Response(status=404, text="not found")
    return web.Response(text=dial_xml(destination), content_type="application/xml")


def routes() -> list[web.RouteDef]:
    """GET only: a HEAD (a link checker, a proxy) must not use the token up."""
    return [
        web.get(f"{PATH_PREFIX}{{{SECRET_ROUTE_VARIABLE}}}", transfer_xml, name=ROUTE_NAME,
                allow_head=False),
    ]
