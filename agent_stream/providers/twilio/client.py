"""Twilio's Call resource for one call: validation (the call is in progress on this
account), hang-up (`Status=completed`) and blind transfer (inline TwiML), Basic auth with
the account SID and auth token; a 404 means the call is already over."""
from __future__ import annotations

from typing import Final
from xml.sax.saxutils import escape

import aiohttp
from yarl import URL

from ...errors import HandshakeError
from ..base import CallControl, ProviderApiError
from ..identifiers import api_url

ALREADY_OVER: Final = 404


def transfer_twiml(destination: str) -> str:
    """The TwiML that replaces the call's document with a dial to `destination`."""
    return f"<Response><Dial>{escape(destination)}</Dial></Response>"


class TwilioControl(CallControl):
    title = "Twilio"

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        *,
        account_sid: str,
        auth_token: str,
        call_sid: str,
        timeout: float,
    ) -> None:
        super().__init__(http, timeout=timeout)
        self._url: URL = api_url(
            base_url, "2010-04-01", "Accounts", account_sid, "Calls", f"{call_sid}.json"
        )
        self._headers = {"Authorization": aiohttp.encode_basic_auth(account_sid, auth_token)}

    def __repr__(self) -> str:
        return f"<TwilioControl {self._url.path}>"  # never the token

    async def validate(self) -> None:
        """200 with status in-progress: the call is live on this account."""
        try:
            async with self._http.get(self._url, headers=self._headers, timeout=self._timeout) as response:
                status = response.status
                body = await response.json(content_type=None) if status == 200 else None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise self.unreachable(exc) from None
        if status != 200:
            raise self.validation_failed(status)
        call_status = body.get("status") if isinstance(body, dict) else None
        if call_status != "in-progress":
            raise HandshakeError(f"session validation failed: the Twilio call is {call_status}")

    async def hangup(self) -> int:
        return await self._update({"Status": "completed"}, "hangup")

    async def transfer(self, destination: str) -> int:
        return await self._update({"Twiml": transfer_twiml(destination)}, "transfer")

    async def _update(self, form: dict[str, str], action: str) -> int:
        async with self._http.post(
            self._url, data=form, headers=self._headers, timeout=self._timeout
        ) as response:
            if response.status >= 300 and response.status != ALREADY_OVER:
                raise ProviderApiError(self.title, action, response.status)
            return response.status
