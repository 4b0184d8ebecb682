"""The provider interface: everything Agent Stream needs from a telephony provider, and
nothing the rest of the service needs to know about one.

A provider says what its configuration holds (`fields`, the secret ones, the field the
stream's account id is matched against), reads its first messages into a neutral
`CallStart`, checks what it signs on the HTTP upgrade, speaks its wire format (`Wire`, a
pipecat serializer: media in its codec and rate, DTMF, playback marks, clear) and calls its
REST API for one call (`CallControl`: validate, hang up, transfer). The call lifecycle,
the pipeline, the recorder, the transcript and the engines only ever see this interface
and 16-bit PCM at `INTERNAL_RATE`.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Protocol

import aiohttp
from aiohttp import web
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

from .. import strict_json
from ..audio import Codec
from ..errors import HandshakeError, PeerClosed
from ..models import TelephonyConfig
from ..pipeline.frames import ProviderMarkFrame, StreamStopFrame
from .identifiers import IDENTIFIER_RULE, is_identifier

LogAdapter = logging.LoggerAdapter[logging.Logger] | logging.Logger

# What every call's pipeline, recording and transcript work in: 16-bit mono PCM at 8 kHz.
INTERNAL_RATE: Final = 8000
# The custom parameter (Twilio/Telnyx `customParameters`) that names a configuration.
CONFIG_PARAMETER: Final = "telephony_configuration"

# Reads the next text or binary message, waiting at most the given seconds.
NextMessage = Callable[[float], Awaitable[str | bytes]]


# -- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigField:
    """One field of a provider's telephony configuration, as the API and the admin show it."""

    name: str
    label: str
    secret: bool = False
    required: bool = True
    help: str = ""
    placeholder: str = ""
    multiline: bool = False  # a PEM key, say
    max_length: int = 200
    missing: str = ""  # what to say when a required field is left out
    noun: str = ""  # how "keep the saved ..." names a secret (its label, lower case)
    hint_shown: bool = True  # a secret's last four characters may be shown (not a PEM key)
    pattern: str = ""  # a regular expression the whole (stripped) value must match
    pattern_message: str = ""  # what to say when it does not

    @property
    def missing_message(self) -> str:
        return self.missing or f"Enter the {self.label.lower()}."


@dataclass(frozen=True)
class Problem:
    """What is wrong with one field: the API answers it, the admin shows it by the field."""

    field: str
    message: str


# -- a call's start ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallStart:
    """What a provider's first messages say about the call, in the same terms for all."""

    call_id: str  # the provider's id of the call: its REST URLs take it
    stream_id: str
    account_id: str | None  # whose the stream says it is: selects the configuration
    caller: str | None
    called: str | None
    custom_parameters: dict[str, str]
    codec: Codec  # what the provider sends, and so what it gets back
    fields: dict[str, Any]  # the start fields as they came (logs.inbound_webhook.start)
    gathered: dict[str, Any]  # the provider's ids the run keeps (gathered_context)


# -- the wire format ---------------------------------------------------------------------------


@dataclass
class ProtocolTally:
    """Frames we dropped, by kind, so the run can say what the peer did wrong."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str) -> bool:
        """Count one; True when it is the first of its kind (worth one log line)."""
        self.counts[kind] += 1
        return self.counts[kind] == 1


class Packetizer:
    """Outbound audio cut into messages of exactly `size` bytes, for providers that play
    nothing else (Vonage's 20 ms frames, multiples of Asterisk's optimal frame size,
    Exotel's 100 ms chunks). What is left before a mark or at the end is padded with the
    codec's silence; a clear drops it."""

    def __init__(self, size: int, silence: bytes) -> None:
        if size <= 0:
            raise ValueError("a packet holds at least one byte")
        self.size = size
        self._silence = silence
        self._pending = bytearray()

    def add(self, payload: bytes) -> list[bytes]:
        """The whole packets `payload` completes (the rest waits for the next call)."""
        self._pending += payload
        whole = len(self._pending) - len(self._pending) % self.size
        if not whole:
            return []
        packets = [bytes(self._pending[i:i + self.size]) for i in range(0, whole, self.size)]
        del self._pending[:whole]
        return packets

    def flush(self) -> bytes | None:
        """What is left, padded to a whole packet (None when nothing is)."""
        if not self._pending:
            return None
        packet = bytes(self._pending) + self._silence * (self.size - len(self._pending))
        self._pending.clear()
        return packet

    def drop(self) -> None:
        self._pending.clear()


class Wire(FrameSerializer):
    """A provider's media-stream framing for one call: decodes what it sends into pipeline
    frames (PCM at INTERNAL_RATE) and encodes pipeline output in the call's own codec.
    Malformed messages are counted and dropped, never fatal.

    Audio goes out one message per pipeline chunk (20 ms), unless the provider sets a
    `packetizer` in its constructor; then in messages of exactly its size, as chunks fill
    them (`audio_messages`). A
    provider that asks us to stop sending (Asterisk's MEDIA_XOFF) clears `may_send`; the
    output transport holds its audio until it is set again."""

    # Whether the peer shows the transcript as it happens (see transcript_message).
    shows_live_lines: ClassVar[bool] = False

    def __init__(self, start: CallStart, *, log: LogAdapter) -> None:
        super().__init__()
        self.start = start
        self.codec = start.codec
        self._log = log
        self.problems = ProtocolTally()
        self.media_frames = 0
        self.packetizer: Packetizer | None = None
        self.may_send = asyncio.Event()
        self.may_send.set()

    # what subclasses define

    @abstractmethod
    def media_message(self, payload: bytes) -> str | bytes:
        """One outbound message carrying `payload` (already in the call's codec)."""

    @abstractmethod
    def mark_message(self, name: str) -> str | bytes:
        """The playback marker queued behind audio: the provider acknowledges it once the
        audio before it has played."""

    @abstractmethod
    def clear_message(self) -> str | bytes:
        """Barge-in: drop whatever audio the provider still holds."""

    @abstractmethod
    def decode(self, data: str | bytes) -> Frame | None:
        """One inbound message to a frame, or None (counted) when it is not one."""

    # shared

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, AudioRawFrame):
            if self.packetizer is not None:  # one frame may make no message, or several
                raise TypeError("a packetizing wire's audio goes through audio_messages()")
            messages = self.audio_messages(frame.audio, frame.sample_rate)
            return messages[0] if messages else None
        if isinstance(frame, InterruptionFrame):
            if self.packetizer is not None:
                self.packetizer.drop()
            return self.clear_message()
        if isinstance(frame, (OutputTransportMessageFrame, OutputTransportMessageUrgentFrame)):
            return None if self.should_ignore_frame(frame) else json.dumps(frame.message)
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        return self.decode(data)

    def audio_messages(self, pcm: bytes, sample_rate: int) -> list[str | bytes]:
        """16-bit PCM from the pipeline to the outbound media messages it makes, in the
        call's codec: one, or as many whole packets as it completes."""
        if not pcm:
            return []
        payload = self.codec.encode(pcm, sample_rate)
        if self.packetizer is None:
            return [self.media_message(payload)]
        return [self.media_message(packet) for packet in self.packetizer.add(payload)]

    def transcript_message(self, role: str, text: str) -> str | bytes | None:
        """A live transcript line for a peer that shows one (`shows_live_lines`: the
        browser's test call): the agent's as it starts to play, the caller's as it is
        recognized. Other calls' transcripts have no listener at all."""
        return None

    def flush_messages(self) -> list[str | bytes]:
        """Before a mark: the packetizer's last, padded packet (it must play before the
        mark is reached)."""
        packet = self.packetizer.flush() if self.packetizer is not None else None
        return [self.media_message(packet)] if packet else []

    def audio_frame(self, payload: bytes) -> Frame | None:
        """An inbound payload in the call's codec to pipeline audio (empty: nothing)."""
        if not payload:
            return None
        self.media_frames += 1
        return InputAudioRawFrame(
            audio=self.codec.decode(payload), sample_rate=INTERNAL_RATE, num_channels=1
        )

    def media_frame(self, body: Any) -> Frame | None:
        """A `media` object's base64 `payload` to pipeline audio (counted when malformed)."""
        payload = body.get("payload") if isinstance(body, dict) else None
        if not isinstance(payload, str):
            self.problem("media without payload")
            return None
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self.problem("bad base64 payload")
            return None
        return self.audio_frame(audio)

    def dtmf_frame(self, digit: object) -> Frame | None:
        try:
            return InputDTMFFrame(KeypadEntry(str(digit)))
        except ValueError:
            self.problem("bad dtmf digit")
            return None

    def mark_echo(self, name: object) -> Frame | None:
        if not isinstance(name, str):
            self.problem("bad mark")
            return None
        return ProviderMarkFrame(mark=name)

    def stop_frame(self) -> Frame:
        return StreamStopFrame()

    def json_event(self, data: str | bytes) -> tuple[str, dict[str, Any]] | None:
        """A JSON text message as (event name, message), or None (counted) if it is not."""
        if not isinstance(data, str):
            self.problem("binary frame")
            return None
        try:
            message = strict_json.loads(data)
        except ValueError:
            self.problem("malformed JSON")
            return None
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            self.problem("malformed JSON")
            return None
        return message["event"], message

    def problem(self, kind: str) -> None:
        if self.problems.add(kind):
            self._log.warning("dropped provider message: %s (further ones are only counted)", kind)


class BinaryAudioWire(Wire):
    """A provider that streams audio as bare binary messages in the call's codec, in
    packets of exactly `packet_bytes`, and keeps text for control (Vonage, Asterisk, the
    browser)."""

    def __init__(self, start: CallStart, *, log: LogAdapter, packet_bytes: int) -> None:
        super().__init__(start, log=log)
        self.packetizer = Packetizer(packet_bytes, self.codec.silence(1))

    def media_message(self, payload: bytes) -> bytes:
        return payload

    def decode(self, data: str | bytes) -> Frame | None:
        if isinstance(data, bytes):
            return self.audio_frame(data)
        return self.decode_text(data)

    @abstractmethod
    def decode_text(self, data: str) -> Frame | None:
        """One inbound control message to a frame, or None (counted) when it is not one."""


# -- the REST API of one call --------------------------------------------------------------


class TransferUnsupported(Exception):
    """The provider offers no transfer of this call (Exotel, the browser): the call ends
    `transfer_unsupported`, and the message says why in the run."""


class CallActionFailed(Exception):
    """A hang-up or transfer that did not happen: the run fails with the message."""


class ProviderApiError(CallActionFailed):
    """A provider REST call answered with an error status."""

    def __init__(self, provider: str, action: str, status: int) -> None:
        super().__init__(f"{provider} {action} failed: HTTP {status}")
        self.status = status


class OneTimeTokens(Protocol):
    """Where a provider keeps a token for a URL of ours it fetches once (the store)."""

    async def create_one_time_token(
        self, purpose: str, payload: dict[str, Any], ttl_seconds: float
    ) -> str: ...


@dataclass(frozen=True)
class ControlContext:
    """What a call's REST client is made from."""

    http: aiohttp.ClientSession  # the app's shared session
    api_base_url: str
    config: TelephonyConfig = field(repr=False)  # holds the secrets
    start: CallStart
    timeout: float
    public_url: str  # with `tokens`, for URLs of ours a provider fetches (Plivo's transfer)
    tokens: OneTimeTokens
    # A text message on the call's own socket (Asterisk hangs up with a command there);
    # False when the socket is already closed.
    send_text: Callable[[str], Awaitable[bool]]
    # Told (operation, status) of every REST request: its HTTP status, or "timeout" or
    # "error" when none came (the metrics; nobody is told by default).
    api_requests: Callable[[str, str], None] = field(default=lambda _operation, _status: None)


class CallControl(ABC):
    """The provider's REST calls for one call, on the app's shared HTTP session. An answer
    meaning "the call is already over" counts as done."""

    title: ClassVar[str]
    # A status that means "the call is already over" (done, for a hang-up or a transfer).
    already_over: ClassVar[int | None] = None

    def __init__(self, call: ControlContext, *, headers: Mapping[str, str]) -> None:
        self._http = call.http
        self._timeout = aiohttp.ClientTimeout(total=call.timeout)
        self._headers = dict(headers)  # the credentials: never in a repr or a log line
        self._api_requests = call.api_requests

    @abstractmethod
    async def validate(self) -> None:
        """The call is live and belongs to the configured account, or a HandshakeError."""

    @abstractmethod
    async def hangup(self) -> int:
        """End the call; returns the HTTP status (0: done on the socket, no request).
        ProviderApiError when refused."""

    @abstractmethod
    async def transfer(self, destination: str) -> int:
        """Blind transfer to `destination`; returns the HTTP status (0: no request).
        TransferUnsupported where the provider offers none."""

    async def fetch_live_call(
        self, url: URL, *, params: Mapping[str, str] | None = None, read_json: bool = False
    ) -> Any:
        """GET the call's resource for validation: anything but a 200 is a 4400 naming
        the status; returns the parsed JSON body when asked for (a 4400 when the body is
        not JSON), else None."""
        try:
            async with self.request("GET", url, "validate", params=params) as response:
                status = response.status
                raw = await response.read() if read_json and status == 200 else b""
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self.unreachable(exc) from None
        if status != 200:
            raise self.validation_failed(status)
        if not read_json:
            return None
        try:
            return strict_json.loads(raw)
        except ValueError:
            raise HandshakeError(
                f"session validation failed: {self.title} answered 200 without JSON"
            ) from None

    async def act(self, method: str, url: URL, action: str, **body: Any) -> int:
        """One hang-up or transfer request (`body`: its `json` or `data`): its status, or
        ProviderApiError when it is a refusal."""
        async with self.request(method, url, action, **body) as response:
            return self.checked(response.status, action)

    @contextlib.asynccontextmanager
    async def request(
        self, method: str, url: URL, operation: str, **options: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Every request to the provider's API goes through here: with the configuration's
        credentials and the API timeout, and counted by its answer (`api_requests`)."""
        counted = False
        try:
            async with self._http.request(
                method, url, headers=self._headers, timeout=self._timeout, **options
            ) as response:
                counted = True
                self._api_requests(operation, str(response.status))
                yield response
        except TimeoutError:
            if not counted:
                self._api_requests(operation, "timeout")
            raise
        except aiohttp.ClientError:
            if not counted:
                self._api_requests(operation, "error")
            raise

    def checked(self, status: int, action: str) -> int:
        """A hang-up's or transfer's status, or ProviderApiError when it is a refusal."""
        if status >= 300 and status != self.already_over:
            raise ProviderApiError(self.title, action, status)
        return status

    def validation_failed(self, status: int) -> HandshakeError:
        return HandshakeError(f"session validation failed: {self.title} answered HTTP {status}")

    def unreachable(self, exc: BaseException) -> HandshakeError:
        if isinstance(exc, TimeoutError):
            return HandshakeError(f"session validation failed: {self.title} API timed out")
        return HandshakeError(
            f"session validation failed: {self.title} API unreachable ({type(exc).__name__})"
        )


# -- the provider itself --------------------------------------------------------------------


@dataclass(frozen=True)
class Snippet:
    """A ready-to-paste piece of the provider's own configuration, for the Settings page."""

    title: str
    language: str  # "xml", "json", "text"
    text: str
    label: str = "URL"  # what the Copy button says it copies ("CXML", "TwiML", ...)


@dataclass(frozen=True)
class HandshakeInput:
    """What a provider may look at to read a call's start: the upgrade request (Twilio
    signs it; Cloudonix's older URL form names the domain in its query) and the socket."""

    request: web.Request
    newer_form: bool
    next_message: NextMessage
    deadline: float  # loop time by which the first messages must have come


class Provider(ABC):
    """One telephony provider. Instances are stateless and shared by all calls."""

    name: ClassVar[str]
    title: ClassVar[str]
    fields: ClassVar[tuple[ConfigField, ...]]
    # The configuration field the stream's account id is matched against (None: the
    # stream carries none, and an organization's only configuration is used).
    account_field: ClassVar[str | None] = None
    account_label: ClassVar[str] = "account"
    # Whether an organization may have several configurations naming one account.
    one_per_account: ClassVar[bool] = False
    default_api_base_url: ClassVar[str] = ""
    # The account of the stand-in configuration a CLI test call uses when the organization
    # has none of this provider (it must pass `checked_account`).
    stand_in_account: ClassVar[str] = "test-call"
    # What the start event calls the account id (for the 4400 when it is malformed).
    start_account_key: ClassVar[str] = "account id"
    # What the CLI test call's loopback REST API answers about a live call.
    live_call_answer: ClassVar[Mapping[str, Any]] = {"status": "in-progress", "data": {"is_alive": True}}
    # What a simulated call may stream: a name (a test's or the CLI's) to (encoding, rate).
    caller_codecs: ClassVar[Mapping[str, tuple[str, int]]] = {"ulaw": ("ulaw", 8000)}
    # Other names stream URLs may use for it ("ari" for Asterisk).
    aliases: ClassVar[tuple[str, ...]] = ()
    # False for a provider that needs no stored configuration (the browser's test call).
    needs_configuration: ClassVar[bool] = True
    # The run's call_type.
    call_type: ClassVar[str] = "inbound"
    # The configuration field that holds the provider API's URL, where each configuration
    # names its own (Asterisk's ARI): a CLI test call points it at its loopback stand-in.
    api_url_field: ClassVar[str | None] = None

    # configuration

    def stand_in_fields(self, api_base_url: str) -> dict[str, str]:
        """The fields of the stand-in configuration a CLI test call uses, whose provider API
        is the loopback stand-in at `api_base_url` (a provider whose configurations name
        their own API URL, like Asterisk's ARI, points it there)."""
        return {self.account_field: self.stand_in_account} if self.account_field else {}

    def check_field(self, name: str, value: str) -> str:
        """A field's value as stored (stripped, matching the field's `pattern`), or
        ValueError with what to fix."""
        value = value.strip()
        spec = next(f for f in self.fields if f.name == name)
        if spec.pattern and not re.fullmatch(spec.pattern, value):
            raise ValueError(spec.pattern_message)
        return value

    def checked_account(self, account_id: str) -> str:
        """An account id a stream names, in the form configurations store it (a 4400
        naming `start_account_key` when it cannot be one)."""
        return identifier(account_id.strip(), self.start_account_key)

    def stand_in_secrets(self) -> dict[str, str]:
        """The secrets of the stand-in configuration a CLI test call uses (the loopback API
        takes anything; a provider that must sign with a real key makes one)."""
        return {f.name: f"test-call-{f.name}" for f in self.fields if f.secret and f.required}

    @property
    def secret_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.secret)

    # the call

    def url_account(self, request: web.Request, newer_form: bool) -> str | None:
        """An account id the stream URL carries (HandshakeError if the URL must and does not)."""
        return None

    @abstractmethod
    async def read_start(self, given: HandshakeInput) -> CallStart:
        """Read the provider's first messages; HandshakeError when they are missing, late
        or malformed."""

    def check_upgrade(  # noqa: B027 - most providers sign nothing: nothing to check
        self, request: web.Request, config: TelephonyConfig
    ) -> None:
        """What the provider signed or sent on the HTTP upgrade, checked against the
        configuration (HandshakeError when it does not match)."""

    @abstractmethod
    def wire(self, start: CallStart, *, log: LogAdapter) -> Wire:
        """The call's wire format."""

    @abstractmethod
    def control(self, call: ControlContext) -> CallControl:
        """The REST calls of one call."""

    # operators

    def webhook_log(
        self, request: web.Request, newer_form: bool, start: CallStart, config: TelephonyConfig
    ) -> dict[str, object]:
        """What identified the call, for the run's logs.inbound_webhook."""
        return {"account": start.account_id}

    @abstractmethod
    def snippets(self, stream_url: str, config: TelephonyConfig | None) -> list[Snippet]:
        """What to paste into the provider's own configuration to reach `stream_url`."""

    def caller_side(
        self, secrets: Mapping[str, str] | None = None, *, encoding: str | None = None
    ) -> CallerSide:
        """The provider's end of a stream, for a simulated call: with the configuration's
        secrets where the provider signs the upgrade, streaming `encoding` (a name of
        `caller_codecs`; the first when None)."""
        found = self.caller_codecs.get(encoding or next(iter(self.caller_codecs)))
        if found is None:
            raise ValueError(f"{self.title} streams {', '.join(self.caller_codecs)}, not {encoding!r}")
        return self.caller(Codec(*found), secrets)

    @abstractmethod
    def caller(self, codec: Codec, secrets: Mapping[str, str] | None) -> CallerSide:
        """The provider's end of a stream in `codec`."""

    def routes(self) -> list[web.RouteDef]:
        """Routes the provider needs on this server (Plivo's transfer XML)."""
        return []


def call_start(
    provider: str,
    start: dict[str, Any],
    *,
    call_id: str,
    stream_id: str,
    account_id: str | None,
    codec: Codec,
    custom_parameters: dict[str, str],
    fields: dict[str, Any] | None = None,
    numbers: Mapping[str, Any] | None = None,
) -> CallStart:
    """The CallStart of a start event: the caller and the called number from the `from`
    and `to` of `numbers` (the start event itself unless given), the provider's ids kept
    under its name."""
    numbers = start if numbers is None else numbers
    return CallStart(
        call_id=call_id,
        stream_id=stream_id,
        account_id=account_id,
        caller=text_field(numbers, "from"),
        called=text_field(numbers, "to"),
        custom_parameters=custom_parameters,
        codec=codec,
        fields=start if fields is None else fields,
        gathered={f"{provider}_call_id": call_id, f"{provider}_stream_id": stream_id},
    )


def text_field(message: Mapping[str, Any], key: str) -> str | None:
    """A start field as text, or None when absent or empty."""
    value = message.get(key)
    return str(value) if value not in (None, "") else None


async def receive_message(given: HandshakeInput, expected: str) -> str | bytes:
    """The next handshake message (the `expected` event, to be parsed), or the 4400 saying
    it did not come in time or the stream closed first."""
    try:
        return await given.next_message(max(given.deadline - time.monotonic(), 0.0))
    except TimeoutError:
        raise HandshakeError(f"timed out waiting for '{expected}' event") from None
    except PeerClosed:
        raise HandshakeError(f"stream closed before '{expected}' event") from None


async def receive_event(given: HandshakeInput, expected: str) -> dict[str, Any]:
    """The next handshake message as a JSON event named `expected`, or the 4400 why not."""
    return parse_event(await receive_message(given, expected), expected)


def parse_event(data: str | bytes, expected: str) -> dict[str, Any]:
    """Decode one handshake message; anything but the expected JSON event is a 4400."""
    if not isinstance(data, str):
        raise HandshakeError(f"expected a JSON text '{expected}' event, got a binary frame")
    try:
        message = strict_json.loads(data)
    except ValueError:
        raise HandshakeError(f"malformed '{expected}' event: not JSON") from None
    if not isinstance(message, dict):
        raise HandshakeError(f"malformed '{expected}' event: not a JSON object")
    event = message.get("event")
    if event != expected:
        raise HandshakeError(f"expected '{expected}' event, got {str(event)[:40]!r}")
    return message


def start_object(message: dict[str, Any]) -> dict[str, Any]:
    """The `start` object of a start event, or a 4400."""
    start = message.get("start")
    if not isinstance(start, dict):
        raise HandshakeError("malformed 'start' event: missing 'start' object")
    return start


def as_wss(url: str) -> str:
    """`url` over wss:// (Twilio, Telnyx and Plivo connect over nothing else)."""
    return "wss://" + url.partition("://")[2]


def check_basic_credentials(
    request: web.Request, user: str, password: str, *, missing: str, wrong: str
) -> None:
    """The upgrade's HTTP Basic credentials are `user` and `password` (compared in constant
    time; a malformed header matches nothing), or a 4400 saying `missing` or `wrong`. A
    configuration without a password matches no credentials at all."""
    scheme, _, encoded = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise HandshakeError(missing)
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        given = b""
    given_user, _, given_password = given.partition(b":")
    matches = hmac.compare_digest(given_user, user.encode())
    matches &= hmac.compare_digest(given_password, password.encode())
    if not (matches and password):
        raise HandshakeError(wrong)


def identifier(value: Any, name: str, *, event: str = "start") -> str:
    """A provider id from a first message: present, and fit for a URL path (4400 if not)."""
    if not isinstance(value, str) or not value:
        raise HandshakeError(f"malformed '{event}' event: missing {name}")
    if not is_identifier(value):
        raise HandshakeError(f"malformed '{event}' event: {name} must be {IDENTIFIER_RULE}")
    return value


# -- the provider's end, for simulated calls ----------------------------------------------------


@dataclass
class CallerIdentity:
    """Who a simulated call says it is, in the provider's first messages."""

    stream_id: str
    call_id: str
    account_id: str | None
    caller: str | None
    called: str | None
    session: str | None = None  # Cloudonix's session token, when it differs from the call id
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Heard:
    """One message the server sent, as the provider's end reads it."""

    kind: str  # "media", "mark", "clear" or "other"
    payload: bytes = b""  # the audio, in the call's codec
    name: str = ""  # a mark's name
    raw: Any = None  # the message (its JSON, for text)


class CallerSide(ABC):
    """The provider's end of a media stream, pure: what a simulated call (the tests, the
    benchmarks, the CLI test call) sends, and how it reads what the server answers."""

    # The WebSocket subprotocols the provider asks for on the upgrade (Asterisk: "media").
    subprotocols: ClassVar[tuple[str, ...]] = ()

    def __init__(self, codec: Codec, secrets: Mapping[str, str] | None = None) -> None:
        self.codec = codec  # what the simulated phone sends, and expects back
        self.secrets = dict(secrets or {})

    @abstractmethod
    def opening(self, who: CallerIdentity) -> list[str | bytes]:
        """The first messages, in order."""

    @abstractmethod
    def media(self, who: CallerIdentity, payload: bytes, *, sequence: int, chunk: int) -> str | bytes:
        """The `chunk`th frame of caller audio (`payload` in the codec, 20 ms)."""

    @abstractmethod
    def dtmf(self, who: CallerIdentity, digit: str, sequence: int) -> str | bytes:
        """A key the caller pressed."""

    @abstractmethod
    def played(self, who: CallerIdentity, name: str, sequence: int) -> str | bytes:
        """The acknowledgement that audio up to the marker `name` has played."""

    def cleared(self, who: CallerIdentity, sequence: int) -> str | bytes | None:
        """The answer to a clear, where the provider sends one (Plivo's clearedAudio)."""
        return None

    @abstractmethod
    def stop(self, who: CallerIdentity, sequence: int) -> str | bytes | None:
        """The caller hung up (None: the provider just closes the socket)."""

    def read(self, data: str | bytes) -> Heard | None:
        """A server message as the provider reads it (None: not a JSON object)."""
        if not isinstance(data, str):
            return self.heard_binary(data)
        try:
            message = json.loads(data)
        except ValueError:
            return None
        return self.heard(message) if isinstance(message, dict) else None

    @abstractmethod
    def heard(self, message: dict[str, Any]) -> Heard:
        """A server's JSON message as the provider reads it."""

    def heard_binary(self, data: bytes) -> Heard | None:
        """A server's binary message (audio, where the provider streams it so)."""
        return None

    def upgrade_headers(self, url: str) -> dict[str, str]:
        """Headers of the HTTP upgrade to `url` (a signature, a stream token)."""
        return {}

    def stream_url(self, url: str, call_id: str, custom_parameters: Mapping[str, str]) -> str:
        """The URL the provider dials for the call `call_id` (Asterisk appends its v()
        options, the custom parameters, as the query); most dial `url` as it is."""
        return url
