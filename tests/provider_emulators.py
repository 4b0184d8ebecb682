"""Local stand-ins for the providers' REST APIs (Twilio, Telnyx, Plivo, Vonage, Exotel), so
tests exercise real HTTP: each checks credentials as the provider does, keeps its live
calls, answers like the provider answers, and records every request it got. (Cloudonix's
is in cloudonix_emulator.py.)"""
from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final
from urllib.parse import parse_qs

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

# The Vonage application a request's JWT opened.
APPLICATION: Final = web.RequestKey("application", str)
# What the Telnyx emulator transfers to: E.164 or a SIP URI.
TRANSFER_DESTINATION: Final = re.compile(r"\+[1-9][0-9]{6,14}|sips?:\S+")


@dataclass
class Request:
    """One request an emulator answered."""

    method: str
    path: str
    raw_path: str
    authorized: bool
    body: Any  # JSON, or the form as a dict, or None
    status: int


Handler = Callable[[web.Request, Any], Awaitable[web.Response]]


@dataclass
class RestEmulator:
    """What every emulator shares: credentials, live calls, requests, overrides."""

    credentials: dict[str, str] = field(default_factory=dict)  # account -> secret
    live: dict[str, str] = field(default_factory=dict)  # call id -> account
    requests: list[Request] = field(default_factory=list)
    status_override: int | None = None

    def add_account(self, account: str, secret: str) -> None:
        self.credentials[account] = secret

    def add_call(self, account: str, call_id: str) -> None:
        self.live[call_id] = account

    def make_app(self) -> web.Application:
        raise NotImplementedError

    def authorized(self, request: web.Request) -> str | None:
        """The account the request's credentials open, if any."""
        raise NotImplementedError

    def _guarded(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            body = await _body(request)
            account = self.authorized(request)
            if self.status_override is not None:
                response = web.json_response({"error": "status override"}, status=self.status_override)
            elif account is None:
                response = web.json_response({"error": "unauthorized"}, status=401)
            else:
                response = await handler(request, body)
            self.requests.append(Request(
                request.method, request.path, request.raw_path, account is not None, body,
                response.status,
            ))
            return response

        return wrapped



async def _body(request: web.Request) -> Any:
    if not request.can_read_body:
        return None
    raw = await request.read()
    if request.content_type == "application/x-www-form-urlencoded":
        return {k: v[0] for k, v in parse_qs(raw.decode()).items()}
    try:
        return json.loads(raw)
    except ValueError:
        return None


def basic_pair(request: web.Request) -> tuple[str, str] | None:
    """The user and password of a request's HTTP Basic credentials (None: it has none)."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except ValueError:
        return None
    return user, password


@dataclass
class BasicAuthEmulator(RestEmulator):
    """A provider whose call URLs name the account (path variable `account_param`) and
    which takes HTTP Basic with that account and its secret (Twilio, Plivo)."""

    account_param: ClassVar[str]

    def authorized(self, request: web.Request) -> str | None:
        account, secret = basic_pair(request) or ("", "")
        known = self.credentials.get(account) == secret and secret
        return account if known and account == request.match_info[self.account_param] else None

    def _call(self, request: web.Request) -> str | None:
        """The call of the URL, if it is live on the URL's account."""
        call = request.match_info["call"]
        return call if self.live.get(call) == request.match_info[self.account_param] else None


@dataclass
class TwilioEmulator(BasicAuthEmulator):
    """The Call resource: GET answers the call's status; POST `Status=completed` ends it,
    POST `Twiml=` replaces its document; an unknown or ended call is 404 (code 20404)."""

    account_param: ClassVar[str] = "sid"

    def make_app(self) -> web.Application:
        app = web.Application()
        path = "/2010-04-01/Accounts/{sid}/Calls/{call}.json"
        app.router.add_get(path, self._guarded(self._get))
        app.router.add_post(path, self._guarded(self._update))
        return app

    async def _get(self, request: web.Request, body: Any) -> web.Response:
        call = self._call(request)
        if call is None:
            return web.json_response({"code": 20404, "status": 404}, status=404)
        return web.json_response({"sid": call, "status": "in-progress"})

    async def _update(self, request: web.Request, body: Any) -> web.Response:
        call = self._call(request)
        if call is None:
            return web.json_response({"code": 20404, "status": 404}, status=404)
        if not isinstance(body, dict) or not ({"Status", "Twiml"} & set(body)):
            return web.json_response({"code": 21218, "status": 400}, status=400)
        if body.get("Status") == "completed":
            del self.live[call]
            return web.json_response({"sid": call, "status": "completed"})
        return web.json_response({"sid": call, "status": "in-progress"})


@dataclass
class TelnyxEmulator(RestEmulator):
    """Call Control: Bearer API key. GET a call answers whether it is alive (an ended one
    stays readable, `is_alive` false, as Telnyx keeps it for minutes); hangup ends it;
    transfer needs `{"to": ...}`; either on a call that is over is 422, error 90018. Another
    account's or an unknown call is 404."""

    ended: set[str] = field(default_factory=set)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/calls/{call}", self._guarded(self._get))
        app.router.add_post("/v2/calls/{call}/actions/hangup", self._guarded(self._hangup))
        app.router.add_post("/v2/calls/{call}/actions/transfer", self._guarded(self._transfer))
        return app

    def authorized(self, request: web.Request) -> str | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not key:
            return None
        return next((a for a, secret in self.credentials.items() if secret == key), None)

    def _owner(self, request: web.Request) -> str | None:
        account = self.authorized(request)
        call = request.match_info["call"]
        return account if self.live.get(call) == account else None

    @staticmethod
    def _error(status: int, title: str, code: str | None = None) -> web.Response:
        error = {"title": title} | ({"code": code} if code else {})
        return web.json_response({"errors": [error]}, status=status)

    def _over(self) -> web.Response:
        return self._error(422, "Call has already ended", "90018")

    def _not_found(self) -> web.Response:
        return self._error(404, "Resource not found")

    async def _get(self, request: web.Request, body: Any) -> web.Response:
        call = request.match_info["call"]
        if self._owner(request) is not None:
            return web.json_response({"data": {"call_control_id": call, "is_alive": True,
                                               "record_type": "call"}})
        if call in self.ended:
            return web.json_response({"data": {"call_control_id": call, "is_alive": False,
                                               "record_type": "call"}})
        return self._not_found()

    def _refusal(self, request: web.Request) -> web.Response | None:
        """Why an action on the URL's call is refused: another account's call (404) or a
        call that is over (422, 90018); None when it is this account's live call."""
        call = request.match_info["call"]
        if call in self.live and self._owner(request) is None:
            return self._not_found()
        return None if call in self.live else self._over()

    async def _hangup(self, request: web.Request, body: Any) -> web.Response:
        call = request.match_info["call"]
        if (refused := self._refusal(request)) is not None:
            return refused
        del self.live[call]
        self.ended.add(call)
        return web.json_response({"data": {"result": "ok"}})

    async def _transfer(self, request: web.Request, body: Any) -> web.Response:
        if not isinstance(body, dict) or not isinstance(body.get("to"), str):
            return self._error(400, "Bad Request")
        if (refused := self._refusal(request)) is not None:
            return refused
        if not TRANSFER_DESTINATION.fullmatch(body["to"]):
            # Telnyx's catalog names 10002 "Invalid phone number" (its status here: a guess)
            return self._error(422, "Invalid phone number", "10002")
        return web.json_response({"data": {"result": "ok"}})


@dataclass
class VonageEmulator(RestEmulator):
    """The Voice API's call resource: every request needs a JWT (RS256) that verifies with
    the public key of the application it claims and carries iat, exp and jti. GET answers a
    live call `answered`; PUT `{"action":"hangup"}` ends it (204), PUT a transfer to an NCCO
    that connects a phone or SIP endpoint is 204; another application's or an ended call
    is 404, as Vonage answers."""

    public_keys: dict[str, Any] = field(default_factory=dict)  # application id -> key
    tokens_seen: set[str] = field(default_factory=set)  # jti of every token (never reused)

    def add_account(self, account: str, secret: str) -> None:
        """`secret` is the application's private key: only its public half is kept."""
        super().add_account(account, secret)
        private = load_pem_private_key(secret.encode(), password=None)
        assert isinstance(private, RSAPrivateKey)
        self.public_keys[account] = private.public_key()

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/calls/{call}", self._guarded(self._get))
        app.router.add_put("/v1/calls/{call}", self._guarded(self._update))
        return app

    def authorized(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            return None
        try:
            claimed = jwt.decode(token, options={"verify_signature": False}).get("application_id")
            key = self.public_keys.get(str(claimed))
            if key is None:
                return None
            claims = jwt.decode(token, key, algorithms=["RS256"],
                                options={"require": ["application_id", "iat", "exp", "jti"]})
        except jwt.PyJWTError:
            return None
        if claims["jti"] in self.tokens_seen:
            return None
        self.tokens_seen.add(claims["jti"])
        request[APPLICATION] = str(claimed)  # whose calls the handler may touch
        return str(claimed)

    def _call(self, request: web.Request) -> str | None:
        """The URL's call, if it is live and the requesting application's."""
        call = request.match_info["call"]
        return call if self.live.get(call) == request.get(APPLICATION) else None

    @staticmethod
    def _not_found() -> web.Response:
        return web.json_response({"type": "https://developer.nexmo.com/api-errors#not-found",
                                  "title": "Not Found"}, status=404)

    async def _get(self, request: web.Request, body: Any) -> web.Response:
        call = self._call(request)
        if call is None:
            return self._not_found()
        return web.json_response({"uuid": call, "status": "answered", "direction": "inbound"})

    async def _update(self, request: web.Request, body: Any) -> web.Response:
        call = self._call(request)
        if call is None:
            return self._not_found()
        action = body.get("action") if isinstance(body, dict) else None
        if action == "hangup":
            del self.live[call]
            return web.Response(status=204)
        if action == "transfer" and _connects_somewhere(body.get("destination")):
            return web.Response(status=204)
        return web.json_response({"title": "Bad Request"}, status=400)


def _connects_somewhere(destination: Any) -> bool:
    """A transfer destination Vonage takes: an NCCO whose connect names a phone (digits,
    no +) or a SIP URI."""
    try:
        endpoint = destination["ncco"][0]["endpoint"][0]
        if destination["type"] != "ncco" or destination["ncco"][0]["action"] != "connect":
            return False
    except (KeyError, IndexError, TypeError):
        return False
    if endpoint.get("type") == "phone":
        return bool(re.fullmatch(r"[1-9][0-9]{6,14}", str(endpoint.get("number"))))
    return endpoint.get("type") == "sip" and str(endpoint.get("uri", "")).startswith("sip")


@dataclass
class ExotelEmulator(RestEmulator):
    """The Call resource (`.json`): HTTP Basic with the account's API key and token (not
    its SID); GET answers a call of the URL's account, 404 any other. Exotel has no REST
    action on a Voicebot stream, so nothing else is routed (a request would be a 405)."""

    api_keys: dict[str, str] = field(default_factory=dict)  # account -> API key

    def add_key(self, account: str, api_key: str) -> None:
        self.api_keys[account] = api_key

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/Accounts/{sid}/Calls/{call}.json", self._guarded(self._get))
        return app

    def authorized(self, request: web.Request) -> str | None:
        key, token = basic_pair(request) or ("", "")
        account = request.match_info["sid"]
        known = token and self.credentials.get(account) == token and self.api_keys.get(account) == key
        return account if known else None

    async def _get(self, request: web.Request, body: Any) -> web.Response:
        call, account = request.match_info["call"], request.match_info["sid"]
        if self.live.get(call) != account:
            return web.json_response({"RestException": {"Status": 404, "Message": "Not Found"}},
                                     status=404)
        return web.json_response({"Call": {"Sid": call, "AccountSid": account, "Status": "in-progress",
                                           "Direction": "inbound"}})


@dataclass(frozen=True)
class Fetched:
    """What Plivo got when it fetched a transfer's `aleg_url`."""

    url: str
    status: int
    content_type: str
    text: str


@dataclass
class PlivoEmulator(BasicAuthEmulator):
    """The Call resource (every URL ends with a slash): GET with `status=live` answers a
    live call of the account, DELETE hangs it up (204), POST `legs=aleg` with `aleg_url`
    and `aleg_method=GET` transfers it: like Plivo, the emulator then fetches `aleg_url`
    and keeps the XML it got. A call that is not live is 404."""

    account_param: ClassVar[str] = "auth_id"
    fetched: list[Fetched] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    def make_app(self) -> web.Application:
        app = web.Application()
        path = "/v1/Account/{auth_id}/Call/{call}/"
        app.router.add_get(path, self._guarded(self._get))
        app.router.add_delete(path, self._guarded(self._hangup))
        app.router.add_post(path, self._guarded(self._transfer))
        app.cleanup_ctx.append(self._http)
        return app

    async def _http(self, app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            self._session = session
            yield

    @staticmethod
    def _not_found() -> web.Response:
        return web.json_response({"api_id": "emulated", "error": "not found"}, status=404)

    async def _get(self, request: web.Request, body: Any) -> web.Response:
        call = self._call(request)
        if call is None or request.query.get("status") != "live":
            return self._not_found()
        return web.json_response({"api_id": "emulated", "call_uuid": call, "call_status": "in-progress",
                                  "direction": "inbound"})

    async def _hangup(self, request: web.Request, body: Any) -> web.Response:
        call = self._call(request)
        if call is None:
            return self._not_found()
        del self.live[call]
        return web.Response(status=204)

    async def _transfer(self, request: web.Request, body: Any) -> web.Response:
        call = self._call(request)
        if call is None:
            return self._not_found()
        form = body if isinstance(body, dict) else {}
        if form.get("legs") != "aleg" or not form.get("aleg_url") or form.get("aleg_method") != "GET":
            return web.json_response({"api_id": "emulated", "error": "bad transfer"}, status=400)
        assert self._session is not None
        async with self._session.get(form["aleg_url"]) as fetched:
            self.fetched.append(Fetched(form["aleg_url"], fetched.status, fetched.content_type,
                                        await fetched.text()))
        return web.json_response({"api_id": "emulated", "message": "call transferred"}, status=202)


async def start_rest_emulator(aiohttp_server: Any, emulator: Any) -> str:
    """Serve `emulator` (anything with `make_app`); returns its base URL (no trailing slash)."""
    server = await aiohttp_server(emulator.make_app())
    return str(server.make_url("")).rstrip("/")


@dataclass
class AriEmulator(RestEmulator):
    """Asterisk's ARI, HTTP Basic with an ari.conf user. Each configuration points at its
    own PBX; here they share one server and every user sees only its own PBX's channels.
    GET a channel answers it (404 for one that does not exist); POST its `variable` with
    `variable` and `value` in the query sets it (204), kept in `variables`, but only for a
    channel in a Stasis application (`stasis`): like ARI, 409 for one running the dialplan;
    a channel that is gone is 404. POST `asterisk/variable` sets a global variable (204),
    kept in `globals`."""

    variables: list[tuple[str, str, str]] = field(default_factory=list)  # channel, name, value
    stasis: set[str] = field(default_factory=set)  # channels in a Stasis application
    globals: list[tuple[str, str]] = field(default_factory=list)  # name, value

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ari/channels/{channel}", self._guarded(self._get))
        app.router.add_post("/ari/channels/{channel}/variable", self._guarded(self._set_variable))
        app.router.add_post("/ari/asterisk/variable", self._guarded(self._set_global))
        return app

    def authorized(self, request: web.Request) -> str | None:
        user, password = basic_pair(request) or ("", "")
        return user if password and self.credentials.get(user) == password else None

    def _channel(self, request: web.Request) -> str | None:
        channel = request.match_info["channel"]
        return channel if self.live.get(channel) == self.authorized(request) else None

    @staticmethod
    def _not_found() -> web.Response:
        return web.json_response({"message": "Channel not found"}, status=404)

    async def _get(self, request: web.Request, body: Any) -> web.Response:
        channel = self._channel(request)
        if channel is None:
            return self._not_found()
        return web.json_response({"id": channel, "name": f"WebSocket/agent_stream-{channel}",
                                  "state": "Up"})

    async def _set_variable(self, request: web.Request, body: Any) -> web.Response:
        variable = request.query.get("variable")
        if not variable:
            return web.json_response({"message": "Variable name is required"}, status=400)
        channel = self._channel(request)
        if channel is None:
            return self._not_found()
        if channel not in self.stasis:
            return web.json_response({"message": "Channel not in Stasis application"}, status=409)
        self.variables.append((channel, variable, request.query.get("value", "")))
        return web.Response(status=204)

    async def _set_global(self, request: web.Request, body: Any) -> web.Response:
        variable = request.query.get("variable")
        if not variable:
            return web.json_response({"message": "Variable name is required"}, status=400)
        self.globals.append((variable, request.query.get("value", "")))
        return web.Response(status=204)
