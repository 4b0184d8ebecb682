"""Cloudonix's REST API for one call: session validation, hang-up, blind transfer (contract
section 2.3), Bearer token, every URL built from encoded segments."""
from __future__ import annotations

from xml.sax.saxutils import escape

from yarl import URL

from ..base import CallControl, ControlContext
from ..identifiers import api_url


def transfer_cxml(destination: str) -> str:
    """The CXML that makes Cloudonix dial the destination (blind transfer)."""
    return f"<Response><Dial>{escape(destination)}</Dial></Response>"


class CloudonixControl(CallControl):
    """The Cloudonix REST calls of one call, on the app's shared HTTP session."""

    title = "Cloudonix"
    already_over = 404  # the session is gone: a hang-up or transfer is done all the same

    def __init__(self, call: ControlContext) -> None:
        super().__init__(call, headers={"Authorization": f"Bearer {call.config.value('bearer_token')}"})
        self._base = call.api_base_url.rstrip("/")
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
        async with self._http.delete(
            self._session_url(), headers=self._headers, timeout=self._timeout
        ) as response:
            return self.checked(response.status, "hangup")

    async def transfer(self, destination: str) -> int:
        """Blind transfer: replace the call's application with a Dial to `destination`."""
        async with self._http.post(
            api_url(self._base, "calls", self._domain, "sessions", self._session, "application"),
            headers=self._headers,
            json={"cxml": transfer_cxml(destination)},
            timeout=self._timeout,
        ) as response:
            return self.checked(response.status, "transfer")
