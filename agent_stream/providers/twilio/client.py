"""Twilio's Call resource for one call: validation (the call is in progress on this
account), hang-up (`Status=completed`) and blind transfer (inline TwiML), Basic auth with
the account SID and auth token; a 404 means the call is already over."""
from __future__ import annotations

import aiohttp
from yarl import URL

from ...errors import HandshakeError
from ..base import CallControl, ControlContext
from ..identifiers import api_url
from ..twilio_style import dial_response


class TwilioControl(CallControl):
    title = "Twilio"
    already_over = 404

    def __init__(self, call: ControlContext) -> None:
        account_sid = call.config.value("account_sid")
        auth = aiohttp.encode_basic_auth(account_sid, call.config.value("auth_token"))
        super().__init__(call, headers={"Authorization": auth})
        self._url: URL = api_url(
            call.api_base_url, "2010-04-01", "Accounts", account_sid, "Calls", f"{call.start.call_id}.json"
        )

    def __repr__(self) -> str:
        return f"<TwilioControl {self._url.path}>"  # never the token

    async def validate(self) -> None:
        """200 with status in-progress: the call is live on this account."""
        body = await self.fetch_live_call(self._url, read_json=True)
        call_status = body.get("status") if isinstance(body, dict) else None
        if call_status != "in-progress":
            raise HandshakeError(f"session validation failed: the Twilio call is {call_status}")

    async def hangup(self) -> int:
        return await self.act("POST", self._url, "hangup", data={"Status": "completed"})

    async def transfer(self, destination: str) -> int:
        """Replace the call's TwiML with a dial to `destination`."""
        return await self.act("POST", self._url, "transfer", data={"Twiml": dial_response(destination)})
