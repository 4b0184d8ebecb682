"""Cloudonix: domain rules, the connected/start handshake, session validation, the REST
calls an agent needs (hangup, transfer) and the Twilio-compatible media serializer."""
from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from xml.sax.saxutils import escape

import aiohttp
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    AudioRawFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.serializers.base_serializer import FrameSerializer
from yarl import URL

from .. import audio, strict_json
from ..errors import HandshakeError, PeerClosed
from ..models import TelephonyConfig
from ..pipeline.frames import ProviderMarkFrame, StreamStopFrame
from .identifiers import IDENTIFIER_RULE, api_url, is_domain_name, is_identifier

log = logging.getLogger(__name__)

PROVIDER: Final = "cloudonix"
DOMAIN_SUFFIX: Final = ".cloudonix.net"
SAMPLE_RATE: Final = 8000
HANGUP_DONE_STATUSES: Final = frozenset({200, 204, 404})


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


# -- pure wire format --------------------------------------------------------------------


@dataclass(frozen=True)
class StartInfo:
    """What the `start` event tells us about the call."""

    stream_sid: str
    call_sid: str
    session: str
    account_sid: str | None
    caller: str | None
    called: str | None
    media_format: dict[str, Any]
    raw: dict[str, Any]


def parse_event(text: str | bytes, expected: str) -> dict[str, Any]:
    """Decode one handshake message; anything but the expected JSON event is a 4400."""
    if not isinstance(text, str):
        raise HandshakeError(f"expected a JSON text '{expected}' event, got a binary frame")
    try:
        message = strict_json.loads(text)
    except ValueError:
        raise HandshakeError(f"malformed '{expected}' event: not JSON") from None
    if not isinstance(message, dict):
        raise HandshakeError(f"malformed '{expected}' event: not a JSON object")
    event = message.get("event")
    if event != expected:
        raise HandshakeError(f"expected '{expected}' event, got {str(event)[:40]!r}")
    return message


def parse_start(message: Mapping[str, Any]) -> StartInfo:
    """Check a `start` event: streamSid and callSid are required, session defaults to callSid."""
    start = message.get("start")
    if not isinstance(start, dict):
        raise HandshakeError("malformed 'start' event: missing 'start' object")
    stream_sid = start.get("streamSid") or message.get("streamSid")
    call_sid = start.get("callSid")
    if not isinstance(stream_sid, str) or not stream_sid:
        raise HandshakeError("malformed 'start' event: missing streamSid")
    if not isinstance(call_sid, str) or not call_sid:
        raise HandshakeError("malformed 'start' event: missing callSid")
    session = start.get("session") or call_sid
    if not isinstance(session, str):
        raise HandshakeError("malformed 'start' event: session must be a string")
    for name, value in (("streamSid", stream_sid), ("callSid", call_sid), ("session", session)):
        if not is_identifier(value):
            raise HandshakeError(f"malformed 'start' event: {name} must be {IDENTIFIER_RULE}")
    media_format = start.get("mediaFormat") or {}
    if not isinstance(media_format, dict):
        raise HandshakeError("malformed 'start' event: mediaFormat must be an object")
    encoding = media_format.get("encoding", "audio/x-mulaw")
    rate = media_format.get("sampleRate", SAMPLE_RATE)
    if encoding != "audio/x-mulaw" or rate != SAMPLE_RATE:
        raise HandshakeError(f"unsupported media format {encoding} at {rate} Hz (need 8 kHz mu-law)")

    def text(key: str) -> str | None:
        value = start.get(key)
        return str(value) if value not in (None, "") else None

    return StartInfo(
        stream_sid=stream_sid,
        call_sid=call_sid,
        session=session,
        account_sid=text("accountSid"),
        caller=text("from"),
        called=text("to"),
        media_format=media_format,
        raw=start,
    )


def transfer_cxml(destination: str) -> str:
    """The CXML that makes Cloudonix dial the destination (blind transfer)."""
    return f"<Response><Dial>{escape(destination)}</Dial></Response>"


# -- REST client -------------------------------------------------------------------------


class CloudonixClient:
    """The Cloudonix REST calls of one call, on the app's shared HTTP session."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        config: TelephonyConfig,
        *,
        timeout: float,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._domain = config.domain_id
        self._headers = {"Authorization": f"Bearer {config.bearer_token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"<CloudonixClient domain={self._domain}>"  # never the token

    def _session_url(self, session: str) -> URL:
        return api_url(self._base, "customers", "self", "domains", self._domain, "sessions", session)

    async def validate_session(self, session: str) -> None:
        """200 means the call is live on this domain; anything else is a 4400."""
        try:
            async with self._http.get(
                self._session_url(session), headers=self._headers, timeout=self._timeout
            ) as response:
                status = response.status
        except TimeoutError:
            raise HandshakeError("session validation failed: Cloudonix API timed out") from None
        except aiohttp.ClientError as exc:
            raise HandshakeError(
                f"session validation failed: Cloudonix API unreachable ({type(exc).__name__})"
            ) from None
        if status != 200:
            raise HandshakeError(f"session validation failed: Cloudonix answered HTTP {status}")

    async def hangup(self, session: str) -> int:
        """End the call; 200, 204 and 404 (already gone) all mean done. Returns the status."""
        async with self._http.delete(
            self._session_url(session), headers=self._headers, timeout=self._timeout
        ) as response:
            if response.status not in HANGUP_DONE_STATUSES:
                raise ProviderApiError("hangup", response.status)
            return response.status

    async def transfer(self, session: str, destination: str) -> int:
        """Blind transfer: replace the call's application with a Dial to `destination`."""
        async with self._http.post(
            api_url(self._base, "calls", self._domain, "sessions", session, "application"),
            headers=self._headers,
            json={"cxml": transfer_cxml(destination)},
            timeout=self._timeout,
        ) as response:
            if response.status >= 300:
                raise ProviderApiError("transfer", response.status)
            return response.status


class ProviderApiError(Exception):
    """A provider REST call answered with an error status."""

    def __init__(self, action: str, status: int) -> None:
        super().__init__(f"Cloudonix {action} failed: HTTP {status}")
        self.status = status


# -- handshake ----------------------------------------------------------------------------


@dataclass
class Handshake:
    """Everything the call needs once Cloudonix has identified and validated it."""

    start: StartInfo
    domain: str
    client: CloudonixClient
    elapsed_ms: float = 0.0


ConfigLookup = Callable[[str], Awaitable[TelephonyConfig | None]]
NextMessage = Callable[[float], Awaitable[str | bytes]]


async def find_config(lookup: ConfigLookup, domain: str | None) -> TelephonyConfig:
    """The stored configuration for `domain`, or the 4400 the contract names."""
    if not domain:
        raise HandshakeError("missing Domain")
    try:
        normalized = parse_domain(domain)
    except ValueError:
        raise HandshakeError(f"malformed Domain {domain[:40]!r}") from None
    config = await lookup(normalized)
    if config is None:
        raise HandshakeError(f"no Cloudonix telephony configuration for domain {normalized}")
    if not config.bearer_token:
        raise HandshakeError(f"Cloudonix configuration for {config.domain_id} has no bearer token")
    return config


async def handshake(
    *,
    next_message: NextMessage,
    lookup: ConfigLookup,
    url_domain: str | None,
    newer_form: bool,
    http: aiohttp.ClientSession,
    api_base_url: str,
    handshake_timeout: float,
    api_timeout: float,
) -> Handshake:
    """connected, start, configuration by domain, then session validation: or a 4400.

    The old URL form names the domain in the query, so its configuration is checked before
    any event is read; the newer form learns it from `start.accountSid`.
    """
    began = time.monotonic()
    config = None if newer_form else await find_config(lookup, url_domain)
    deadline = began + handshake_timeout

    async def receive(expected: str) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        try:
            return parse_event(await next_message(max(remaining, 0.0)), expected)
        except TimeoutError:
            raise HandshakeError(f"timed out waiting for '{expected}' event") from None
        except PeerClosed:
            raise HandshakeError(f"stream closed before '{expected}' event") from None

    await receive("connected")
    start = parse_start(await receive("start"))
    if config is None:
        config = await find_config(lookup, start.account_sid)
    client = CloudonixClient(http, api_base_url, config, timeout=api_timeout)
    await client.validate_session(start.session)
    return Handshake(
        start=start,
        domain=config.domain_id,
        client=client,
        elapsed_ms=(time.monotonic() - began) * 1000,
    )


# -- media serializer ---------------------------------------------------------------------


@dataclass
class ProtocolTally:
    """Frames we dropped, by kind, so the run can say what the peer did wrong."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str) -> bool:
        """Count one; True when it is the first of its kind (worth one log line)."""
        self.counts[kind] += 1
        return self.counts[kind] == 1


class CloudonixSerializer(FrameSerializer):
    """Twilio-compatible framing: media, dtmf, mark, stop in; media, mark, clear out."""

    def __init__(
        self,
        stream_sid: str,
        *,
        sample_rate: int = SAMPLE_RATE,
        log: logging.Logger | logging.LoggerAdapter = log,  # type: ignore[type-arg]
    ) -> None:
        super().__init__()
        self._stream_sid = stream_sid
        self._log = log
        self._sample_rate = sample_rate
        self.problems = ProtocolTally()
        self.media_frames = 0

    async def serialize(self, frame: Frame) -> str | None:
        if isinstance(frame, AudioRawFrame):
            return self.media_message(frame.audio, frame.sample_rate)
        if isinstance(frame, InterruptionFrame):
            return json.dumps({"event": "clear", "streamSid": self._stream_sid})
        if isinstance(frame, (OutputTransportMessageFrame, OutputTransportMessageUrgentFrame)):
            return None if self.should_ignore_frame(frame) else json.dumps(frame.message)
        return None

    def mark_frame(self, name: str) -> OutputTransportMessageFrame:
        """A mark queued behind the audio before it: the provider echoes it once played."""
        return OutputTransportMessageFrame(
            message={"event": "mark", "streamSid": self._stream_sid, "mark": {"name": name}}
        )

    def media_message(self, pcm: bytes, sample_rate: int) -> str | None:
        """16-bit PCM at `sample_rate` to one outbound media event of 8 kHz mu-law."""
        if not pcm:
            return None
        if sample_rate != SAMPLE_RATE:
            pcm = audio.resample(pcm, sample_rate, SAMPLE_RATE)
        payload = base64.b64encode(audio.pcm16_to_ulaw(pcm)).decode()
        return json.dumps(
            {"event": "media", "streamSid": self._stream_sid, "media": {"payload": payload}}
        )

    async def deserialize(self, data: str | bytes) -> Frame | None:
        """One provider message to a frame; bad ones are counted and dropped, not fatal."""
        if not isinstance(data, str):
            self._problem("binary frame")
            return None
        try:
            message = strict_json.loads(data)
        except ValueError:
            self._problem("malformed JSON")
            return None
        if not isinstance(message, dict):
            self._problem("malformed JSON")
            return None
        event = message.get("event")
        body = message.get(event) if isinstance(event, str) else None
        if event == "media":
            return self._media(body)
        if event == "dtmf":
            digit = body.get("digit") if isinstance(body, dict) else None
            try:
                return InputDTMFFrame(KeypadEntry(str(digit)))
            except ValueError:
                self._problem("bad dtmf digit")
                return None
        if event == "mark":
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str):
                self._problem("bad mark")
                return None
            return ProviderMarkFrame(mark=name)
        if event == "stop":
            return StreamStopFrame()
        if event in ("connected", "start"):
            self._problem(f"repeated {event} event")
            return None
        self._problem("unknown event")
        return None

    def _media(self, body: Any) -> Frame | None:
        payload = body.get("payload") if isinstance(body, dict) else None
        if not isinstance(payload, str):
            self._problem("media without payload")
            return None
        try:
            ulaw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self._problem("bad base64 payload")
            return None
        if not ulaw:
            return None
        pcm = audio.resample(audio.ulaw_to_pcm16(ulaw), SAMPLE_RATE, self._sample_rate)
        self.media_frames += 1
        return InputAudioRawFrame(audio=pcm, sample_rate=self._sample_rate, num_channels=1)

    def _problem(self, kind: str) -> None:
        if self.problems.add(kind):
            self._log.warning("dropped provider message: %s (further ones are only counted)", kind)


