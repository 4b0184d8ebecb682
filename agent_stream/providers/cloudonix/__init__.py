"""Cloudonix (contract section 2.3): Twilio-compatible framing, the domain as the account,
a Bearer token for its REST API. The older URL form names the domain in its query."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final
from xml.sax.saxutils import quoteattr

from aiohttp import web

from ...audio import Codec
from ...errors import HandshakeError
from ...models import TelephonyConfig
from .. import base
from ..identifiers import is_domain_name
from ..twilio_style import MULAW_FORMAT, TwilioStyleCaller, TwilioStyleWire, read_connected_start
from .client import CloudonixControl, transfer_cxml
from .wire import parse_start

__all__ = ["CloudonixProvider", "normalize_domain", "parse_domain", "parse_start", "transfer_cxml"]

DOMAIN_SUFFIX: Final = ".cloudonix.net"


def normalize_domain(domain: str) -> str:
    """`acme` and `acme.cloudonix.net` name the same domain."""
    domain = domain.strip().lower().rstrip(".")
    if domain and not domain.endswith(DOMAIN_SUFFIX):
        domain += DOMAIN_SUFFIX
    return domain


def parse_domain(raw: str) -> str:
    """The normalized domain, or ValueError with what to fix: the one check of a domain id,
    for the API, the admin form and the stream."""
    domain = normalize_domain(raw)
    if not domain.removesuffix(DOMAIN_SUFFIX).strip("."):
        raise ValueError("Enter your Cloudonix domain, e.g. acme or acme.cloudonix.net.")
    if not is_domain_name(domain):
        raise ValueError("A domain has letters, digits, dots and dashes only.")
    return domain


class CloudonixProvider(base.Provider):
    name = "cloudonix"
    title = "Cloudonix"
    account_field = "domain_id"
    account_label = "domain"
    one_per_account = True
    default_api_base_url = "https://api.cloudonix.io"
    stand_in_account = "test-call.cloudonix.net"
    fields: ClassVar[tuple[base.ConfigField, ...]] = (
        base.ConfigField("domain_id", "Cloudonix domain", placeholder="acme or acme.cloudonix.net",
                         help="acme and acme.cloudonix.net are the same domain.", max_length=253,
                         missing="Enter your Cloudonix domain, e.g. acme or acme.cloudonix.net."),
        base.ConfigField("bearer_token", "Bearer token", secret=True, max_length=4096, noun="token",
                         missing="Paste the domain's bearer token (Cloudonix cockpit, API keys)."),
        base.ConfigField("application_name", "Application name", required=False),
    )

    def check_field(self, name: str, value: str) -> str:
        if name == "domain_id":
            return parse_domain(value)
        return super().check_field(name, value)

    def url_account(self, request: web.Request, newer_form: bool) -> str | None:
        """The older URL form names the domain in `Domain` and must; the path form takes it
        from `start.accountSid`."""
        if newer_form:
            return None
        domain = request.query.get("Domain")
        if not domain:
            raise HandshakeError("missing Domain")
        return self.checked_account(domain)

    def checked_account(self, account_id: str) -> str:
        try:
            return parse_domain(account_id)
        except ValueError:
            raise HandshakeError(f"malformed Domain {account_id[:40]!r}") from None

    async def read_start(self, given: base.HandshakeInput) -> base.CallStart:
        return parse_start(await read_connected_start(given))

    def wire(self, start: base.CallStart, *, log: base.LogAdapter) -> base.Wire:
        return TwilioStyleWire(start, log=log, stream_key="streamSid")

    def control(self, call: base.ControlContext) -> base.CallControl:
        return CloudonixControl(call)

    def webhook_log(self, request: web.Request, newer_form: bool, start: base.CallStart,
                    config: TelephonyConfig) -> dict[str, object]:
        domain = start.account_id if newer_form else request.query.get("Domain")
        return {"domain": domain, "normalized_domain": config.account_id}

    def caller(self, codec: Codec, secrets: Mapping[str, str] | None) -> base.CallerSide:
        return CloudonixCaller(codec, secrets)

    def snippets(self, stream_url: str, config: TelephonyConfig | None) -> list[base.Snippet]:
        """The Voice Application's CXML: the older URL form names the domain."""
        domain = config.account_id if config else "YOUR_DOMAIN.cloudonix.net"
        prefix, _, agent = stream_url.rpartition("/cloudonix/")
        query_form = f"{prefix}/{agent}?provider=cloudonix&Domain={domain}"
        return [
            base.Snippet("Stream URL", "text", query_form),
            base.Snippet("What your Voice Application answers (CXML)", "xml",
                         f"<Response><Connect><Stream url={quoteattr(query_form)}/></Connect></Response>",
                         label="CXML"),
            base.Snippet("Or the path form, which takes the domain from Cloudonix's start event",
                         "text", stream_url, label="path-form URL"),
        ]


class CloudonixCaller(TwilioStyleCaller):
    """Cloudonix's end of a stream: Twilio's framing, the domain as `accountSid`, the
    session token as `session`."""

    def start(self, who: base.CallerIdentity) -> dict[str, Any]:
        start: dict[str, Any] = {"streamSid": who.stream_id, "callSid": who.call_id}
        if who.session is not None:
            start["session"] = who.session
        start.update(
            accountSid=who.account_id, **{"from": who.caller, "to": who.called},
            tracks=["inbound"], customParameters=dict(who.custom_parameters),
            mediaFormat=MULAW_FORMAT,
        )
        return {"event": "start", "sequenceNumber": "1", "streamSid": who.stream_id, "start": start}
