"""Exotel's Call resource for one call, Basic auth with the API key and token: validation
(the call exists on this account). Exotel offers no REST action on a Voicebot call: the
flow decides what follows the stream, so the agent's hang-up is closing the socket and a
transfer is not offered (the flow's next applet, a Hangup or a Connect, runs instead)."""
from __future__ import annotations

from typing import Final

import aiohttp
from yarl import URL

from ..base import CallControl, ControlContext, TransferUnsupported
from ..identifiers import api_url

NO_TRANSFER: Final = (
    "Exotel has no per-call transfer of a Voicebot stream: the flow's next applet (a Connect "
    "applet, say) runs after the stream closes"
)


class ExotelControl(CallControl):
    title = "Exotel"

    def __init__(self, call: ControlContext) -> None:
        auth = aiohttp.encode_basic_auth(call.config.value("api_key"), call.config.value("api_token"))
        super().__init__(call, headers={"Authorization": auth})
        self._url: URL = api_url(
            call.api_base_url, "v1", "Accounts", call.config.value("account_sid"), "Calls",
            f"{call.start.call_id}.json",
        )

    def __repr__(self) -> str:
        return f"<ExotelControl {self._url.path}>"  # never the token

    async def validate(self) -> None:
        """200 from the Call resource: the call is this account's (Exotel answers 404 for
        another account's or an unknown call, 401 for other credentials)."""
        await self.fetch_live_call(self._url)

    async def hangup(self) -> int:
        """Nothing to ask Exotel: the stream closing ends the Voicebot applet (0: no request)."""
        return 0

    async def transfer(self, destination: str) -> int:
        raise TransferUnsupported(NO_TRANSFER)
