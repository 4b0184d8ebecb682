"""A simulated provider call: speaks Cloudonix's Twilio-compatible media-stream framing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import secrets
import sys
from array import array
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp

from . import audio

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
    provider: str | None = "cloudonix",
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


def connected_event() -> dict[str, Any]:
    """The first message a provider sends once the socket is open."""
    return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start_event(
    *,
    stream_sid: str,
    call_sid: str,
    session: str | None,
    account_sid: str,
    caller: str,
    called: str,
    sequence: int = 1,
) -> dict[str, Any]:
    """The second message: call metadata and the audio format that follows."""
    start: dict[str, Any] = {"streamSid": stream_sid, "callSid": call_sid}
    if session is not None:
        start["session"] = session
    start.update(
        {
            "accountSid": account_sid,
            "from": caller,
            "to": called,
            "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1},
        }
    )
    return {"event": "start", "sequenceNumber": str(sequence), "streamSid": stream_sid, "start": start}


def _with_sequence(event: dict[str, Any], sequence: int | None) -> dict[str, Any]:
    """Add the provider's string sequence number when the caller tracks one."""
    if sequence is not None:
        event["sequenceNumber"] = str(sequence)
    return event


def media_event(
    stream_sid: str, ulaw: bytes, *, chunk: int, timestamp_ms: int, sequence: int | None = None
) -> dict[str, Any]:
    """One inbound audio frame, base64 mu-law as the provider sends it."""
    media = {
        "track": "inbound",
        "chunk": str(chunk),
        "timestamp": str(timestamp_ms),
        "payload": base64.b64encode(ulaw).decode("ascii"),
    }
    return _with_sequence({"event": "media", "streamSid": stream_sid, "media": media}, sequence)


def dtmf_event(stream_sid: str, digit: str, *, sequence: int | None = None) -> dict[str, Any]:
    """A key press by the caller."""
    event = {"event": "dtmf", "streamSid": stream_sid, "dtmf": {"track": "inbound_track", "digit": digit}}
    return _with_sequence(event, sequence)


def mark_event(stream_sid: str, name: str, *, sequence: int | None = None) -> dict[str, Any]:
    """The provider's acknowledgement that audio up to a named mark was played."""
    return _with_sequence({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}, sequence)


def stop_event(stream_sid: str, call_sid: str, *, sequence: int | None = None) -> dict[str, Any]:
    """The provider's notice that the caller hung up."""
    event = {"event": "stop", "streamSid": stream_sid, "stop": {"callSid": call_sid}}
    return _with_sequence(event, sequence)


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """Encode 16-bit little-endian PCM the way the phone network carries it."""
    return audio.pcm16_to_ulaw(pcm)


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """Decode provider audio into 16-bit little-endian PCM."""
    return audio.ulaw_to_pcm16(ulaw)


def tone_ulaw(seconds: float, freq: float = 440.0, amplitude: float = 0.3) -> bytes:
    """A sine tone at 8 kHz: audible, deterministic caller speech for tests."""
    count = int(round(seconds * SAMPLE_RATE))
    peak = amplitude * 32767
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


class SimulatedCall:
    """One provider-side call on an open WebSocket: sends framing, records what comes back."""

    def __init__(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        *,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        session: str | None = None,
        account_sid: str = "test.cloudonix.net",
        caller: str = "+15555550100",
        called: str = "+15555550199",
    ) -> None:
        """Keep the socket and call identity; identifiers default to random ones."""
        self.ws = ws
        self.stream_sid = stream_sid or _sid("MZ")
        self.call_sid = call_sid or _sid("CA")
        self.session = session if session is not None else self.call_sid
        self.account_sid = account_sid
        self.caller = caller
        self.called = called
        self.received: list[dict[str, Any]] = []
        self.echo_marks = True  # like a provider: echo each mark once its audio played
        self.close_code: int | None = None  # as the server's close frame said
        self.close_reason = ""
        self._sequence = 0
        self._chunk = 0
        self._next_frame_at: float | None = None
        self._reader: asyncio.Task[None] | None = None

    def _next_sequence(self) -> int:
        """Providers number every message after `connected`, starting at 1."""
        self._sequence += 1
        return self._sequence

    async def send_json(self, obj: dict[str, Any]) -> None:
        """Send any event, including malformed ones a test wants to try."""
        await self.ws.send_str(json.dumps(obj))

    async def send_connected(self) -> None:
        """Send the `connected` greeting."""
        await self.send_json(connected_event())

    async def send_start(self) -> None:
        """Send the `start` event with this call's identity."""
        await self.send_json(
            start_event(
                stream_sid=self.stream_sid,
                call_sid=self.call_sid,
                session=self.session,
                account_sid=self.account_sid,
                caller=self.caller,
                called=self.called,
                sequence=self._next_sequence(),
            )
        )

    async def handshake(self) -> None:
        """Open the stream as the provider does: `connected`, then `start`."""
        await self.send_connected()
        await self.send_start()

    async def send_audio(self, ulaw: bytes, *, realtime: bool = True) -> None:
        """Send caller audio in 20 ms frames, paced like a phone line unless told to hurry."""
        loop = asyncio.get_running_loop()
        start = max(self._next_frame_at or 0.0, loop.time())
        frames = [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]
        for n, frame in enumerate(frames):
            if realtime:
                delay = start + n * FRAME_SECONDS - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            self._chunk += 1
            timestamp_ms = (self._chunk - 1) * int(FRAME_SECONDS * 1000)
            await self.send_json(
                media_event(
                    self.stream_sid, frame, chunk=self._chunk, timestamp_ms=timestamp_ms,
                    sequence=self._next_sequence(),
                )
            )
        if realtime:
            self._next_frame_at = start + len(frames) * FRAME_SECONDS

    async def send_silence(self, seconds: float, *, realtime: bool = True) -> None:
        """Send a quiet caller, e.g. to trigger silence timeouts or end-of-turn."""
        await self.send_audio(silence_ulaw(seconds), realtime=realtime)

    async def press(self, digit: str) -> None:
        """Press a key on the caller's phone."""
        await self.send_json(dtmf_event(self.stream_sid, digit, sequence=self._next_sequence()))

    async def mark(self, name: str) -> None:
        """Acknowledge a mark, as the provider does once audio before it has played."""
        await self.send_json(mark_event(self.stream_sid, name, sequence=self._next_sequence()))

    async def hang_up(self) -> None:
        """Send `stop`, as the provider does when the caller hangs up."""
        await self.send_json(stop_event(self.stream_sid, self.call_sid, sequence=self._next_sequence()))

    def start_reading(self) -> asyncio.Task[None]:
        """Read server messages in one background task so sends never block on reads."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_until_closed())
        return self._reader

    async def _read_until_closed(self) -> None:
        """Record JSON events until the server closes; answer its close frame."""
        while True:
            msg = await self.ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:
                    event = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    self.received.append(event)
                    if self.echo_marks and event.get("event") == "mark":
                        # the audio before it was paced in real time: it has just "played"
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await self.mark(str(event.get("mark", {}).get("name", "")))
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
        """How much agent audio arrived, in mu-law bytes (8000 per second)."""
        return sum(
            len(base64.b64decode(e.get("media", {}).get("payload", "")))
            for e in self.received
            if e.get("event") == "media"
        )

    @property
    def marks(self) -> list[str]:
        """Names of marks the server asked to be acknowledged, in order."""
        return [e.get("mark", {}).get("name", "") for e in self.received if e.get("event") == "mark"]

    @property
    def clears(self) -> int:
        """How often the server cut playback (barge-in)."""
        return sum(1 for e in self.received if e.get("event") == "clear")


async def connect(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> SimulatedCall:
    """Open the stream socket as the provider would and wrap it in a SimulatedCall."""
    ws = await session.ws_connect(url, autoclose=False, autoping=True, max_msg_size=MAX_MSG_SIZE)
    return SimulatedCall(ws, **kwargs)
