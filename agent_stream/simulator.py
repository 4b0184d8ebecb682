"""A simulated provider call: the provider's end of a media stream, in any provider's
framing (each provider's `CallerSide` says how it talks), for the tests, the benchmarks and
the CLI test call. Caller audio is given as 8 kHz mu-law (what `tone_ulaw` and
`silence_ulaw` make) and sent in the provider's own codec, 20 ms a frame."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import secrets
import sys
from array import array
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp

from . import audio
from .providers import DEFAULT_PROVIDER, provider_named
from .providers.base import CallerIdentity, CallerSide, Heard

SAMPLE_RATE: Final = 8000
FRAME_SECONDS: Final = 0.02
FRAME_BYTES: Final = 160  # 20 ms of 8 kHz mu-law
ULAW_SILENCE: Final = 0xFF
MAX_MSG_SIZE: Final = 16 * 1024 * 1024
STREAM_PATH: Final = "/api/v1/agent-stream"
WS_SCHEMES: Final = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def stream_url(
    base_url: str,
    agent_uuid: str,
    *,
    provider: str | None = DEFAULT_PROVIDER,
    domain: str | None = None,
    call_id: str | None = None,
    caller: str | None = None,
    called: str | None = None,
    newer_form: bool = False,
) -> str:
    """Build the URL a provider dials, in the old (query) or newer (path) form."""
    parts = urlsplit(base_url)
    scheme = WS_SCHEMES.get(parts.scheme)
    if scheme is None:
        raise ValueError(f"unsupported base URL scheme: {parts.scheme!r}")
    prefix = parts.path.rstrip("/") + STREAM_PATH
    if newer_form:
        if provider is None:
            raise ValueError("the newer form needs a provider")
        path = f"{prefix}/{quote(provider, safe='')}/{quote(agent_uuid, safe='')}"
        return urlunsplit((scheme, parts.netloc, path, "", ""))
    params = {"provider": provider, "Domain": domain, "callId": call_id, "from": caller, "to": called}
    query = urlencode({k: v for k, v in params.items() if v is not None})
    path = f"{prefix}/{quote(agent_uuid, safe='')}"
    return urlunsplit((scheme, parts.netloc, path, query, ""))


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Encode 16-bit little-endian PCM the way the phone network carries it."""
    return audio.pcm16_to_ulaw(pcm)


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """Decode provider audio into 16-bit little-endian PCM."""
    return audio.ulaw_to_pcm16(ulaw)


def tone_ulaw(seconds: float, freq: float = 440.0, amplitude: float = 0.3) -> bytes:
    """A sine tone at 8 kHz: audible, deterministic caller speech for tests."""
    count = int(round(seconds * SAMPLE_RATE))
    peak = int(amplitude * 32767)
    samples = array("h", (int(peak * math.sin(2 * math.pi * freq * n / SAMPLE_RATE)) for n in range(count)))
    if sys.byteorder == "big":
        samples.byteswap()
    return pcm16_to_ulaw(samples.tobytes())


def silence_ulaw(seconds: float) -> bytes:
    """Mu-law digital silence, as a quiet caller produces."""
    return bytes([ULAW_SILENCE]) * int(round(seconds * SAMPLE_RATE))


def _sid(prefix: str) -> str:
    """A random provider-style identifier."""
    return prefix + secrets.token_hex(16)


def caller_side(
    provider: str = DEFAULT_PROVIDER,
    secrets: Mapping[str, str] | None = None,
    *,
    encoding: str | None = None,
) -> CallerSide:
    """The end of a stream `provider` speaks (with the secrets it signs the upgrade with)."""
    found = provider_named(provider)
    if found is None:
        raise ValueError(f"no provider {provider!r}")
    return found.caller_side(secrets, encoding=encoding)


class SimulatedCall:
    """One provider-side call on an open WebSocket: sends framing, records what comes back."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        *,
        side: CallerSide | None = None,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        session: str | None = None,
        account_sid: str = "test-account",
        caller: str = "+15555550100",
        called: str = "+15555550199",
        custom_parameters: dict[str, str] | None = None,
    ) -> None:
        """Keep the socket and call identity; identifiers default to random ones."""
        self.ws = ws
        self.side = side or caller_side()
        self.stream_sid = stream_sid or _sid("MZ")
        self.call_sid = call_sid or _sid("CA")
        self.session = session if session is not None else self.call_sid
        self.account_sid = account_sid
        self.caller = caller
        self.called = called
        self.custom_parameters = dict(custom_parameters or {})
        self.received: list[Any] = []  # every server message, as JSON where it was text
        self.heard: list[Heard] = []  # the same, as the provider's end reads them
        self.echo_marks = True  # like a provider: echo each mark once its audio played
        self.close_code: int | None = None  # as the server's close frame said
        self.close_reason = ""
        self._sequence = 0
        self._chunk = 0
        self._next_frame_at: float | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def identity(self) -> CallerIdentity:
        return CallerIdentity(
            stream_id=self.stream_sid, call_id=self.call_sid, account_id=self.account_sid,
            caller=self.caller, called=self.called, session=self.session,
            custom_parameters=self.custom_parameters,
        )

    def _next_sequence(self) -> int:
        """Providers number every message after `connected`, starting at 1."""
        self._sequence += 1
        return self._sequence

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            await self.ws.send_bytes(message)
        else:
            await self.ws.send_str(message)

    async def send_json(self, obj: dict[str, Any]) -> None:
        """Send any event, including malformed ones a test wants to try."""
        await self.ws.send_str(json.dumps(obj))

    async def send_connected(self) -> None:
        """Send the provider's first message alone (for tests of what follows it)."""
        await self.send(self.side.opening(self.identity)[0])

    async def handshake(self) -> None:
        """Open the stream as the provider does (`connected`, then `start`, for most)."""
        for message in self.side.opening(self.identity):
            await self.send(message)
        self._sequence = max(self._sequence, 1)  # `start` was number 1

    async def send_audio(self, ulaw: bytes, *, realtime: bool = True) -> None:
        """Send caller audio (8 kHz mu-law) in 20 ms frames of the provider's codec, paced
        like a phone line unless told to hurry."""
        loop = asyncio.get_running_loop()
        start = max(self._next_frame_at or 0.0, loop.time())
        codec = self.side.codec
        frames = [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]
        for n, frame in enumerate(frames):
            if realtime:
                delay = start + n * FRAME_SECONDS - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            self._chunk += 1
            payload = frame if codec.encoding == "ulaw" and codec.rate == SAMPLE_RATE else (
                codec.encode(ulaw_to_pcm16(frame), SAMPLE_RATE)
            )
            await self.send(self.side.media(
                self.identity, payload, sequence=self._next_sequence(), chunk=self._chunk
            ))
        if realtime:
            self._next_frame_at = start + len(frames) * FRAME_SECONDS

    async def send_silence(self, seconds: float, *, realtime: bool = True) -> None:
        """Send a quiet caller, e.g. to trigger silence timeouts or end-of-turn."""
        await self.send_audio(silence_ulaw(seconds), realtime=realtime)

    async def press(self, digit: str) -> None:
        """Press a key on the caller's phone."""
        await self.send(self.side.dtmf(self.identity, digit, self._next_sequence()))

    async def mark(self, name: str) -> None:
        """Acknowledge a mark, as the provider does once audio before it has played."""
        await self.send(self.side.played(self.identity, name, self._next_sequence()))

    async def hang_up(self) -> None:
        """The caller hangs up: the provider's `stop`, or closing the socket where it has none."""
        stop = self.side.stop(self.identity, self._next_sequence())
        if stop is None:
            await self.ws.close()
        else:
            await self.send(stop)

    async def _answer_clear(self) -> None:
        """Like a provider that confirms a clear, where it sends such a confirmation."""
        answer = self.side.cleared(self.identity, self._next_sequence())
        if answer is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.send(answer)

    def start_reading(self) -> asyncio.Task[None]:
        """Read server messages in one background task so sends never block on reads."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_until_closed())
        return self._reader

    async def _read_until_closed(self) -> None:
        """Record what the server sends until it closes; answer its close frame."""
        while True:
            msg = await self.ws.receive()
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                heard = self.side.read(msg.data)
                if heard is None:
                    continue
                self.received.append(heard.raw)
                self.heard.append(heard)
                if self.echo_marks and heard.kind == "mark":
                    # the audio before it was paced in real time: it has just "played"
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await self.mark(heard.name)
                elif self.echo_marks and heard.kind == "clear":
                    await self._answer_clear()
            elif msg.type is aiohttp.WSMsgType.CLOSE:
                self.close_code, self.close_reason = msg.data, msg.extra or ""
                await self.ws.close()
                return
            elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                return

    async def wait_closed(self, timeout: float = 10.0) -> tuple[int | None, str]:
        """Wait for the server to end the call; return the close code and reason its close
        frame carried (the socket's own code can turn 1006 if the server drops the
        connection before our answering close frame reaches it)."""
        reader = self.start_reading()
        async with asyncio.timeout(timeout):
            await asyncio.shield(reader)
        if self.close_code is not None:
            return self.close_code, self.close_reason
        return self.ws.close_code, self.close_reason

    @property
    def received_media_bytes(self) -> int:
        """How much agent audio arrived, as 8 kHz mu-law would hold it (8000 a second)."""
        codec = self.side.codec
        width = 2 if codec.encoding == "l16" else 1
        total = sum(len(h.payload) for h in self.heard if h.kind == "media")
        return total * SAMPLE_RATE // (width * codec.rate)

    @property
    def marks(self) -> list[str]:
        """Names of marks the server asked to be acknowledged, in order."""
        return [h.name for h in self.heard if h.kind == "mark"]

    @property
    def clears(self) -> int:
        """How often the server cut playback (barge-in)."""
        return sum(1 for h in self.heard if h.kind == "clear")


async def connect(
    http: aiohttp.ClientSession,
    url: str,
    /,
    *,
    provider: str = DEFAULT_PROVIDER,
    secrets: Mapping[str, str] | None = None,
    encoding: str | None = None,
    **identity: Any,
) -> SimulatedCall:
    """Open the stream socket as `provider` would (signing the upgrade where it does) and
    wrap it in a SimulatedCall."""
    side = caller_side(provider, secrets, encoding=encoding)
    identity.setdefault("call_sid", _sid("CA"))  # the URL may carry it (Asterisk's v() options)
    url = side.stream_url(url, identity["call_sid"], identity.get("custom_parameters") or {})
    ws = await http.ws_connect(
        url, autoclose=False, autoping=True, max_msg_size=MAX_MSG_SIZE,
        headers=side.upgrade_headers(url), protocols=side.subprotocols,
    )
    return SimulatedCall(ws, side=side, **identity)
