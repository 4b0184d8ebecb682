"""Cloudonix's REST API for one call: session validation, hang-up, blind transfer (contract
section 2.3), Bearer token, every URL built from encoded segments."""
from __future__ import annotations

from yarl import URL

from ..base import CallControl, ControlContext
from ..identifiers import api_url
from ..twilio_style import dial_response

# The CXML that makes Cloudonix dial the destination (blind transfer).
transfer_cxml = dial_response


class CloudonixControl(CallControl):
    """The Cloudonix REST calls of one call, on the app's shared HTTP session."""

    title = "Cloudonix"
    already_over = 404  # the session is gone: a hang-up or transfer is done all the same

    def __init__(self, call: ControlContext) -> None:
        super().__init__(call, headers={"Authorization": f"Bearer {call.config.value('bearer_token')}"})
        self._base = call.api_base_url
        self._domain = call.config.account_id
        self._session = call.start.call_id

    def __repr__(self) -> str:
        return f"<CloudonixControl domain={self._domain}>"  # never the token

    def _session_url(self) -> URL:
        return api_url(self._base, "customers", "self", "domains", self._domain, "sessions",
                       self._session)

    async def validate(self) -> None:
        """200 means the call is live on this domain; anything else is a 4400."""
        await self.fetch_live_call(self._session_url())

    async def hangup(self) -> int:
        """End the call; 200, 204 and 404 (already gone) all mean done."""
        return await self.act("DELETE", self._session_url(), "hangup")

    async def transfer(self, destination: str) -> int:
        """Blind transfer: replace the call's application with a Dial to `destination`."""
        url = api_url(self._base, "calls", self._domain, "sessions", self._session, "application")
        return await self.act("POST", url, "transfer", json={"cxml": transfer_cxml(destination)})
