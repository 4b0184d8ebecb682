"""Local stand-ins for Deepgram's prerecorded /v1/listen and ElevenLabs' text-to-speech,
so their adapters are tested over real HTTP: each checks its vendor's key header, records
the request, and answers a scripted transcript or a tone in the 8 kHz mu-law asked for."""
from __future__ import annotations

import io
import wave
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from agent_stream.simulator import tone_ulaw

VOICE_SECONDS = 1.2


@dataclass
class VendorRequest:
    """One request: its path, query, key check, and the WAV rate or JSON body sent."""

    path: str
    query: dict[str, str]
    authorized: bool
    sample_rate: int = 0
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class SpeechVendorsEmulator:
    deepgram_key: str
    elevenlabs_key: str
    transcripts: deque[str] = field(default_factory=deque)
    listens: list[VendorRequest] = field(default_factory=list)
    voices: list[VendorRequest] = field(default_factory=list)

    def transcribe(self, *texts: str) -> None:
        self.transcripts.extend(texts)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/listen", self._listen)
        app.router.add_post("/v1/text-to-speech/{voice}", self._speak)
        return app

    async def _listen(self, request: web.Request) -> web.Response:
        authorized = request.headers.get("Authorization") == f"Token {self.deepgram_key}"
        with wave.open(io.BytesIO(await request.read())) as wav:
            rate = wav.getframerate()
        self.listens.append(VendorRequest(request.path, dict(request.query), authorized, rate))
        if not authorized:
            return web.json_response({"err_code": "INVALID_AUTH"}, status=401)
        text = self.transcripts.popleft() if self.transcripts else ""
        return web.json_response({"results": {"channels": [
            {"alternatives": [{"transcript": text, "confidence": 0.99}]}]}})

    async def _speak(self, request: web.Request) -> web.Response:
        authorized = request.headers.get("xi-api-key") == self.elevenlabs_key
        self.voices.append(VendorRequest(
            request.path, dict(request.query), authorized, body=await request.json()))
        if not authorized:
            return web.json_response({"detail": {"status": "invalid_api_key"}}, status=401)
        if request.query.get("output_format") != "ulaw_8000":
            return web.json_response({"detail": "unsupported format"}, status=400)
        return web.Response(body=tone_ulaw(VOICE_SECONDS), content_type="audio/basic")


async def start_speech_vendors(
    aiohttp_server: Any, deepgram_key: str, elevenlabs_key: str
) -> tuple[SpeechVendorsEmulator, str]:
    """Serve a fresh emulator; returns it and its base URL (no /v1, like the vendors')."""
    emulator = SpeechVendorsEmulator(deepgram_key, elevenlabs_key)
    server = await aiohttp_server(emulator.make_app())
    return emulator, str(server.make_url("")).rstrip("/")
