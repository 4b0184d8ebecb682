"""What the provider contract suite (test_providers.py) needs to know of each provider: its
emulator, a configuration's values, the identity a call of its account carries, and the
exact REST requests validation, hang-up and transfer make. One kit per provider; the suite
runs every scenario for each."""
from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from tests.cloudonix_emulator import CloudonixEmulator
from tests.provider_emulators import PlivoEmulator, RestEmulator, TelnyxEmulator, TwilioEmulator


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
    call_key: str = ""  # gathered_context key of the provider's call id
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

    # configuration ---------------------------------------------------------------------

    def new_account(self) -> tuple[str, str]:
        """A fresh account and its secret, known to the emulator."""
        raise NotImplementedError

    def config(self, account: str, secret: str) -> dict[str, Any]:
        """A configuration of that account, as the API takes it (without `provider`)."""
        raise NotImplementedError

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

    def make_live(self, account: str, identity: dict[str, Any]) -> None:
        raise NotImplementedError

    # what the API must receive ---------------------------------------------------------

    def validation(self, account: str, call: str) -> Expected:
        raise NotImplementedError

    def hangup(self, account: str, call: str) -> Expected:
        raise NotImplementedError

    def transfer(self, account: str, call: str, destination: str) -> Expected:
        raise NotImplementedError

    def requests(self) -> list[Any]:
        return list(self.emulator.requests)

    def request_seen(self, request: Any) -> tuple[str, str, Any]:
        """A recorded request as (method, path, body)."""
        return request.method, request.path, getattr(request, "body", getattr(request, "json", None))

    def refuse_all(self, status: int) -> None:
        self.emulator.status_override = status


@dataclass
class CloudonixKit(Kit):
    provider: str = "cloudonix"
    emulator: CloudonixEmulator = field(default_factory=CloudonixEmulator)
    call_key: str = "cloudonix_session"
    stream_key: str = "cloudonix_stream_sid"

    def new_account(self) -> tuple[str, str]:
        domain = f"d{len(self.accounts) + 1}-{secrets.token_hex(3)}.cloudonix.net"
        token = "cx-token-" + secrets.token_hex(12)
        self.accounts.append(domain)
        self.emulator.add_domain(domain, token)
        return domain, token

    def config(self, account: str, secret: str) -> dict[str, Any]:
        return {"domain_id": account, "bearer_token": secret}

    def call_id(self, identity: dict[str, Any]) -> str:
        return str(identity.get("session") or identity["call_sid"])

    def make_live(self, account: str, identity: dict[str, Any]) -> None:
        self.emulator.add_session(account, self.call_id(identity))

    def validation(self, account: str, call: str) -> Expected:
        return Expected("GET", f"/customers/self/domains/{account}/sessions/{call}")

    def hangup(self, account: str, call: str) -> Expected:
        return Expected("DELETE", f"/customers/self/domains/{account}/sessions/{call}")

    def transfer(self, account: str, call: str, destination: str) -> Expected:
        return Expected("POST", f"/calls/{account}/sessions/{call}/application",
                        {"cxml": f"<Response><Dial>{destination}</Dial></Response>"})

    def request_seen(self, request: Any) -> tuple[str, str, Any]:
        return request.method, request.path, request.json


@dataclass
class TwilioKit(Kit):
    provider: str = "twilio"
    emulator: RestEmulator = field(default_factory=TwilioEmulator)
    call_key: str = "twilio_call_id"
    stream_key: str = "twilio_stream_id"

    def new_account(self) -> tuple[str, str]:
        sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
        self.accounts.append(sid)
        self.emulator.add_account(sid, token)
        return sid, token

    def config(self, account: str, secret: str) -> dict[str, Any]:
        return {"account_sid": account, "auth_token": secret}

    def secrets(self, secret: str) -> dict[str, str]:
        return {"auth_token": secret}

    def make_live(self, account: str, identity: dict[str, Any]) -> None:
        self.emulator.add_call(account, self.call_id(identity))

    def _call_path(self, account: str, call: str) -> str:
        return f"/2010-04-01/Accounts/{account}/Calls/{quote(call)}.json"

    def validation(self, account: str, call: str) -> Expected:
        return Expected("GET", self._call_path(account, call))

    def hangup(self, account: str, call: str) -> Expected:
        return Expected("POST", self._call_path(account, call), {"Status": "completed"})

    def transfer(self, account: str, call: str, destination: str) -> Expected:
        return Expected("POST", self._call_path(account, call),
                        {"Twiml": f"<Response><Dial>{destination}</Dial></Response>"})


@dataclass
class TelnyxKit(Kit):
    provider: str = "telnyx"
    emulator: RestEmulator = field(default_factory=TelnyxEmulator)
    call_key: str = "telnyx_call_id"
    stream_key: str = "telnyx_stream_id"
    already_over: int = 422

    def new_account(self) -> tuple[str, str]:
        user_id, api_key = str(uuid.uuid4()), "KEY" + secrets.token_hex(20)
        self.accounts.append(user_id)
        self.emulator.add_account(user_id, api_key)
        return user_id, api_key

    def config(self, account: str, secret: str) -> dict[str, Any]:
        return {"api_key": secret, "account_id": account}

    def identity(self, account: str) -> dict[str, Any]:
        return {"account_sid": account, "call_sid": "v3:" + secrets.token_urlsafe(24),
                "stream_sid": str(uuid.uuid4())}

    def make_live(self, account: str, identity: dict[str, Any]) -> None:
        self.emulator.add_call(account, self.call_id(identity))

    def _call_path(self, call: str, *action: str) -> str:
        return "/".join(("/v2/calls", call, *action))

    def validation(self, account: str, call: str) -> Expected:
        return Expected("GET", self._call_path(call))

    def hangup(self, account: str, call: str) -> Expected:
        return Expected("POST", self._call_path(call, "actions", "hangup"), {})

    def transfer(self, account: str, call: str, destination: str) -> Expected:
        return Expected("POST", self._call_path(call, "actions", "transfer"), {"to": destination})


@dataclass
class PlivoKit(Kit):
    provider: str = "plivo"
    emulator: PlivoEmulator = field(default_factory=PlivoEmulator)
    call_key: str = "plivo_call_id"
    stream_key: str = "plivo_stream_id"
    hang_up_close: tuple[int, str] = (1000, "")  # no stop: Plivo closes, we answer
    names_configurations: bool = False

    def new_account(self) -> tuple[str, str]:
        alphabet = string.ascii_uppercase + string.digits
        auth_id = "MA" + "".join(secrets.choice(alphabet) for _ in range(18))
        token = secrets.token_urlsafe(30)
        self.accounts.append(auth_id)
        self.emulator.add_account(auth_id, token)
        return auth_id, token

    def config(self, account: str, secret: str) -> dict[str, Any]:
        return {"auth_id": account, "auth_token": secret}

    def identity(self, account: str) -> dict[str, Any]:
        return {"account_sid": account, "call_sid": str(uuid.uuid4()), "stream_sid": str(uuid.uuid4())}

    def make_live(self, account: str, identity: dict[str, Any]) -> None:
        self.emulator.add_call(account, self.call_id(identity))

    def _call_path(self, account: str, call: str) -> str:
        return f"/v1/Account/{account}/Call/{quote(call)}/"

    def validation(self, account: str, call: str) -> Expected:
        return Expected("GET", self._call_path(account, call) + "?status=live")

    def hangup(self, account: str, call: str) -> Expected:
        return Expected("DELETE", self._call_path(account, call))

    def transfer(self, account: str, call: str, destination: str) -> Expected:
        def one_time_url_to_the_dial(form: Any) -> None:
            assert isinstance(form, dict) and set(form) == {"legs", "aleg_url", "aleg_method"}
            assert (form["legs"], form["aleg_method"]) == ("aleg", "GET")
            fetched = [f for f in self.emulator.fetched if f.url == form["aleg_url"]]
            assert len(fetched) == 1 and fetched[0].status == 200, self.emulator.fetched
            assert "/api/v1/providers/plivo/transfer/" in fetched[0].url
            assert fetched[0].text == f"<Response><Dial><Number>{destination}</Number></Dial></Response>"

        return Expected("POST", self._call_path(account, call), check=one_time_url_to_the_dial)

    def request_seen(self, request: Any) -> tuple[str, str, Any]:
        """The path with its query: validation must ask for the live call."""
        return request.method, request.raw_path, request.body


KITS: dict[str, type[Kit]] = {
    "cloudonix": CloudonixKit, "twilio": TwilioKit, "telnyx": TelnyxKit, "plivo": PlivoKit,
}
