"""A local OpenAI-compatible server, so LLM-mode and speech-provider tests exercise real
HTTP and real server-sent events instead of mocks.

Chat: each test queues the answers the "model" gives, in order: streamed text, a tool call
(with optional text before it), or an error status. Every request is recorded with its
messages and tools, and the bearer API key is checked like a real endpoint checks it.

Speech: /v1/audio/transcriptions records each upload (a WAV file and its form fields) and
answers the next scripted transcript; /v1/audio/speech answers raw 24 kHz 16-bit PCM of a
tone, `SPEECH_SECONDS` long whatever the text, so a test can tell its audio from espeak's.
"""
from __future__ import annotations

import asyncio
import io
import json
import math
import struct
import wave
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODEL = "emulated-model"
SPEECH_RATE = 24000
SPEECH_SECONDS = 1.5
TONE_HZ = 440.0


@dataclass(frozen=True)
class Answer:
    """One scripted completion: text chunks (`pause` seconds apart), then tool calls
    `(name, arguments)`; or an HTTP error `status`."""

    chunks: tuple[str, ...] = ()
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    status: int = 200
    pause: float = 0.0


def text(*chunks: str, pause: float = 0.0) -> Answer:
    """A plain streamed reply, delivered in exactly these chunks."""
    return Answer(chunks=chunks, pause=pause)


def tool_call(name: str, arguments: dict[str, Any] | None = None, *chunks: str) -> Answer:
    """A reply that calls one function (after saying `chunks`, if any)."""
    return Answer(chunks=chunks, tool_calls=((name, arguments or {}),))


def failure(status: int) -> Answer:
    """The endpoint answers this HTTP error instead of a completion."""
    return Answer(status=status)


@dataclass
class ChatRequest:
    """What the app asked for: the parsed JSON body and whether the key was right."""

    body: dict[str, Any]
    authorized: bool

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def system(self) -> str:
        first = self.messages[0] if self.messages else {}
        return str(first.get("content")) if first.get("role") == "system" else ""

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.body.get("tools") or []]

    def tool(self, name: str) -> dict[str, Any]:
        return next(t["function"] for t in self.body.get("tools") or [] if t["function"]["name"] == name)


@dataclass
class Upload:
    """One transcription request: the form fields, the WAV's rate and frames, the key."""

    fields: dict[str, str]
    sample_rate: int
    frames: int
    authorized: bool


@dataclass
class SpeechRequest:
    """One speech request: the JSON body and whether the key was right."""

    body: dict[str, Any]
    authorized: bool


def tone_pcm(seconds: float = SPEECH_SECONDS, rate: int = SPEECH_RATE) -> bytes:
    """A steady tone, 16-bit mono PCM: audio nobody would mistake for speech."""
    count = int(seconds * rate)
    return struct.pack(f"<{count}h", *(
        int(8000 * math.sin(2 * math.pi * TONE_HZ * i / rate)) for i in range(count)))


@dataclass
class OpenAIEmulator:
    """POST /v1/chat/completions with `stream: true`, answering from `answers`."""

    api_key: str
    answers: deque[Answer] = field(default_factory=deque)
    requests: list[ChatRequest] = field(default_factory=list)
    transcripts: deque[str] = field(default_factory=deque)
    uploads: list[Upload] = field(default_factory=list)
    speech_requests: list[SpeechRequest] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def answer(self, *answers: Answer) -> None:
        """Queue what the model says next, in order."""
        self.answers.extend(answers)

    async def wait_for_requests(self, count: int, timeout: float = 15.0) -> ChatRequest:
        """Until `count` requests have arrived; returns the latest."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.requests) >= count), timeout
            )
        return self.requests[-1]

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)
        return app

    def transcribe(self, *texts: str) -> None:
        """Queue what the next uploads "said", in order."""
        self.transcripts.extend(texts)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        fields = {k: str(v) for k, v in form.items() if k != "file"}
        if not isinstance(upload, web.FileField):
            return _error(400, "no file uploaded", "invalid_file")
        with wave.open(io.BytesIO(upload.file.read())) as wav:
            rate, frames = wav.getframerate(), wav.getnframes()
        authorized = self._authorized(request)
        self.uploads.append(Upload(fields, rate, frames, authorized))
        if not authorized:
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        text = self.transcripts.popleft() if self.transcripts else ""
        return web.json_response({"text": text})

    async def _speech(self, request: web.Request) -> web.Response:
        body = await request.json()
        authorized = self._authorized(request)
        self.speech_requests.append(SpeechRequest(body, authorized))
        if not authorized:
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        if body.get("response_format") != "pcm":
            return _error(400, "this emulator only answers pcm", "unsupported")
        return web.Response(body=tone_pcm(), content_type="application/octet-stream")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        authorized = request.headers.get("Authorization") == f"Bearer {self.api_key}"
        async with self._arrived:
            self.requests.append(ChatRequest(body, authorized))
            self._arrived.notify_all()
        if not authorized:
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        if not body.get("stream"):
            return _error(400, "this emulator only streams", "unsupported")
        if not self.answers:
            return _error(400, "the test scripted no answer for this request", "no_answer")
        answer = self.answers.popleft()
        if answer.status != 200:
            return _error(answer.status, "scripted failure", "scripted")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in _chunks(answer, body.get("model") or MODEL):
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if answer.pause and chunk["choices"][0]["delta"].get("content"):
                await asyncio.sleep(answer.pause)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _chunks(answer: Answer, model: str) -> list[dict[str, Any]]:
    """The stream of `chat.completion.chunk` objects for one answer, as OpenAI sends them."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-emulated", "object": "chat.completion.chunk", "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": piece}) for piece in answer.chunks]
    for index, (name, arguments) in enumerate(answer.tool_calls):
        encoded = json.dumps(arguments)
        half = len(encoded) // 2  # arguments arrive in fragments
        out.append(chunk({"tool_calls": [{
            "index": index, "id": f"call_{index}", "type": "function",
            "function": {"name": name, "arguments": encoded[:half]},
        }]}))
        out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": encoded[half:]}}]}))
    out.append(chunk({}, "tool_calls" if answer.tool_calls else "stop"))
    return out


def _error(status: int, message: str, code: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}},
        status=status,
    )


async def start_openai_emulator(aiohttp_server: Any, api_key: str) -> tuple[OpenAIEmulator, str]:
    """Serve a fresh emulator; returns it and its base URL (ending in /v1, like OpenAI's)."""
    emulator = OpenAIEmulator(api_key)
    server = await aiohttp_server(emulator.make_app())
    return emulator, str(server.make_url("/v1"))
