"""What the provider contract suite (test_providers.py) needs to know of each provider: its
emulator, a configuration's values, the identity a call of its account carries, and the
exact REST requests validation, hang-up and transfer make. One kit per provider; the suite
runs every scenario for each."""
from __future__ import annotations

import hashlib
import itertools
import secrets
import string
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agent_stream.providers.asterisk import caller_channel
from agent_stream.providers.exotel import NO_TRANSFER
from agent_stream.simulator import SimulatedCall
from tests.cloudonix_emulator import CloudonixEmulator
from tests.provider_emulators import (
    AriEmulator,
    ExotelEmulator,
    PlivoEmulator,
    RestEmulator,
    TelnyxEmulator,
    TwilioEmulator,
    VonageEmulator,
)


@dataclass
class Expected:
    """A request the provider's API must have received."""

    method: str
    path: str
    body: Any = None  # the JSON or form it carried (None: not checked)
    # For a body with a part nobody can know in advance (a one-time URL): checks it instead.
    check: Callable[[Any], None] | None = None


@dataclass
class Kit:
    """One provider, as the contract suite drives it."""

    provider: str
    emulator: Any
    base_url: str = ""
    # gathered_context keys of the provider's call and stream ids ("" until __post_init__:
    # `{provider}_call_id` and `{provider}_stream_id`)
    call_key: str = ""
    stream_key: str = ""
    already_over: int = 404  # what "the call is already over" answers
    encoding: str | None = None  # the caller's codec, where the provider has several
    accounts: list[str] = field(default_factory=list)
    # The close the caller's end sees when it hangs up: the server's close after the
    # provider's `stop`, or the answer to its own close where the provider has no stop.
    hang_up_close: tuple[int, str] = (1000, "call ended")
    # Whether the provider's custom data can name a configuration by name (Plivo's extra
    # headers take letters and digits only: the id).
    names_configurations: bool = True
    # The configuration's fields holding the account and its secret.
    fields: tuple[str, str] = ("", "")
    # A secret field that must be one line (the secret of `fields` unless that one is a
    # multi-line key), and a value for it.
    one_line_secret: tuple[str, str] | None = None
    # Whether the stream names the account (Asterisk's names none: a parameter or the
    # organization's only configuration selects it).
    account_in_stream: bool = True
    # Whether the agent hangs up with a command on the stream, not a REST request
    # (Asterisk's HANGUP; its transfer is a REST request, then that command).
    hangs_up_on_stream: bool = False
    # Whether the agent hangs up by closing the stream: no request and no command (Exotel).
    hangs_up_by_closing: bool = False
    # Where the provider offers no transfer: what the run's logs.transfer_unsupported says.
    no_transfer: str = ""
    # Why a first message that is text but not JSON is refused (Asterisk also reads plain text).
    not_json_reason: str = "not JSON"

    def __post_init__(self) -> None:
        self.call_key = self.call_key or f"{self.provider}_call_id"
        self.stream_key = self.stream_key or f"{self.provider}_stream_id"

    # configuration ---------------------------------------------------------------------

    def make_account(self) -> tuple[str, str]:
        """A fresh account id and its secret."""
        raise NotImplementedError

    def new_account(self) -> tuple[str, str]:
        """A fresh account and its secret, known to the emulator."""
        account, secret = self.make_account()
        self.accounts.append(account)
        self.emulator.add_account(account, secret)
        return account, secret

    def config(self, account: str, secret: str) -> dict[str, Any]:
        """A configuration of that account, as the API takes it (without `provider`)."""
        account_field, secret_field = self.fields
        return {account_field: account, secret_field: secret}

    def secrets(self, secret: str) -> dict[str, str]:
        """What the provider's end signs the upgrade with (none for most)."""
        return {}

    # a call --------------------------------------------------------------------------------

    def identity(self, account: str) -> dict[str, Any]:
        """The SimulatedCall identity of a new call of `account`."""
        return {"account_sid": account, "call_sid": "CA" + secrets.token_hex(16),
                "stream_sid": "MZ" + secrets.token_hex(16)}

    def call_id(self, identity: dict[str, Any]) -> str:
        """The id the REST API knows the call by."""
        return str(identity["call_sid"])

    def call_id_of(self, call: SimulatedCall) -> str:
        """The id the REST API knows a simulated call by."""
        return self.call_id({"account_sid": call.account_sid, "call_sid": call.call_sid,
                             "session": call.session})

    def make_live(self, account: str, identity: dict[str, Any]) -> None:
        self.emulator.add_call(account, self.call_id(identity))

    # what the API must receive ---------------------------------------------------------

    def expected(self, action: str, account: str, call: str, destination: str) -> Expected:
        """The request of `action` (validation, hangup, transfer) for a call of `account`."""
        raise NotImplementedError

    def validation(self, account: str, call: str) -> Expected:
        return self.expected("validation", account, call, "")

    def hangup(self, account: str, call: str) -> Expected:
        return self.expected("hangup", account, call, "")

    def transfer(self, account: str, call: str, destination: str) -> Expected:
        return self.expected("transfer", account, call, destination)

    def stream_parameters(self, given: dict[str, str], call: SimulatedCall) -> dict[str, str]:
        """The custom parameters a call carries when it is given `given` (Asterisk's
        dialplan adds the caller's channel)."""
        return given

    def requests(self) -> list[Any]:
        return list(self.emulator.requests)

    def request_seen(self, request: Any) -> tuple[str, str, Any]:
        """A recorded request as (method, path, body)."""
        return request.method, request.path, getattr(request, "body", getattr(request, "json", None))

    def refuse_all(self, status: int) -> None:
        self.emulator.status_override = status

    def end_all_calls(self) -> None:
        """Every call the provider knew ends (its API then answers "already over")."""
        self.emulator.live.clear()


@dataclass
class CloudonixKit(Kit):
    provider: str = "cloudonix"
    emulator: CloudonixEmulator = field(default_factory=CloudonixEmulator)
    call_key: str = "cloudonix_session"
    stream_key: str = "cloudonix_stream_sid"
    fields: tuple[str, str] = ("domain_id", "bearer_token")

    def make_account(self) -> tuple[str, str]:
        domain = f"d{len(self.accounts) + 1}-{secrets.token_hex(3)}.cloudonix.net"
        return domain, "cx-token-" + secrets.token_hex(12)

    def call_id(self, identity: dict[str, Any]) -> str:
        return str(identity.get("session") or identity["call_sid"])

    def make_live(self, account: str, identity: dict[str, Any]) -> None:
        self.emulator.add_session(account, self.call_id(identity))

    def end_all_calls(self) -> None:
        self.emulator.sessions.clear()

    def expected(self, action: str, account: str, call: str, destination: str) -> Expected:
        session = f"/customers/self/domains/{account}/sessions/{call}"
        return {
            "validation": Expected("GET", session),
            "hangup": Expected("DELETE", session),
            "transfer": Expected("POST", f"/calls/{account}/sessions/{call}/application",
                                 {"cxml": f"<Response><Dial>{destination}</Dial></Response>"}),
        }[action]

    def request_seen(self, request: Any) -> tuple[str, str, Any]:
        return request.method, request.path, request.json


@dataclass
class TwilioKit(Kit):
    provider: str = "twilio"
    emulator: RestEmulator = field(default_factory=TwilioEmulator)
    fields: tuple[str, str] = ("account_sid", "auth_token")

    def make_account(self) -> tuple[str, str]:
        return "AC" + secrets.token_hex(16), secrets.token_hex(16)

    def secrets(self, secret: str) -> dict[str, str]:
        return {"auth_token": secret}

    def expected(self, action: str, account: str, call: str, destination: str) -> Expected:
        path = f"/2010-04-01/Accounts/{account}/Calls/{quote(call)}.json"
        return {
            "validation": Expected("GET", path),
            "hangup": Expected("POST", path, {"Status": "completed"}),
            "transfer": Expected("POST", path, {"Twiml": f"<Response><Dial>{destination}</Dial></Response>"}),
        }[action]


@dataclass
class TelnyxKit(Kit):
    provider: str = "telnyx"
    emulator: RestEmulator = field(default_factory=TelnyxEmulator)
    already_over: int = 422
    fields: tuple[str, str] = ("account_id", "api_key")

    def make_account(self) -> tuple[str, str]:
        return str(uuid.uuid4()), "KEY" + secrets.token_hex(20)

    def identity(self, account: str) -> dict[str, Any]:
        return {"account_sid": account, "call_sid": "v3:" + secrets.token_urlsafe(24),
                "stream_sid": str(uuid.uuid4())}

    def expected(self, action: str, account: str, call: str, destination: str) -> Expected:
        if action == "validation":
            return Expected("GET", f"/v2/calls/{call}")
        return Expected("POST", f"/v2/calls/{call}/actions/{action}",
                        {"to": destination} if action == "transfer" else {})


@dataclass
class PlivoKit(Kit):
    provider: str = "plivo"
    emulator: PlivoEmulator = field(default_factory=PlivoEmulator)
    hang_up_close: tuple[int, str] = (1000, "")  # no stop: Plivo closes, we answer
    names_configurations: bool = False
    fields: tuple[str, str] = ("auth_id", "auth_token")

    def make_account(self) -> tuple[str, str]:
        alphabet = string.ascii_uppercase + string.digits
        return "MA" + "".join(secrets.choice(alphabet) for _ in range(18)), secrets.token_urlsafe(30)

    def identity(self, account: str) -> dict[str, Any]:
        return {"account_sid": account, "call_sid": str(uuid.uuid4()), "stream_sid": str(uuid.uuid4())}

    def expected(self, action: str, account: str, call: str, destination: str) -> Expected:
        path = f"/v1/Account/{account}/Call/{quote(call)}/"
        if action == "validation":
            return Expected("GET", path + "?status=live")
        if action == "hangup":
            return Expected("DELETE", path)

        def one_time_url_to_the_dial(form: Any) -> None:
            assert isinstance(form, dict) and set(form) == {"legs", "aleg_url", "aleg_method"}
            assert (form["legs"], form["aleg_method"]) == ("aleg", "GET")
            fetched = [f for f in self.emulator.fetched if f.url == form["aleg_url"]]
            assert len(fetched) == 1 and fetched[0].status == 200, self.emulator.fetched
            assert "/api/v1/providers/plivo/transfer/" in fetched[0].url
            assert fetched[0].text == f"<Response><Dial><Number>{destination}</Number></Dial></Response>"

        return Expected("POST", path, check=one_time_url_to_the_dial)

    def request_seen(self, request: Any) -> tuple[str, str, Any]:
        """The path with its query: validation must ask for the live call."""
        return request.method, request.raw_path, request.body


def new_private_key() -> str:
    """A fresh RSA private key in PEM, as Vonage hands an application's private.key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@dataclass
class VonageKit(Kit):
    """Vonage's stream names no account but its upgrade's JWT claims the application (the
    simulated Vonage signs with a signature secret no configuration here knows, as when an
    operator leaves it out); the call and its stream are the NCCO's `call_uuid`."""

    provider: str = "vonage"
    emulator: VonageEmulator = field(default_factory=VonageEmulator)
    hang_up_close: tuple[int, str] = (1000, "")  # no stop: Vonage closes, we answer
    fields: tuple[str, str] = ("application_id", "private_key")
    one_line_secret: tuple[str, str] | None = ("signature_secret", "sig-" + secrets.token_hex(16))
    applications: dict[str, str] = field(default_factory=dict)  # private key -> application

    def make_account(self) -> tuple[str, str]:
        account, key = str(uuid.uuid4()), new_private_key()
        self.applications[key] = account
        return account, key

    def secrets(self, secret: str) -> dict[str, str]:
        return {"application_id": self.applications[secret],
                "signature_secret": "unknown-here-" + secrets.token_hex(16)}

    def identity(self, account: str) -> dict[str, Any]:
        call = str(uuid.uuid4())
        return {"account_sid": account, "call_sid": call, "stream_sid": call}

    def expected(self, action: str, account: str, call: str, destination: str) -> Expected:
        path = f"/v1/calls/{call}"
        if action == "validation":
            return Expected("GET", path)
        if action == "hangup":
            return Expected("PUT", path, {"action": "hangup"})
        ncco = [{"action": "connect", "endpoint": [{"type": "phone", "number": destination.lstrip("+")}]}]
        return Expected("PUT", path, {"action": "transfer", "destination": {"type": "ncco", "ncco": ncco}})


_CHANNELS = itertools.count(1)


@dataclass
class AsteriskKit(Kit):
    """chan_websocket and ARI: the stream names no account (the configuration is named by
    the v() parameter or is the organization's only one); the ARI user and password are
    the "account" and its secret; the hang-up is HANGUP on the socket."""

    provider: str = "asterisk"
    emulator: AriEmulator = field(default_factory=AriEmulator)
    hang_up_close: tuple[int, str] = (1000, "")  # no stop: Asterisk closes, we answer
    fields: tuple[str, str] = ("ari_username", "ari_password")
    account_in_stream: bool = False
    hangs_up_on_stream: bool = True
    not_json_reason: str = "expected 'MEDIA_START' event, got 'not'"  # read as plain text

    def make_account(self) -> tuple[str, str]:
        return "ari-" + secrets.token_hex(4), secrets.token_urlsafe(18)

    def config(self, account: str, secret: str) -> dict[str, Any]:
        return {"ari_url": f"{self.base_url}/ari", "ari_username": account, "ari_password": secret}

    def identity(self, account: str) -> dict[str, Any]:
        """Asterisk's channel ids: the epoch and a sequence number."""
        return {"account_sid": account, "call_sid": f"{int(time.time())}.{next(_CHANNELS)}",
                "stream_sid": str(uuid.uuid4())}

    def make_live(self, account: str, identity: dict[str, Any]) -> None:
        """The WebSocket channel and the caller's channel that dialed it."""
        self.emulator.add_call(account, self.call_id(identity))
        self.emulator.add_call(account, caller_channel(self.call_id(identity)))

    def stream_parameters(self, given: dict[str, str], call: SimulatedCall) -> dict[str, str]:
        return {"caller": caller_channel(call.call_sid), **given}

    def expected(self, action: str, account: str, call: str, destination: str) -> Expected:
        if action == "validation":
            return Expected("GET", f"/ari/channels/{call}", {})
        if action == "transfer":
            return Expected("POST", f"/ari/channels/{caller_channel(call)}/variable",
                            {"variable": "AGENT_STREAM_TRANSFER", "value": destination})
        raise AssertionError("Asterisk hangs up on the stream, with no request")

    def request_seen(self, request: Any) -> tuple[str, str, Any]:
        """ARI takes its parameters in the query: they are the body here."""
        return request.method, request.path, dict(parse_qsl(urlsplit(request.raw_path).query))


@dataclass
class ExotelKit(Kit):
    provider: str = "exotel"
    emulator: ExotelEmulator = field(default_factory=ExotelEmulator)
    encoding: str | None = "l16-8000"
    fields: tuple[str, str] = ("account_sid", "api_token")
    hangs_up_by_closing: bool = True
    no_transfer: str = NO_TRANSFER

    @staticmethod
    def api_key(token: str) -> str:
        """The API key paired with a token (one of each per account)."""
        return "key" + hashlib.sha256(token.encode()).hexdigest()[:24]

    def make_account(self) -> tuple[str, str]:
        return f"acme{len(self.accounts) + 1}{secrets.token_hex(3)}", secrets.token_hex(20)

    def new_account(self) -> tuple[str, str]:
        account, token = super().new_account()
        self.emulator.add_key(account, self.api_key(token))
        return account, token

    def config(self, account: str, secret: str) -> dict[str, Any]:
        return super().config(account, secret) | {"api_key": self.api_key(secret)}

    def secrets(self, secret: str) -> dict[str, str]:
        """The upgrade's HTTP Basic credentials."""
        return {"api_key": self.api_key(secret), "api_token": secret}

    def expected(self, action: str, account: str, call: str, destination: str) -> Expected:
        if action != "validation":
            raise AssertionError(f"Exotel is asked nothing to {action}")
        return Expected("GET", f"/v1/Accounts/{account}/Calls/{quote(call)}.json")


KITS: dict[str, type[Kit]] = {
    "cloudonix": CloudonixKit, "twilio": TwilioKit, "telnyx": TelnyxKit, "plivo": PlivoKit,
    "vonage": VonageKit,
    "asterisk": AsteriskKit, "exotel": ExotelKit,
}
