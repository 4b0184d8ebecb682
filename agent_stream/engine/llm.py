"""The LLM engine: an OpenAI-compatible chat model (OpenAI, Groq, Ollama, vLLM, llama.cpp)
drives the conversation through pipecat's OpenAI LLM service.

- The system context is the workflow's global prompt plus the current node's prompt, with
  `{{vars}}` filled in. Entering a node says its `say` verbatim first, if it has one; a
  node with only a prompt lets the model speak first.
- The model moves the call on with one function per outgoing edge (`go_to_<node>`,
  described by the edge's condition or phrases), and ends it with `end_call` or
  `transfer_call` (only to destinations the workflow names, never one the model makes up).
- Replies stream in; each complete sentence is synthesized and queued as its own
  utterance behind its own mark, so the caller hears the first sentence while the model
  is still writing the next, and a barge-in stops the stream along with the audio.
- Caller turns: with no STT provider configured, the embedded recognizer decodes speech
  against a grammar of every edge phrase of the workflow, so the model only ever hears
  those phrases. Keys are given to the model as "(caller pressed 1)", or, when the
  current node has an edge for that digit, followed at once without asking the model.

The service is asked for one streamed completion per caller turn (its streaming API, not
a pipeline of its own): the caller's turns, the marks and barge-in already live in this
one processor, and a nested pipeline would only relay them.
"""
from __future__ import annotations

import asyncio
import functools
import re
import ssl
from dataclasses import dataclass, field
from typing import Any, Final

import httpx2
import openai
from openai import AsyncStream
from openai.types.chat import ChatCompletionChunk
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

from .. import strict_json
from ..pipeline.transcript import Utterance
from ..workflow import LLMEndpoint
from . import Edge, Node, render
from .base import GOODBYE, NOT_UNDERSTOOD, VoiceAgent

PHONE_GUIDANCE: Final = (
    "You are speaking with a caller on the phone. Answer in short spoken sentences, "
    "without lists, markdown or emoji. Use the functions to move the conversation on, "
    "to transfer the caller or to end the call."
)
APOLOGY: Final = "Sorry, I'm having technical trouble. Please call again later."
END_CALL: Final = "end_call"
TRANSFER_CALL: Final = "transfer_call"
GO_TO_PREFIX: Final = "go_to_"
# How long the endpoint may take to connect, and to send each next piece of a reply.
LLM_CONNECT_TIMEOUT: Final = 5.0
LLM_READ_TIMEOUT: Final = 20.0
LLM_RETRIES: Final = 1
# Replies in a row without the caller speaking (a node with only a prompt makes the model
# speak on entry; a model moving through such nodes must stop somewhere).
MAX_CHAINED_REPLIES: Final = 4
# Endpoints that need no key (Ollama, llama.cpp) still get one, so the OpenAI client
# never falls back to an OPENAI_API_KEY from the environment and sends it elsewhere.
NO_API_KEY: Final = "no-key"
_NAME_RE: Final = re.compile(r"[^A-Za-z0-9_-]")


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The process's TLS client context; one is safe to share between connections."""
    return httpx2.create_ssl_context()


class ChatEndpoint(OpenAILLMService):
    """pipecat's OpenAI-compatible service, asked for one streamed completion at a time
    with a system instruction of our choosing (it changes with every node)."""

    def __init__(self, endpoint: LLMEndpoint) -> None:
        super().__init__(
            api_key=endpoint.api_key or NO_API_KEY,
            base_url=endpoint.base_url,
            settings=OpenAILLMService.Settings(model=endpoint.model),
        )

    def create_client(
        self,
        api_key: Any = None,
        base_url: Any = None,
        organization: Any = None,
        project: Any = None,
        default_headers: Any = None,
        **_: Any,
    ) -> openai.AsyncOpenAI:
        """A voice call cannot wait OpenAI's default ten minutes, nor through three tries;
        and the TLS context (its CA bundle takes ~30 ms to load) is shared, not per call."""
        return openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=httpx2.Timeout(LLM_READ_TIMEOUT, connect=LLM_CONNECT_TIMEOUT),
            max_retries=LLM_RETRIES,
            http_client=openai.DefaultAsyncHttpxClient(verify=_tls_context()),
        )

    async def completion(
        self, context: LLMContext, system: str
    ) -> AsyncStream[ChatCompletionChunk]:
        """Start one streamed chat completion of `context` under `system`."""
        adapter = self.get_llm_adapter()
        params = await adapter.get_llm_invocation_params(
            context, system_instruction=system,
            convert_developer_to_user=not self.supports_developer_role,
        )
        stream: AsyncStream[ChatCompletionChunk] = await self._client.chat.completions.create(
            **self.build_chat_completion_params(params)
        )
        return stream

    async def close(self) -> None:
        await self._client.close()


@dataclass
class ToolCall:
    id: str
    name: str = ""
    arguments: str = ""

    def parsed_arguments(self) -> dict[str, Any]:
        try:
            value = strict_json.loads(self.arguments or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass
class Reply:
    """One streamed completion as far as it got: what was said and what was called."""

    sentences: list[str] = field(default_factory=list)
    last: Utterance | None = None
    calls: list[ToolCall] = field(default_factory=list)
    error: str | None = None  # why the endpoint gave no reply, safe to log

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def tool_name(node_id: str) -> str:
    """`go_to_<node id>`, within what function names may hold (letters, digits, _ and -)."""
    return (GO_TO_PREFIX + _NAME_RE.sub("_", node_id))[:64]


def describe(edge: Edge) -> str:
    """What the model reads to judge an edge: its condition, else its phrases and digit."""
    if edge.condition:
        return edge.condition
    parts = []
    if edge.phrases:
        parts.append("the caller says " + " or ".join(f'"{p}"' for p in edge.phrases))
    if edge.dtmf:
        parts.append(f"the caller presses {edge.dtmf}")
    return " or ".join(parts) or f"the conversation should move on to {edge.target}"


def llm_error(exc: BaseException) -> str:
    """Why the endpoint failed, without anything it echoed back (OpenAI's 401 body quotes
    part of the key)."""
    if isinstance(exc, openai.APIStatusError):
        hint = " (check the API key)" if exc.status_code in (401, 403) else ""
        return f"the LLM endpoint answered HTTP {exc.status_code}{hint}"
    if isinstance(exc, openai.APITimeoutError):
        return "the LLM endpoint timed out"
    if isinstance(exc, openai.APIConnectionError):
        return "could not connect to the LLM endpoint"
    return f"the LLM reply failed: {type(exc).__name__}"


class LLMAgent(VoiceAgent):
    """Lets a chat model walk one workflow for one call."""

    def __init__(self, *, endpoint: LLMEndpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._llm = ChatEndpoint(endpoint)
        self._history: list[dict[str, Any]] = []
        # Every phrase of the workflow: what the grammar recognizer can hear in LLM mode.
        self._phrases = tuple(dict.fromkeys(
            p for node in self._workflow.nodes.values() for p in node.phrases))
        self._destinations = tuple(dict.fromkeys(
            n.destination for n in self._workflow.nodes.values()
            if n.kind == "transfer" and n.destination))
        self._streaming: asyncio.Task[None] | None = None
        self._chained = 0  # replies since the caller last spoke or pressed a key
        self._calls = 0
        self._log.info("LLM engine: model %r at %s", endpoint.model, endpoint.host)

    # -- turns ---------------------------------------------------------------------------

    async def _entered(self, node: Node, utterance: Utterance | None) -> None:
        """The node's `say` is what the agent said; a node with only a prompt lets the
        model speak first (a few times in a row at most, without the caller speaking)."""
        if utterance is not None:
            self._history.append({"role": "assistant", "content": utterance.text})
            self._listen_after(utterance)
        elif (node.prompt or self._workflow.global_prompt) and self._chained < MAX_CHAINED_REPLIES:
            await self._respond()
        else:
            self._listen_after(None)

    async def _heard_speech(self, audio: bytes, start_ms: int, end_ms: int) -> None:
        text = await self._stt.recognize(audio, self._phrases) if self._phrases else None
        async with self._lock:
            if self._finished:
                return
            self._transcript.caller_said(text or "(not understood)", start_ms, end_ms)
            self._log.info("caller said %r", text)
            if not text:
                self._listen_after(await self._say(NOT_UNDERSTOOD, self._node.interruptible))
                return
            self._history.append({"role": "user", "content": text})
            self._chained = 0
            await self._respond()

    async def _heard_digit(self, digit: str) -> None:
        async with self._lock:
            if self._finished:
                return
            at = self._transcript.now_ms()
            self._transcript.caller_said(f"(pressed {digit})", at, at)
            self._history.append({"role": "user", "content": f"(caller pressed {digit})"})
            self._chained = 0
            edge = next((e for e in self._node.edges if e.dtmf == digit), None)
            if edge is not None:
                await self._enter(self._workflow.nodes[edge.target])
            else:
                await self._respond()

    def _reprompt(self) -> str:
        return ""

    # -- the model -----------------------------------------------------------------------

    def _system(self) -> str:
        parts = (self._workflow.global_prompt, self._node.prompt)
        rendered = [render(p, self._context).strip() for p in parts]
        return "\n\n".join([*(p for p in rendered if p), PHONE_GUIDANCE])

    def _tools(self) -> tuple[list[FunctionSchema], dict[str, Node]]:
        """One function per outgoing edge, then end_call and transfer_call."""
        tools: list[FunctionSchema] = []
        targets: dict[str, Node] = {}
        descriptions: dict[str, list[str]] = {}
        for edge in self._node.edges:
            name = tool_name(edge.target)
            while name in targets and targets[name].id != edge.target:  # "a.b" and "a_b"
                name = f"{name[:60]}_{len(targets)}"
            descriptions.setdefault(name, []).append(describe(edge))
            targets[name] = self._workflow.nodes[edge.target]
        for name, said in descriptions.items():
            description = f"Take this step when {'; or when '.join(said)}."
            tools.append(FunctionSchema(name, description, properties={}, required=[]))
        tools.append(FunctionSchema(
            END_CALL, "Hang up: the conversation is over. Say goodbye before calling it.",
            properties={}, required=[]))
        if self._destinations:
            tools.append(FunctionSchema(
                TRANSFER_CALL, "Transfer the caller to a person.",
                properties={"destination": {
                    "type": "string", "enum": list(self._destinations),
                    "description": "Where to transfer; the usual one when left out.",
                }},
                required=[]))
        return tools, targets

    async def _respond(self) -> None:
        """Ask the model, speak its reply sentence by sentence, then do what it called."""
        self._chained += 1
        tools, targets = self._tools()
        messages: list[Any] = list(self._history)
        context = LLMContext(messages=messages, tools=ToolsSchema(standard_tools=tools))
        reply = Reply()
        streaming = self._streaming = self._spawn(
            self._stream(context, self._system(), reply), "LLM reply", awaited=True
        )
        await asyncio.wait({streaming})
        self._streaming = None
        if streaming.cancelled():  # barge-in: the caller's next turn takes over
            self._remember(reply, with_calls=False)
            return
        failed = streaming.exception()
        if reply.error is not None or failed is not None:
            await self._fail(reply.error or llm_error(failed or Exception()))
            return
        self._remember(reply, with_calls=True)
        call = reply.calls[0] if reply.calls else None
        if call is not None and call.name in targets:
            self._log.info("model called %s", call.name)
            await self._wait_played(reply.last)
            await self._enter(targets[call.name])
        elif call is not None and call.name == END_CALL:
            self._log.info("model called %s", END_CALL)
            last = reply.last or await self._say(GOODBYE, False)
            await self._wait_played(last)
            await self._end("agent_hangup")
        elif call is not None and call.name == TRANSFER_CALL and self._destinations:
            self._log.info("model called %s", TRANSFER_CALL)
            wanted = call.parsed_arguments().get("destination")
            destination = wanted if wanted in self._destinations else self._usual_destination()
            await self._wait_played(reply.last)
            node = next(n for n in self._workflow.nodes.values()
                        if n.kind == "transfer" and n.destination == destination)
            await self._enter(node)
        else:
            if call is not None:
                self._log.info("model called unknown function %r", call.name[:64])
            self._listen_after(reply.last)

    async def _stream(self, context: LLMContext, system: str, reply: Reply) -> None:
        """Read one streamed completion; every complete sentence is spoken as it arrives."""
        self._calls += 1
        sentences = SimpleTextAggregator()  # type: ignore[no-untyped-call]
        calls: dict[int, ToolCall] = {}
        try:
            stream = await self._llm.completion(context, system)
            async with stream:
                async for chunk in stream:
                    if not chunk.choices:
                        continue
                    delta = chunk.choices[0].delta
                    if delta is None:
                        continue
                    for part in delta.tool_calls or ():
                        call = calls.setdefault(
                            part.index, ToolCall(part.id or f"call_{self._calls}_{part.index}"))
                        if part.function and part.function.name:
                            call.name += part.function.name
                        if part.function and part.function.arguments:
                            call.arguments += part.function.arguments
                    if delta.content:
                        async for sentence in sentences.aggregate(delta.content):
                            await self._speak(sentence.text, reply)
        except (openai.OpenAIError, httpx2.HTTPError) as exc:
            reply.error = llm_error(exc)
            return
        rest = await sentences.flush()
        if rest is not None:
            await self._speak(rest.text, reply)
        reply.calls = [calls[i] for i in sorted(calls) if calls[i].name]

    async def _speak(self, sentence: str, reply: Reply) -> None:
        sentence = sentence.strip()
        if sentence:
            reply.last = await self._say(sentence, self._node.interruptible) or reply.last
            reply.sentences.append(sentence)

    def _remember(self, reply: Reply, *, with_calls: bool) -> None:
        """The reply goes into the history as far as it was said, with its calls answered."""
        calls = reply.calls if with_calls else []
        if not reply.text and not calls:
            return
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments or "{}"}}
                for c in calls
            ]
        self._history.append(message)
        for index, call in enumerate(calls):
            result = "done" if index == 0 else "ignored: only the first call is carried out"
            self._history.append({"role": "tool", "tool_call_id": call.id, "content": result})

    def _usual_destination(self) -> str:
        """The transfer node this node leads to, else the workflow's first."""
        for edge in self._node.edges:
            target = self._workflow.nodes[edge.target]
            if target.kind == "transfer" and target.destination:
                return target.destination
        return self._destinations[0]

    async def _fail(self, reason: str) -> None:
        """No reply: apologise, hang up, and let the run say why it failed."""
        self._log.warning("LLM failed: %s", reason)
        self._actions.failure = f"LLM failed: {reason}"
        await self._say(APOLOGY, False, wait=True)
        await self._end("llm_error")

    # -- interruptions and the end ---------------------------------------------------------

    async def _interrupted(self) -> None:
        if self._streaming is not None:
            self._streaming.cancel()

    async def _closing(self) -> None:
        await self._llm.close()
