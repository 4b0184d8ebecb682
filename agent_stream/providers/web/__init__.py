"""The admin's browser test call (contract section 7, provider `web`): **Talk to this
agent** streams the microphone to the agent over a same-origin socket. No telephony
configuration: the signed-in session and a one-time token the page minted (access.py,
call_tokens.py) authorize it; 16 kHz PCM both ways (wire.py); hang-up is a message on the socket, and there
is nowhere to transfer a browser to."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from aiohttp import web
from yarl import URL

from ... import call_tokens
from ...audio import Codec
from ...errors import HandshakeError
from ...keys import STORE
from ...models import TelephonyConfig
from ...security import SESSION_COOKIE
from .. import base
from . import access
from .wire import WebWire, event, web_codec

__all__ = ["WebProvider"]


class WebProvider(base.Provider):
    name = "web"
    title = "Browser (Talk to this agent)"
    fields: ClassVar[tuple[base.ConfigField, ...]] = ()
    needs_configuration = False
    call_type = "web"
    caller_codecs: ClassVar[Mapping[str, tuple[str, int]]] = {"l16": ("l16", 16000)}

    async def read_start(self, given: base.HandshakeInput) -> base.CallStart:
        """Same origin, a session, then `{"event":"start","token":T}` with a token of this
        agent and this user, used up here; or a 4400 naming what was missing."""
        request = given.request
        access.refuse_url_token(request)
        access.check_origin(request)
        store = request.app[STORE]
        user = await access.session_user(request, store)
        message = await base.receive_event(given, "start")
        grant = await call_tokens.redeem(
            store, message.get("token"), agent_uuid=request.match_info["agent_uuid"], user=user
        )
        return base.CallStart(
            call_id=grant.call_id,
            stream_id=grant.call_id,
            account_id=None,
            caller=None,
            called=None,
            custom_parameters={},
            codec=web_codec(),
            fields={"user_id": user.id, "user_email": user.email,
                    "organization_id": user.organization_id},
            gathered={"web_call_id": grant.call_id, "web_user_id": user.id},
        )

    def webhook_log(
        self, request: web.Request, newer_form: bool, start: base.CallStart, config: TelephonyConfig
    ) -> dict[str, object]:
        return {"signed_in_user": start.fields.get("user_email")}

    def wire(self, start: base.CallStart, *, log: base.LogAdapter) -> base.Wire:
        return WebWire(start, log=log)

    def control(self, call: base.ControlContext) -> base.CallControl:
        return WebControl(call)

    def snippets(self, stream_url: str, config: TelephonyConfig | None) -> list[base.Snippet]:
        return []  # nothing to paste anywhere: the admin's button places the call

    def caller(self, codec: Codec, secrets: Mapping[str, str] | None) -> base.CallerSide:
        return WebCaller(codec, secrets)


class WebControl(base.CallControl):
    """No REST API: the page is told on the socket. The session's user must belong to the
    agent's organization (the stand-in configuration carries the workflow's)."""

    title = "Browser"

    def __init__(self, call: base.ControlContext) -> None:
        super().__init__(call, headers={})
        self._organization_id = call.config.organization_id
        self._user_organization = call.start.fields.get("organization_id")
        self._send_text = call.send_text

    async def validate(self) -> None:
        if self._user_organization != self._organization_id:
            raise HandshakeError("browser call refused: the signed-in user may not see this agent")

    async def hangup(self) -> int:
        await self._send_text(event("hangup"))
        return 0

    async def transfer(self, destination: str) -> int:
        reason = f"a browser test call cannot be transferred; it would have gone to {destination}"
        await self._send_text(event("transfer", destination=destination, text=reason))
        raise base.TransferUnsupported(reason)


class WebCaller(base.CallerSide):
    """The page's end, for the CLI test call and the tests: `secrets` holds the session
    cookie's value (`session`), the minted `token` and, to test a refusal, an `origin`."""

    def upgrade_headers(self, url: str) -> dict[str, str]:
        target = URL(url)
        scheme = "https" if target.scheme in ("wss", "https") else "http"
        headers = {"Origin": self.secrets.get("origin") or str(target.with_scheme(scheme).origin())}
        if self.secrets.get("session"):
            headers["Cookie"] = f"{SESSION_COOKIE}={self.secrets['session']}"
        return headers

    def opening(self, who: base.CallerIdentity) -> list[str | bytes]:
        token = self.secrets.get("token")
        return [event("start", token=token) if token else event("start")]

    def media(self, who: base.CallerIdentity, payload: bytes, *, sequence: int, chunk: int) -> bytes:
        return payload

    def dtmf(self, who: base.CallerIdentity, digit: str, sequence: int) -> str:
        return event("dtmf", digit=digit)

    def played(self, who: base.CallerIdentity, name: str, sequence: int) -> str:
        return event("mark", name=name)

    def stop(self, who: base.CallerIdentity, sequence: int) -> str:
        return event("hangup")

    def heard(self, message: dict[str, Any]) -> base.Heard:
        kind = message.get("event")
        if kind == "mark":
            return base.Heard("mark", name=str(message.get("name", "")), raw=message)
        if kind == "clear":
            return base.Heard("clear", raw=message)
        return base.Heard("other", raw=message)

    def heard_binary(self, data: bytes) -> base.Heard:
        return base.Heard("media", data, raw={"event": "media", "bytes": len(data)})

