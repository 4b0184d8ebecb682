"""The Agent Stream WebSocket endpoint and the lifecycle of one call (contract section 2).

One `Call` object per socket. Only its handler task reads the socket; the pipeline's
output transport is the only writer of media. Every failure is a typed `StreamError`
carrying its close code and reason, and the run is finished in `finally`, whatever happens.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuidlib
from collections.abc import MutableMapping
from dataclasses import dataclass, replace
from typing import Any, Final

import aiohttp
from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from .config import Settings
from .engine import Workflow as EngineWorkflow
from .engine.base import VoiceAgent
from .engine.llm import LLMAgent
from .engine.scripted import ScriptedAgent
from .errors import (
    GOING_AWAY,
    NORMAL_CLOSURE,
    SERVER_FAILURE,
    DatabaseUnavailable,
    HandshakeError,
    MessageTooBig,
    PeerClosed,
    RoutingError,
    StreamError,
    UnsupportedProvider,
    clip_reason,
)
from .keys import CALLS, HTTP, RUN_WRITES, SETTINGS, SPEECH, STORE
from .memory import CallGarbage
from .models import Workflow
from .pipeline.call import CallPipeline, let_live_calls_run
from .pipeline.frames import StreamStopFrame
from .providers import SUPPORTED_PROVIDERS, UNSUPPORTED_PROVIDERS, cloudonix
from .run_writes import RunRecord
from .security import short_uuid
from .speech.providers import ProviderRecognizer, ProviderSynthesizer, recognizer, synthesizer
from .store import Store
from .workflow import llm_endpoint, speech_provider, validate_definition

log = logging.getLogger(__name__)

# A live call sends media every 20 ms; this much silence on the socket means a dead peer.
MEDIA_IDLE_TIMEOUT: Final = 30.0
WATCHDOG_PERIOD: Final = 5.0
# How long we wait for the provider to answer our close frame.
CLOSE_TIMEOUT: Final = 2.0


@dataclass(frozen=True)
class Outcome:
    """How a call that got through the handshake ended."""

    end_reason: str
    close_code: int
    close_reason: str
    state: str = "completed"
    error: str | None = None


# Until something better is known: our own failure.
SERVER_ERROR: Final = Outcome(
    "server_error", SERVER_FAILURE, "internal server error", "failed", "internal server error"
)


class StreamSocket(web.WebSocketResponse):
    """aiohttp closes oversized frames with 1009 and no reason; ours always says why."""

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message:
            message = b"message too big"
        return await super().close(code=code, message=message, drain=drain)


class CallLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Every line of a call carries its run id and the shortened agent uuid."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"[{self.extra['call']}] {msg}", kwargs  # type: ignore[index]


class CallRegistry:
    """Live calls of the process, so shutdown can close them and wait for their runs."""

    def __init__(self) -> None:
        self.calls: set[Call] = set()
        self.accepting = True
        self.garbage = CallGarbage()

    def add(self, call: Call) -> None:
        self.calls.add(call)

    def discard(self, call: Call) -> None:
        """A call ended; if it ran a pipeline, its garbage is collected now or later (see
        memory.py). Refused and failed connections leave little and do not count."""
        self.calls.discard(call)
        if call.ran_pipeline:
            self.garbage.call_ended(live_calls=len(self.calls))

    async def shutdown(self, grace: float) -> None:
        """Stop taking streams, close live ones with 1001, wait for their runs to finish."""
        self.accepting = False
        calls = list(self.calls)
        if not calls:
            return
        log.info("closing %d live call(s) for shutdown", len(calls))
        await asyncio.gather(*(call.shut_down() for call in calls), return_exceptions=True)
        await asyncio.wait([asyncio.ensure_future(c.finished.wait()) for c in calls], timeout=grace)


class Call:
    """One provider media stream, from accept to the finished run."""

    def __init__(self, request: web.Request, ws: StreamSocket, accepted_at: float) -> None:
        self.request = request
        self.ws = ws
        self.settings: Settings = request.app[SETTINGS]
        self.store: Store = request.app[STORE]
        self.agent_uuid = request.match_info["agent_uuid"]
        self.newer_form = "provider" in request.match_info
        provider = request.match_info.get("provider") or request.query.get("provider") or ""
        self.provider = provider.strip().lower()
        self.accepted_at = accepted_at
        self.finished = asyncio.Event()
        self.shutting_down = False
        self.handshake: cloudonix.Handshake | None = None
        self._workflow: Workflow | None = None
        self.context: dict[str, Any] = {}
        self.ended_by_us: Outcome | None = None  # set when the agent or a watchdog ends it
        self.ran_pipeline = False
        self._last_message_at = 0.0
        self.agent_gathered: dict[str, Any] = {}
        self._speech_providers: list[ProviderRecognizer | ProviderSynthesizer] = []
        self.log = CallLog(log, {"call": f"agent {short_uuid(self.agent_uuid)}"})

    async def shut_down(self) -> None:
        """Server shutdown: close the socket; the handler task notices and ends the run."""
        self.shutting_down = True
        await self.close_socket(GOING_AWAY, "server shutting down")

    # -- lifecycle ---------------------------------------------------------------------

    async def handle(self) -> None:
        """The whole life of the call. Nothing escapes it: whatever happens after the `101`,
        the socket gets a close frame with a code and a reason, and a run that was created
        ends with its reason (see run_writes.py for a database that refuses the write)."""
        try:
            record = await self._open_run()
            if record is not None:
                await self._run(record)
        except asyncio.CancelledError:
            await self.close_socket(GOING_AWAY, "server shutting down")
            raise
        except Exception:
            self.log.exception("call failed")
            await self.close_socket(SERVER_FAILURE, "internal server error")
        finally:
            self.finished.set()

    async def _open_run(self) -> RunRecord | None:
        """Steps 1-3, or the close that refuses the call (no run is created)."""
        try:
            return await self._route()
        except RoutingError as exc:
            await self._reject(exc)
        except DatabaseUnavailable as exc:
            self.log.warning("refused with %d: %s", SERVER_FAILURE, exc)
            await self.close_socket(SERVER_FAILURE, str(exc))
        return None

    async def _route(self) -> RunRecord:
        """Steps 1-3: provider, workflow, quota and the new run (or a 1008, no run)."""
        if not self.provider:
            raise RoutingError("missing provider")
        if self.provider not in SUPPORTED_PROVIDERS | UNSUPPORTED_PROVIDERS:
            raise RoutingError(f"unknown provider {self.provider[:32]!r}")
        workflow = await self._find_workflow()
        owner = await self.store.get_user(workflow.owner_user_id)
        self._workflow = workflow
        return await RunRecord.create(  # raises QuotaExceeded, a RoutingError
            self.store,
            self.request.app[RUN_WRITES],
            workflow,
            owner,
            retry_seconds=self.settings.run_write_retry_seconds,
            mode=self.provider,
            initial_context=self._initial_context(),
            gathered_context=self._gathered_context(),
            logs={"inbound_webhook": self._webhook_log()},
        )

    async def _find_workflow(self) -> Workflow:
        try:
            uuidlib.UUID(self.agent_uuid)
        except ValueError:
            raise RoutingError("workflow not found") from None
        workflow = await self.store.find_stream_workflow(self.agent_uuid, include_archived=True)
        if workflow is None:
            raise RoutingError("workflow not found")
        if workflow.status == "archived":
            self._workflow = workflow  # the refusal is shown in that agent's Runs tab
            raise RoutingError("workflow not found")
        return workflow

    def _initial_context(self) -> dict[str, Any]:
        query = self.request.query
        context: dict[str, Any] = {"provider": self.provider, "direction": "inbound"}
        if not self.newer_form:
            context["caller_number"] = query.get("from")
            context["called_number"] = query.get("to")
        return context

    def _gathered_context(self) -> dict[str, Any]:
        if self.newer_form:
            return {}
        call_id = self.request.query.get("callId") or self.request.query.get("CallSid")
        return {"call_id": call_id} if call_id else {}

    def _webhook_log(self) -> dict[str, Any]:
        domain = None if self.newer_form else self.request.query.get("Domain")
        return {"domain": domain, "url_form": "path" if self.newer_form else "query"}

    async def _reject(self, exc: RoutingError) -> None:
        """A 1008: no run, but a rejection operators can see (if the database takes it)."""
        workflow = self._workflow
        self.log.warning("rejected with %d: %s", exc.code, exc.reason)
        try:
            await self.store.add_rejection(
                provider=self.provider or None,
                agent_uuid_short=short_uuid(self.agent_uuid),
                code=exc.code,
                reason=exc.reason,
                workflow_id=workflow.id if workflow else None,
                organization_id=workflow.organization_id if workflow else None,
            )
        except DatabaseUnavailable as unavailable:
            self.log.warning("the rejection is not recorded: %s", unavailable)
        await self.close_socket(exc.code, exc.reason)

    async def _run(self, record: RunRecord) -> None:
        """Steps 4-5: running, handshake, media; the run always ends, whatever happens."""
        run = record.run
        self.log.extra = {"call": f"run {run.name} agent {short_uuid(self.agent_uuid)}"}
        pipeline: CallPipeline | None = None
        serializer: cloudonix.CloudonixSerializer | None = None
        actions: ProviderActions | None = None
        outcome = SERVER_ERROR
        try:
            if self.provider in UNSUPPORTED_PROVIDERS:
                raise UnsupportedProvider(f"provider '{self.provider}' is not supported yet")
            running_ms = round((time.monotonic() - self.accepted_at) * 1000, 1)
            await record.running({"timing": {"accept_to_running_ms": running_ms}})
            self.log.info("running (%.1f ms after accept)", running_ms)
            handshake = await self._handshake(record)
            serializer = cloudonix.CloudonixSerializer(handshake.start.stream_sid, log=self.log)
            recording_path = self.settings.recordings_dir / f"{run.id}.wav"
            pipeline = CallPipeline(self.ws, serializer, recording_path)
            await let_live_calls_run()
            actions = ProviderActions(self, handshake)
            agent = self._agent(pipeline, actions)
            await let_live_calls_run()
            await pipeline.start(agent)
            self.ran_pipeline = True
            outcome = await self._stream_media(pipeline, serializer)
        except StreamError as exc:
            outcome = self._failed(exc)
        except asyncio.CancelledError:
            outcome = Outcome("server_shutdown", GOING_AWAY, "server shutting down", "failed",
                              "call task cancelled")
            raise
        except Exception:
            self.log.exception("server error")
        finally:
            if actions is not None and actions.failure:
                outcome = replace(outcome, state="failed", error=actions.failure)
            await self._end(record, outcome, pipeline, serializer)

    def _failed(self, exc: StreamError) -> Outcome:
        """How a call that raised `exc` ends (closed by a shutdown: `server_shutdown`)."""
        if self.shutting_down:
            outcome = Outcome("server_shutdown", GOING_AWAY, "server shutting down", "failed",
                              "server shutting down")
        else:
            outcome = Outcome(_end_reason_for(exc), exc.code, exc.reason, "failed", exc.reason)
        self.log.warning("failed with %d: %s", outcome.close_code, outcome.error)
        return outcome

    async def _end(
        self,
        record: RunRecord,
        outcome: Outcome,
        pipeline: CallPipeline | None,
        serializer: cloudonix.CloudonixSerializer | None,
    ) -> None:
        """Stop the pipeline, gather what the call produced, end the run, close the socket.
        A failure in one step is logged and the next steps still run: the run always ends
        and the socket always gets its close frame."""
        gathered: dict[str, Any] = {}
        logs: dict[str, Any] = {}
        transcript = None
        recording: str | None = None
        if serializer is not None:
            logs["protocol_errors"] = dict(serializer.problems.counts)
            logs["media_frames_in"] = serializer.media_frames
        if pipeline is not None:
            try:
                path = await pipeline.stop(graceful=outcome.state == "completed")
                recording = str(path) if path else None
                if pipeline.recorder.failure:
                    logs["recording_error"] = pipeline.recorder.failure
                gathered.update(_keypress_context(pipeline))
                transcript = pipeline.transcript.flush()
                logs["outbound_audio"] = _gap_summary(pipeline)
            except Exception:
                self.log.exception("stopping the call pipeline failed")
        gathered.update(self.agent_gathered)
        for provider in self._speech_providers:
            try:
                await provider.close()
            except Exception as exc:
                self.log.warning("closing the speech provider failed: %r", exc)
        # The run is final before the provider sees the close; a peer that never answers
        # the close frame can only delay its own socket, not the record.
        written = await record.finish(
            state=outcome.state,
            end_reason=outcome.end_reason,
            close_code=outcome.close_code,
            error=outcome.error,
            recording_path=recording,
            gathered_context=gathered,
            logs=logs,
            transcript=transcript,
        )
        self.log.info("%s: %s (close %d)%s", outcome.state, outcome.end_reason, outcome.close_code,
                      "" if written else ", the run is written once the database answers")
        await self.close_socket(outcome.close_code, outcome.close_reason)

    def _agent(self, pipeline: CallPipeline, actions: ProviderActions) -> VoiceAgent:
        """The engine for this workflow: scripted unless an LLM endpoint is configured."""
        assert self._workflow is not None
        definition = self._workflow.live_definition
        problems = validate_definition(definition)
        if problems:
            raise StreamError(f"invalid workflow definition: {problems[0]}")
        speech = self.request.app[SPEECH]
        stt: Any = speech.stt
        tts: Any = speech.tts
        if (stt_provider := speech_provider(definition, "stt")) is not None:
            stt = recognizer(stt_provider, self.request.app[HTTP], self.log)
            self.log.info("speech to text: %r", stt_provider)
            self._speech_providers.append(stt)
        if (tts_provider := speech_provider(definition, "tts")) is not None:
            tts = synthesizer(tts_provider, speech.tts, self.request.app[HTTP], self.log)
            self.log.info("text to speech: %r", tts_provider)
            self._speech_providers.append(tts)
        parts: dict[str, Any] = dict(
            workflow=EngineWorkflow.parse(definition),
            context=self.context,
            tts=tts,
            stt=stt,
            transcript=pipeline.transcript,
            serializer=pipeline.serializer,
            actions=actions,
            call_log=self.log,
        )
        endpoint = llm_endpoint(definition)
        if endpoint is not None:
            return LLMAgent(endpoint=endpoint, **parts)
        return ScriptedAgent(**parts)

    async def _handshake(self, record: RunRecord) -> cloudonix.Handshake:
        http = self.request.app[HTTP]
        assert self._workflow is not None
        organization_id = self._workflow.organization_id
        handshake = await cloudonix.handshake(
            next_message=self._next_message,
            lookup=lambda domain: self.store.find_telephony_config(
                organization_id, cloudonix.PROVIDER, domain
            ),
            url_domain=self.request.query.get("Domain"),
            newer_form=self.newer_form,
            http=http,
            api_base_url=self.settings.cloudonix_api_base_url,
            handshake_timeout=self.settings.handshake_timeout,
            api_timeout=self.settings.provider_api_timeout,
        )
        self.handshake = handshake
        start = handshake.start
        gathered: dict[str, Any] = {
            "cloudonix_call_sid": start.call_sid,
            "cloudonix_stream_sid": start.stream_sid,
            "cloudonix_session": start.session,
        }
        initial: dict[str, Any] = {}
        if self.newer_form:
            gathered["call_id"] = start.session
            initial = {"caller_number": start.caller, "called_number": start.called}
        run = record.run
        self.context = {**run.initial_context, **run.gathered_context, **initial, **gathered}
        webhook: dict[str, Any] = {"domain": start.account_sid} if self.newer_form else {}
        webhook.update(start=start.raw, normalized_domain=handshake.domain)
        await record.merge(
            initial_context=initial,
            gathered_context=gathered,
            logs={"inbound_webhook": webhook, "timing": {"handshake_ms": round(handshake.elapsed_ms, 1)}},
        )
        self.log.info("handshake done in %.1f ms", handshake.elapsed_ms)
        return handshake

    async def _next_message(self, timeout: float | None) -> str | bytes:
        """The next data frame, or why there is none (timeout, close, oversized)."""
        msg = await self.ws.receive(timeout=None if timeout is None else max(timeout, 0.001))
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            return msg.data  # type: ignore[no-any-return]
        too_big = isinstance(msg.data, WebSocketError) and msg.data.code == WSCloseCode.MESSAGE_TOO_BIG
        if msg.type is WSMsgType.ERROR and too_big:
            raise MessageTooBig(
                f"message too big (limit {self.settings.max_stream_message_bytes} bytes)"
            )
        if self.shutting_down:
            raise StreamError("server shutting down")
        raise PeerClosed()

    async def _stream_media(
        self, pipeline: CallPipeline, serializer: cloudonix.CloudonixSerializer
    ) -> Outcome:
        """Feed provider frames to the pipeline until `stop`, a close, or a dead peer.

        No per-message timeout here (setting one up costs more than handling a media
        frame): a watchdog closes the socket when the provider goes quiet.
        """
        loop = asyncio.get_running_loop()
        self._last_message_at = loop.time()
        watchdog = asyncio.create_task(self._watch_for_silence())
        try:
            return await self._media_loop(pipeline, serializer, loop)
        finally:
            watchdog.cancel()

    async def _watch_for_silence(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCHDOG_PERIOD)
            if loop.time() - self._last_message_at >= MEDIA_IDLE_TIMEOUT:
                reason = f"no media from provider for {MEDIA_IDLE_TIMEOUT:g} s"
                self.ended_by_us = Outcome("provider_timeout", SERVER_FAILURE, reason, "failed", reason)
                self.log.warning(reason)
                await self.close_socket(SERVER_FAILURE, reason)
                return

    async def _media_loop(
        self,
        pipeline: CallPipeline,
        serializer: cloudonix.CloudonixSerializer,
        loop: asyncio.AbstractEventLoop,
    ) -> Outcome:
        while True:
            try:
                data = await self._next_message(None)
                self._last_message_at = loop.time()
            except PeerClosed:
                if self.ended_by_us is not None:
                    return self.ended_by_us
                return Outcome("caller_hangup", NORMAL_CLOSURE, "stream closed by provider")
            except StreamError:
                if self.shutting_down:
                    return Outcome("server_shutdown", GOING_AWAY, "server shutting down")
                raise
            frame = await serializer.deserialize(data)
            if frame is None:
                continue
            if isinstance(frame, StreamStopFrame):
                return self.ended_by_us or Outcome("caller_hangup", NORMAL_CLOSURE, "call ended")
            await pipeline.deliver(frame)

    async def close_socket(self, code: int, reason: str) -> None:
        """Send our close frame (once); a peer that is already gone is only logged."""
        if self.ws.closed:
            return
        try:
            await self.ws.close(code=code, message=clip_reason(reason).encode())
        except Exception as exc:
            self.log.info("closing the socket with %d failed: %r", code, exc)


CLOSE_REASONS: Final = {
    "agent_hangup": "agent hung up",
    "transfer": "call transferred",
    "silence_timeout": "silence timeout",
    "max_duration": "maximum call duration reached",
}


class ProviderActions:
    """What the agent does to the call: provider hang-up and transfer, then closing the
    stream with the outcome. A provider API error fails the run with its reason."""

    def __init__(self, call: Call, handshake: cloudonix.Handshake) -> None:
        self._call = call
        self._client = handshake.client
        self._session = handshake.start.session
        self.failure: str | None = None
        self._close_task: asyncio.Task[None] | None = None

    async def hangup(self) -> None:
        try:
            status = await self._client.hangup(self._session)
            self._call.log.info("hung up through Cloudonix (HTTP %d)", status)
        except (cloudonix.ProviderApiError, aiohttp.ClientError, TimeoutError) as exc:
            self.failure = f"hangup failed: {exc or type(exc).__name__}"
            self._call.log.warning(self.failure)

    async def transfer(self, destination: str) -> None:
        try:
            status = await self._client.transfer(self._session, destination)
            self._call.log.info("transferred through Cloudonix (HTTP %d)", status)
        except (cloudonix.ProviderApiError, aiohttp.ClientError, TimeoutError) as exc:
            self.failure = f"transfer failed: {exc or type(exc).__name__}"
            self._call.log.warning(self.failure)

    def finish(self, end_reason: str, gathered: dict[str, Any] | None = None) -> None:
        """The agent ended the call: close the stream with 1000 and why."""
        reason = CLOSE_REASONS.get(end_reason, end_reason.replace("_", " "))
        self._call.agent_gathered.update(gathered or {})
        self._end(Outcome(end_reason, NORMAL_CLOSURE, reason))

    def fail(self, error: str) -> None:
        """The agent broke (our bug): close the stream with 1011; the run fails with `error`."""
        self._end(Outcome("agent_error", SERVER_FAILURE, "internal server error", "failed", error))

    def _end(self, outcome: Outcome) -> None:
        self._call.ended_by_us = outcome
        if self._close_task is None:  # the socket reader sees the close and ends the call
            self._close_task = asyncio.create_task(
                self._call.close_socket(outcome.close_code, outcome.close_reason), name="agent close"
            )


def _gap_summary(pipeline: CallPipeline) -> dict[str, Any]:
    """Outbound pacing as the provider saw it: gaps between media messages while speaking."""
    gaps = sorted(pipeline.transport.output().gaps)
    if not gaps:
        return {"media_frames_out": 0}
    return {
        "media_frames_out": len(gaps) + 1,
        "gap_p50_ms": round(gaps[len(gaps) // 2] * 1000, 1),
        "gap_p99_ms": round(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))] * 1000, 1),
        "gap_max_ms": round(gaps[-1] * 1000, 1),
    }


def _end_reason_for(exc: StreamError) -> str:
    """A short machine-readable end reason for a failed run."""
    if isinstance(exc, UnsupportedProvider):
        return "unsupported_provider"
    if isinstance(exc, MessageTooBig):
        return "message_too_big"
    if isinstance(exc, HandshakeError):
        return "handshake_failed"
    return "server_error"


def _keypress_context(pipeline: CallPipeline) -> dict[str, Any]:
    keypresses = pipeline.recorder.keypresses
    if not keypresses:
        return {}
    return {
        "dtmf_digits": "".join(k.digit for k in keypresses),
        "keypresses": [{"digit": k.digit, "at_ms": k.at_ms} for k in keypresses],
    }


async def agent_stream(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/agent-stream/[{provider}/]{agent_uuid}: accept, then run the call."""
    accepted_at = time.monotonic()
    settings = request.app[SETTINGS]
    registry = request.app[CALLS]
    ws = StreamSocket(
        max_msg_size=settings.max_stream_message_bytes,
        autoping=True,
        timeout=CLOSE_TIMEOUT,
        compress=False,  # base64 mu-law barely compresses; deflate would only cost CPU
    )
    await ws.prepare(request)
    if not registry.accepting:
        await ws.close(code=GOING_AWAY, message=b"server shutting down")
        return ws
    call = Call(request, ws, accepted_at)
    # The call runs in its own task: if aiohttp cancels the handler (a lost connection,
    # with handler_cancellation on) the call still finishes its run. Shutdown waits for it.
    task = asyncio.create_task(call.handle(), name=f"call {short_uuid(call.agent_uuid)}")
    registry.add(call)
    task.add_done_callback(lambda _: registry.discard(call))
    await asyncio.shield(task)
    return ws
