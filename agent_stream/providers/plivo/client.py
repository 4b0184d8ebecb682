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

from ..base import CallControl, ProviderApiError
from ..identifiers import api_url

ALREADY_OVER: Final = 404
LIVE: Final = {"status": "live"}

# Mints the one-time URL that answers the transfer's XML for a destination.
TransferLink = Callable[[str], Awaitable[str]]


def dial_xml(destination: str) -> str:
    """The Plivo XML that moves the caller to `destination`."""
    return f"<Response><Dial><Number>{escape(destination)}</Number></Dial></Response>"


class PlivoControl(CallControl):
    title = "Plivo"

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        *,
        auth_id: str,
        auth_token: str,
        call_id: str,
        timeout: float,
        transfer_link: TransferLink,
    ) -> None:
        super().__init__(http, timeout=timeout)
        self._url: URL = api_url(base_url, "v1", "Account", auth_id, "Call", call_id, trailing_slash=True)
        self._headers = {"Authorization": aiohttp.encode_basic_auth(auth_id, auth_token)}
        self._transfer_link = transfer_link

    def __repr__(self) -> str:
        return f"<PlivoControl {self._url.path}>"  # never the token

    async def validate(self) -> None:
        """200 from the live-call resource: the call is live on this account (Plivo answers
        404 for a call that is not, or not this account's)."""
        try:
            async with self._http.get(
                self._url, params=LIVE, headers=self._headers, timeout=self._timeout
            ) as response:
                status = response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.unreachable(exc) from None
        if status != 200:
            raise self.validation_failed(status)

    async def hangup(self) -> int:
        """204 when hung up."""
        async with self._http.delete(self._url, headers=self._headers, timeout=self._timeout) as response:
            return self._checked(response.status, "hangup")

    async def transfer(self, destination: str) -> int:
        """202 when Plivo will fetch the one-time URL and dial what it answers."""
        form = {"legs": "aleg", "aleg_url": await self._transfer_link(destination), "aleg_method": "GET"}
        async with self._http.post(
            self._url, data=form, headers=self._headers, timeout=self._timeout
        ) as response:
            return self._checked(response.status, "transfer")

    def _checked(self, status: int, action: str) -> int:
        if status >= 300 and status != ALREADY_OVER:
            raise ProviderApiError(self.title, action, status)
        return status
