"""ARI for one call, HTTP Basic with the configuration's ARI user, at the configuration's
own `ari_url` (every PBX has its own): validation (the WebSocket channel exists), and the
transfer's channel variable. The hang-up is no REST call: the `HANGUP` command on the
call's own socket ends the WebSocket channel, and the dialplan after `Dial()` hangs up
the caller (or dials the transfer's destination)."""
from __future__ import annotations

import re
from typing import Final

import aiohttp

from ..base import CallActionFailed, CallControl, ControlContext, ProviderApiError
from ..identifiers import IDENTIFIER_RULE, api_url, is_identifier
from .wire import command, form_of

# The channel variable the dialplan after Dial() reads for the transfer's destination.
TRANSFER_VARIABLE: Final = "AGENT_STREAM_TRANSFER"
# The v() option naming the caller's channel (the dialplan passes ${UNIQUEID}).
CALLER_PARAMETER: Final = "caller"
# What ARI answers for a channel that exists but is in no Stasis application (a caller in
# the dialplan's Dial(): ARI sets channel variables only in Stasis).
NOT_IN_STASIS: Final = 409
MISSING_CALLER: Final = (
    "the stream has no 'caller' parameter: add caller=${UNIQUEID} to the v() options of "
    "Dial(WebSocket/...) so the agent can name the channel to transfer"
)


def global_transfer_variable(caller: str) -> str:
    """The global variable that carries a transfer's destination when ARI cannot set the
    caller's channel variable: named after the caller's channel id, letters and digits only
    (the dialplan reads it as ${GLOBAL(AGENT_STREAM_TRANSFER_${FILTER(0-9A-Za-z,${UNIQUEID})})})."""
    return f"{TRANSFER_VARIABLE}_{re.sub(r'[^0-9A-Za-z]', '', caller)}"


class TransferImpossible(CallActionFailed):
    """A transfer that cannot be asked of ARI at all (no caller channel named): the run
    fails with why and how to fix the dialplan."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Asterisk transfer impossible: {reason}")


class AsteriskControl(CallControl):
    title = "Asterisk"
    already_over = 404  # the caller's channel is gone: nothing left to transfer

    def __init__(self, call: ControlContext) -> None:
        auth = aiohttp.encode_basic_auth(call.config.value("ari_username"), call.config.value("ari_password"))
        super().__init__(call, headers={"Authorization": auth})
        self._ari_url = call.config.value("ari_url")
        self._channel = api_url(self._ari_url, "channels", call.start.call_id)
        self._caller = call.start.custom_parameters.get(CALLER_PARAMETER, "")
        self._form = form_of(call.start)
        self._send_text = call.send_text

    def __repr__(self) -> str:
        return f"<AsteriskControl {self._channel.path}>"  # never the password

    async def validate(self) -> None:
        """200: the WebSocket channel exists on this PBX (ARI answers 404 for one that does not)."""
        await self.fetch_live_call(self._channel)

    async def hangup(self) -> int:
        """`HANGUP` on the socket: Asterisk ends the channel and closes the socket (a socket
        that is already closed means the call is over: done too)."""
        await self._send_text(command(self._form, "HANGUP"))
        return 0

    async def transfer(self, destination: str) -> int:
        """Set AGENT_STREAM_TRANSFER on the caller's channel, then hang up the stream: the
        dialplan after Dial() dials it. 204 when set, 404 when the caller is already gone.
        A caller that is in no Stasis application (409, the usual dialplan) gets the
        destination through the global variable `global_transfer_variable` instead."""
        if not self._caller:
            raise TransferImpossible(MISSING_CALLER)
        if not is_identifier(self._caller):
            raise TransferImpossible(f"the 'caller' parameter must be a channel id: {IDENTIFIER_RULE}")
        url = api_url(self._ari_url, "channels", self._caller, "variable")
        params = {"variable": TRANSFER_VARIABLE, "value": destination}
        try:
            status = await self.act("POST", url, "transfer", params=params)
        except ProviderApiError as exc:
            if exc.status != NOT_IN_STASIS:
                raise
            # the caller is in the dialplan, not in Stasis: a global variable named after it
            status = await self.act("POST", api_url(self._ari_url, "asterisk", "variable"), "transfer",
                                    params={"variable": global_transfer_variable(self._caller),
                                            "value": destination})
        await self._send_text(command(self._form, "HANGUP"))
        return status
