"""Telnyx Call Control for one call, Bearer API key: validation (`GET /v2/calls/{id}` says
the call is alive), hang-up and blind transfer (`POST .../actions/hangup|transfer`); a 422
naming error 90018 ("Call has already ended") means the call is already over."""
from __future__ import annotations

from typing import Any, Final

from yarl import URL

from ... import strict_json
from ...errors import HandshakeError
from ..base import CallControl, ControlContext, ProviderApiError
from ..identifiers import api_url

ALREADY_OVER: Final = 422
CALL_ENDED_CODE: Final = "90018"


def names_call_ended(raw: bytes) -> bool:
    """Whether a 422's body means "the call is already over": its errors name 90018, or it
    names no error code at all (nothing says it is another refusal). A 422 naming other
    codes (a destination Telnyx refuses, say) is a refusal, not a call that is over."""
    try:
        body: Any = strict_json.loads(raw)
    except ValueError:
        return True
    errors = body.get("errors") if isinstance(body, dict) else None
    codes = [str(e.get("code")) for e in errors or [] if isinstance(e, dict) and e.get("code")]
    return not codes or CALL_ENDED_CODE in codes


class TelnyxControl(CallControl):
    title = "Telnyx"

    def __init__(self, call: ControlContext) -> None:
        super().__init__(call, headers={"Authorization": f"Bearer {call.config.value('api_key')}"})
        api, call_control_id = call.api_base_url, call.start.call_id
        self._call: URL = api_url(api, "v2", "calls", call_control_id)
        self._hangup: URL = api_url(api, "v2", "calls", call_control_id, "actions", "hangup")
        self._transfer: URL = api_url(api, "v2", "calls", call_control_id, "actions", "transfer")

    def __repr__(self) -> str:
        return f"<TelnyxControl {self._call.path}>"  # never the key

    async def validate(self) -> None:
        """200 with data.is_alive: the call is live, and this key's account may see it."""
        body = await self.fetch_live_call(self._call, read_json=True)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict) or data.get("is_alive") is not True:
            raise HandshakeError("session validation failed: the Telnyx call is not alive")

    async def hangup(self) -> int:
        return await self._action(self._hangup, {}, "hangup")

    async def transfer(self, destination: str) -> int:
        return await self._action(self._transfer, {"to": destination}, "transfer")

    async def _action(self, url: URL, body: dict[str, str], action: str) -> int:
        async with self.request("POST", url, action, json=body) as response:
            if response.status < 300:
                return response.status
            if response.status == ALREADY_OVER and names_call_ended(await response.read()):
                return response.status
            raise ProviderApiError(self.title, action, response.status)
