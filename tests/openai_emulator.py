"""A local OpenAI-compatible chat completions server, so LLM-mode tests exercise real HTTP
and real server-sent events instead of mocks.

Each test queues the answers the "model" gives, in order: streamed text, a tool call (with
optional text before it), or an error status. Every request is recorded with its messages
and tools, and the bearer API key is checked like a real endpoint checks it.
"""
from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODEL = "emulated-model"


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
class OpenAIEmulator:
    """POST /v1/chat/completions with `stream: true`, answering from `answers`."""

    api_key: str
    answers: deque[Answer] = field(default_factory=deque)
    requests: list[ChatRequest] = field(default_factory=list)
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
        return app

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
