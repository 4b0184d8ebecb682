"""Plivo's Call resource for one call, Basic auth with the auth id and token: validation
(the call is live on this account), hang-up (DELETE) and blind transfer. Plivo takes no
inline XML for a transfer, only a URL it fetches: a one-time URL of this server that
answers the Dial. Every Plivo resource URL ends with a slash; a 404 means the call is over.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final
from xml.sax.saxutils import escape

import aiohttp
from yarl import URL

from ..base import CallControl, ControlContext
from ..identifiers import api_url

LIVE: Final = {"status": "live"}

# Mints the one-time URL that answers the transfer's XML for a destination.
TransferLink = Callable[[str], Awaitable[str]]


def dial_xml(destination: str) -> str:
    """The Plivo XML that moves the caller to `destination`."""
    return f"<Response><Dial><Number>{escape(destination)}</Number></Dial></Response>"


class PlivoControl(CallControl):
    title = "Plivo"
    already_over = 404

    def __init__(self, call: ControlContext, *, transfer_link: TransferLink) -> None:
        auth_id = call.config.value("auth_id")
        auth = aiohttp.encode_basic_auth(auth_id, call.config.value("auth_token"))
        super().__init__(call, headers={"Authorization": auth})
        self._url: URL = api_url(
            call.api_base_url, "v1", "Account", auth_id, "Call", call.start.call_id, trailing_slash=True
        )
        self._transfer_link = transfer_link

    def __repr__(self) -> str:
        return f"<PlivoControl {self._url.path}>"  # never the token

    async def validate(self) -> None:
        """200 from the live-call resource: the call is live on this account (Plivo answers
        404 for a call that is not, or not this account's)."""
        await self.fetch_live_call(self._url, params=LIVE)

    async def hangup(self) -> int:
        """204 when hung up."""
        return await self.act("DELETE", self._url, "hangup")

    async def transfer(self, destination: str) -> int:
        """202 when Plivo will fetch the one-time URL and dial what it answers."""
        form = {"legs": "aleg", "aleg_url": await self._transfer_link(destination), "aleg_method": "GET"}
        return await self.act("POST", self._url, "transfer", data=form)
