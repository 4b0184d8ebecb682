"""The lifecycle of one call (contract section 2.1), the same for every provider.

One `Call` per socket. Only its handler task reads the socket; the pipeline's output
transport is the only writer of media. Whatever happens after the `101` — a bad frame, a
dead provider API, a database error, our own bug, a cancellation — the socket gets a close
frame with a code and a reason, and a run that was created ends with its reason
(`CallOutcome` decides which; `RunRecord` writes it, whatever the database does).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuidlib
from collections.abc import MutableMapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import aiohttp
from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from ..config import Settings
from ..engine import Workflow as EngineWorkflow
from ..engine.base import VoiceAgent
from ..engine.llm import LLMAgent
from ..engine.scripted import ScriptedAgent
from ..errors import (
    GOING_AWAY,
    SERVER_FAILURE,
    DatabaseUnavailable,
    MessageTooBig,
    PeerClosed,
    RoutingError,
    StreamError,
    clip_reason,
)
from ..keys import CONFIG_SOURCE, HTTP, METRICS, RECORDINGS, RUN_WRITES, SETTINGS, SPEECH, STORE
from ..logs import CALL_FIELDS
from ..metrics import CallFeed, Metrics
from ..models import TelephonyConfig, Workflow
from ..pipeline.call import CallPipeline, let_live_calls_run
from ..pipeline.frames import StreamStopFrame
from ..pipeline.recorder import CallRecorder
from ..providers import provider_named
from ..providers.base import (
    CallActionFailed,
    CallControl,
    CallStart,
    ControlContext,
    HandshakeInput,
    Provider,
    TransferUnsupported,
    Wire,
)
from ..security import short_uuid
from ..speech import Recognizer, Synthesizer
from ..speech.providers import ProviderRecognizer, ProviderSynthesizer, recognizer, synthesizer
from ..store import Store
from ..urls import public_url
from ..workflow import llm_endpoint, speech_provider, validate_definition
from .outcome import CallOutcome, Outcome
from .run_writes import RunRecord
from .selection import Selected, select_config

log = logging.getLogger(__name__)

# A live call sends media every 20 ms; this much silence on the socket means a dead peer.
MEDIA_IDLE_TIMEOUT: Final = 30.0
# How long the end of a call waits for the recordings store (a bucket) before it ends the
# run and closes the socket anyway: a slow or dead store must not keep a caller on the line.
RECORDING_WAIT_SECONDS: Final = 5.0
WATCHDOG_PERIOD: Final = 5.0


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """Every line of a call carries its run name, the shortened agent uuid and the provider
    (logs.py shows them), also when logged outside the call's own task."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


@dataclass(frozen=True)
class Connected:
    """A call past its handshake: its wire format (which knows its start) and its REST calls."""

    wire: Wire
    control: CallControl


class Call:
    """One provider media stream, from accept to the finished run."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, accepted_at: float) -> None:
        self.request = request
        self.ws = ws
        self.settings: Settings = request.app[SETTINGS]
        self.store: Store = request.app[STORE]
        self.metrics: Metrics = request.app[METRICS]
        self._feed: CallFeed | None = None  # the call's gaps and replies to the histograms
        self.agent_uuid = request.match_info["agent_uuid"]
        self.newer_form = "provider" in request.match_info
        name = request.match_info.get("provider") or request.query.get("provider") or ""
        self.provider_name = name.strip().lower()
        self.provider: Provider | None = provider_named(self.provider_name)
        self.accepted_at = accepted_at
        self.finished = asyncio.Event()
        self.outcome = CallOutcome()
        self._workflow: Workflow | None = None
        self.context: dict[str, Any] = {}
        self.ran_pipeline = False
        self._last_message_at = 0.0
        self.agent_gathered: dict[str, Any] = {}
        self.agent_logs: dict[str, Any] = {}
        self._speech_providers: list[ProviderRecognizer | ProviderSynthesizer] = []
        # What this call's log lines say about it; the run's name joins once it exists.
        self.log_fields: dict[str, str] = {"agent": short_uuid(self.agent_uuid)}
        if self.provider is not None:
            self.log_fields["provider"] = self.provider.name
        self.log = CallLog(log, self.log_fields)

    async def shut_down(self) -> None:
        """Server shutdown: close the socket; the handler task notices and ends the run."""
        self.outcome.shutting_down = True
        await self.close_socket(GOING_AWAY, "server shutting down")

    # -- lifecycle ---------------------------------------------------------------------

    async def handle(self) -> None:
        """The whole life of the call. Nothing escapes it: whatever happens after the `101`,
        the socket gets a close frame with a code and a reason, and a run that was created
        ends with its reason."""
        about_this_call = CALL_FIELDS.set(self.log_fields)  # for every line below this task
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
            CALL_FIELDS.reset(about_this_call)
            # aiohttp keeps the socket's error, whose traceback holds the frame of the socket's
            # own close(): a cycle through the socket, the request and the connection
            if (error := self.ws.exception()) is not None:
                error.__traceback__ = None

    async def _open_run(self) -> RunRecord | None:
        """Steps 1-3, or the close that refuses the call (no run is created)."""
        try:
            return await self._route()
        except RoutingError as exc:
            await self._reject(exc)
        except DatabaseUnavailable as exc:
            self.log.warning("refused with %d: %s", SERVER_FAILURE, exc)
            self.metrics.rejected("database_unavailable", self._provider_label())
            await self.close_socket(SERVER_FAILURE, str(exc))
        return None

    async def _route(self) -> RunRecord:
        """Steps 1-3: provider, workflow, quota and the new run (or a 1008, no run)."""
        if not self.provider_name:
            raise RoutingError("missing provider", kind="missing_provider")
        provider = self.provider
        if provider is None:
            raise RoutingError(f"unknown provider {self.provider_name[:32]!r}", kind="unknown_provider")
        workflow = await self._find_workflow()
        owner = await self.store.get_user(workflow.owner_user_id)
        self._workflow = workflow
        return await RunRecord.create(  # raises QuotaExceeded, a RoutingError
            self.store,
            self.request.app[RUN_WRITES],
            workflow,
            owner,
            retry_seconds=self.settings.run_write_retry_seconds,
            mode=provider.name,
            call_type=provider.call_type,
            initial_context=self._initial_context(provider),
            gathered_context=self._gathered_context(),
            logs={"inbound_webhook": {"url_form": "path" if self.newer_form else "query"}},
        )

    async def _find_workflow(self) -> Workflow:
        try:
            uuidlib.UUID(self.agent_uuid)
        except ValueError:
            raise RoutingError("workflow not found", kind="workflow_not_found") from None
        workflow = await self.store.find_stream_workflow(self.agent_uuid, include_archived=True)
        if workflow is None:
            raise RoutingError("workflow not found", kind="workflow_not_found")
        if workflow.status == "archived":
            self._workflow = workflow  # the refusal is shown in that agent's Runs tab
            raise RoutingError("workflow not found", kind="workflow_not_found")
        return workflow

    def _initial_context(self, provider: Provider) -> dict[str, Any]:
        """The numbers the query form of the URL carries (the start event's otherwise); the
        provider by its own name ("asterisk" for "ari")."""
        context: dict[str, Any] = {"provider": provider.name, "direction": "inbound"}
        if not self.newer_form:
            context["caller_number"] = self.request.query.get("from")
            context["called_number"] = self.request.query.get("to")
        return context

    def _gathered_context(self) -> dict[str, Any]:
        if self.newer_form:
            return {}
        call_id = self.request.query.get("callId") or self.request.query.get("CallSid")
        return {"call_id": call_id} if call_id else {}

    async def _reject(self, exc: RoutingError) -> None:
        """A 1008: no run, but a rejection operators can see (if the database takes it)."""
        workflow = self._workflow
        self.log.warning("rejected with %d: %s", exc.code, exc.reason)
        self.metrics.rejected(exc.kind, self._provider_label())
        try:
            await self.store.add_rejection(
                provider=self.provider_name or None,
                agent_uuid_short=short_uuid(self.agent_uuid),
                code=exc.code,
                reason=exc.reason,
                workflow_id=workflow.id if workflow else None,
                organization_id=workflow.organization_id if workflow else None,
            )
        except DatabaseUnavailable as unavailable:
            self.log.warning("the rejection is not recorded: %s", unavailable)
        await self.close_socket(exc.code, exc.reason)

    def _provider_label(self) -> str | None:
        """The provider by its own name ("asterisk" for "ari"), or as the URL gave it."""
        return self.provider.name if self.provider is not None else self.provider_name

    async def _run(self, record: RunRecord) -> None:
        """Steps 4-5: running, handshake, media; the run always ends, whatever happens."""
        run = record.run
        self.log_fields["run"] = run.name
        pipeline: CallPipeline | None = None
        connected: Connected | None = None
        outcome = self.outcome.crashed()
        provider = self.provider
        assert provider is not None  # _route refused the call otherwise
        self.metrics.call_started(provider.name)
        try:
            running_ms = round((time.monotonic() - self.accepted_at) * 1000, 1)
            await record.running({"timing": {"accept_to_running_ms": running_ms}})
            self.log.info("running (%.1f ms after accept)", running_ms)
            connected = await self._handshake(provider, record)
            recording_path = self.settings.recordings_dir / f"{run.id}.wav"
            pipeline = CallPipeline(self.ws, connected.wire, recording_path,
                                    self.request.app[RECORDINGS])
            self._feed = self.metrics.feed(provider.name)
            await let_live_calls_run()
            agent = self._agent(pipeline, AgentActions(self, connected.control))
            await let_live_calls_run()
            await pipeline.start(agent)
            self.ran_pipeline = True
            outcome = await self._stream_media(pipeline, connected.wire)
        except StreamError as exc:
            outcome = self.outcome.failed(exc)
            self.log.warning("failed with %d: %s", outcome.close_code, outcome.error)
        except asyncio.CancelledError:
            outcome = self.outcome.cancelled()
            raise
        except Exception:
            self.log.exception("server error")
            outcome = self.outcome.crashed()
        finally:
            try:
                await self._end(record, outcome, pipeline, connected.wire if connected else None)
            finally:
                self.metrics.call_ended(provider.name, outcome.state, outcome.end_reason,
                                        outcome.close_code)
                if pipeline is not None:
                    pipeline.release()  # freed at once, not by a full collection: memory.py

    async def _end(
        self,
        record: RunRecord,
        outcome: Outcome,
        pipeline: CallPipeline | None,
        wire: Wire | None,
    ) -> None:
        """Stop the pipeline, gather what the call produced, end the run, close the socket.
        A failure in one step is logged and the next steps still run: the run always ends
        and the socket always gets its close frame."""
        gathered: dict[str, Any] = {}
        logs: dict[str, Any] = {}
        transcript = None
        recording: str | None = None
        if wire is not None:
            logs["protocol_errors"] = dict(wire.problems.counts)
            logs["media_frames_in"] = wire.media_frames
        if pipeline is not None:
            try:
                recording = await pipeline.stop(graceful=outcome.state == "completed",
                                                recording_wait=RECORDING_WAIT_SECONDS)
                if pipeline.recorder.failure:
                    logs["recording_error"] = pipeline.recorder.failure
                gathered.update(_keypress_context(pipeline))
                transcript = pipeline.transcript.flush()
                logs["outbound_audio"] = _gap_summary(pipeline)
                logs["reply_latency"] = _reply_summary(pipeline)
                self._feed_metrics(pipeline)
            except Exception:
                self.log.exception("stopping the call pipeline failed")
        gathered.update(self.agent_gathered)
        logs.update(self.agent_logs)
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
        if pipeline is not None and pipeline.recorder.still_storing:
            self.log.warning("the recordings store has not answered within %.0f s: the run "
                             "gets its recording when it does", RECORDING_WAIT_SECONDS)
            record.after_the_call(self._store_recording_late(record, pipeline.recorder))

    async def _store_recording_late(self, record: RunRecord, recorder: CallRecorder) -> None:
        """The end of a recording whose store was slow: the run points to it once stored,
        or says why not (the raw tracks then stay for the next start)."""
        reference = await recorder.stored()
        if reference is not None:
            await record.recording(reference)
            self.log.info("recording stored after the call")
        elif recorder.failure:
            await record.merge(logs={"recording_error": recorder.failure})

    def _agent(self, pipeline: CallPipeline, actions: AgentActions) -> VoiceAgent:
        """The engine for this workflow: scripted unless an LLM endpoint is configured."""
        assert self._workflow is not None
        definition = self._workflow.live_definition
        problems = validate_definition(definition, saving=False)
        if problems:
            raise StreamError(f"invalid workflow definition: {problems[0]}")
        speech = self.request.app[SPEECH]
        stt: Recognizer = speech.stt
        tts: Synthesizer = speech.tts
        if (stt_provider := speech_provider(definition, "stt")) is not None:
            stt = remote_stt = recognizer(stt_provider, self.request.app[HTTP], self.log)
            self.log.info("speech to text: %r", stt_provider)
            self._speech_providers.append(remote_stt)
        if (tts_provider := speech_provider(definition, "tts")) is not None:
            tts = remote_tts = synthesizer(tts_provider, speech.tts, self.request.app[HTTP], self.log)
            self.log.info("text to speech: %r", tts_provider)
            self._speech_providers.append(remote_tts)
        parts: dict[str, Any] = dict(
            workflow=EngineWorkflow.parse(definition),
            context=self.context,
            tts=tts,
            stt=stt,
            transcript=pipeline.transcript,
            actions=actions,
            call_log=self.log,
        )
        endpoint = llm_endpoint(definition)
        if endpoint is not None:
            return LLMAgent(endpoint=endpoint, **parts)
        return ScriptedAgent(**parts)

    async def _handshake(self, provider: Provider, record: RunRecord) -> Connected:
        """The provider's first messages, the configuration they select, what the upgrade
        signed, and the call validated against the provider's API: or a 4400."""
        began = time.monotonic()
        assert self._workflow is not None
        organization_id = self._workflow.organization_id
        source = self.request.app[CONFIG_SOURCE]
        url_account = provider.url_account(self.request, self.newer_form)
        selected: Selected | None = None
        if not provider.needs_configuration:  # the browser's call: its session is its credential
            selected = Selected(_no_configuration(provider, organization_id), "none needed")
        elif url_account is not None:  # the configuration is known before any event is read
            selected = await select_config(source, provider, organization_id,
                                           account_id=url_account, start=None)
        start = await provider.read_start(HandshakeInput(
            self.request, self.newer_form, self._next_message, began + self.settings.handshake_timeout
        ))
        if selected is None:
            account = provider.checked_account(start.account_id) if start.account_id else None
            selected = await select_config(source, provider, organization_id,
                                           account_id=account, start=start)
        config = selected.config
        provider.check_upgrade(self.request, config)
        control = provider.control(ControlContext(
            http=self.request.app[HTTP],
            api_base_url=self.settings.api_base_url(provider.name, provider.default_api_base_url),
            config=config,
            start=start,
            timeout=self.settings.provider_api_timeout,
            public_url=public_url(self.request),
            tokens=self.store,
            send_text=self._send_text,
            api_requests=partial(self.metrics.api_request, provider.name),
        ))
        validating = time.monotonic()
        try:
            await control.validate()
        finally:
            self.metrics.validated(provider.name, time.monotonic() - validating)
        elapsed_ms = (time.monotonic() - began) * 1000
        self.metrics.handshake_done(provider.name, elapsed_ms / 1000)
        await self._remember(record, provider, start, config, selected.by, elapsed_ms)
        self.log.info("handshake done in %.1f ms", elapsed_ms)
        return Connected(provider.wire(start, log=self.log), control)

    async def _remember(
        self, record: RunRecord, provider: Provider, start: CallStart, config: TelephonyConfig,
        selected_by: str, elapsed_ms: float,
    ) -> None:
        """What the first messages said goes on the run and into the agent's context."""
        run = record.run
        gathered: dict[str, Any] = dict(start.gathered)
        if "call_id" not in run.gathered_context:
            gathered["call_id"] = start.call_id
        initial: dict[str, Any] = {}
        if self.newer_form:
            initial = {"caller_number": start.caller, "called_number": start.called}
        if start.custom_parameters:
            initial["custom_parameters"] = start.custom_parameters
        self.context = {**run.initial_context, **run.gathered_context, **initial, **gathered}
        webhook: dict[str, Any] = {
            **provider.webhook_log(self.request, self.newer_form, start, config),
            "start": start.fields,
        }
        if provider.needs_configuration:
            webhook["configuration"] = {"id": config.id, "name": config.name, "selected_by": selected_by}
        await record.merge(
            initial_context=initial,
            gathered_context=gathered,
            logs={"inbound_webhook": webhook, "timing": {"handshake_ms": round(elapsed_ms, 1)}},
        )

    async def _send_text(self, message: str) -> bool:
        """A text message on the call's socket (a provider's command); False once it is closed."""
        if self.ws.closed:
            return False
        try:
            await self.ws.send_str(message)
        except (ConnectionError, RuntimeError):
            return False
        return True

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
        raise PeerClosed()

    async def _stream_media(self, pipeline: CallPipeline, wire: Wire) -> Outcome:
        """Feed provider frames to the pipeline until `stop`, a close, or a dead peer.

        No per-message timeout here (setting one up costs more than handling a media
        frame): a watchdog closes the socket when the provider goes quiet.
        """
        loop = asyncio.get_running_loop()
        self._last_message_at = loop.time()
        watchdog = asyncio.create_task(self._watch_for_silence(pipeline), name="provider watchdog")
        try:
            while True:
                try:
                    data = await self._next_message(None)
                except PeerClosed:
                    return self.outcome.socket_closed()
                self._last_message_at = loop.time()
                frame = await wire.deserialize(data)
                if frame is None:
                    continue
                if isinstance(frame, StreamStopFrame):
                    return self.outcome.stream_stopped()
                await pipeline.deliver(frame)
        finally:
            watchdog.cancel()

    async def _watch_for_silence(self, pipeline: CallPipeline) -> None:
        """Close a call whose provider went quiet; meanwhile, hand its figures to the
        histograms every few seconds, so a long call shows before it ends."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCHDOG_PERIOD)
            self._feed_metrics(pipeline)
            if loop.time() - self._last_message_at >= MEDIA_IDLE_TIMEOUT:
                outcome = self.outcome.provider_silent(MEDIA_IDLE_TIMEOUT)
                self.log.warning(outcome.close_reason)
                await self.close_socket(outcome.close_code, outcome.close_reason)
                return

    def _feed_metrics(self, pipeline: CallPipeline) -> None:
        """The gaps and replies measured since the last time, to the histograms."""
        if self._feed is not None:
            output = pipeline.transport.output()
            self._feed.take(output.gaps, output.later_gaps, pipeline.transcript.replies_ms)

    async def close_socket(self, code: int, reason: str) -> None:
        """Send our close frame (once); a peer that is already gone is only logged."""
        if self.ws.closed:
            return
        try:
            await self.ws.close(code=code, message=clip_reason(reason).encode())
        except Exception as exc:
            self.log.info("closing the socket with %d failed: %r", code, exc)


class AgentActions:
    """What the agent does to the call (engine.CallActions): the provider's hang-up and
    transfer, then closing the stream. A provider API error fails the run with its reason."""

    def __init__(self, call: Call, control: CallControl) -> None:
        self._call = call
        self._control = control
        self._failure: str | None = None
        self._unsupported: str | None = None  # why the provider could not transfer
        self._close_task: asyncio.Task[None] | None = None

    @property
    def failure(self) -> str | None:
        return self._failure

    @failure.setter
    def failure(self, error: str | None) -> None:
        """The run ends failed with `error`, however the call ends."""
        self._failure = error
        if error is not None:
            self._call.outcome.action_failed(error)

    async def hangup(self) -> None:
        try:
            status = await self._control.hangup()
            self._call.log.info("hung up through %s (%s)", self._control.title, _how(status))
        except (CallActionFailed, aiohttp.ClientError, TimeoutError) as exc:
            self.failure = f"hangup failed: {exc or type(exc).__name__}"
            self._call.log.warning(self.failure)

    async def transfer(self, destination: str) -> None:
        try:
            status = await self._control.transfer(destination)
            self._call.log.info("transferred through %s (%s)", self._control.title, _how(status))
        except TransferUnsupported as exc:
            self._unsupported = str(exc)
            self._call.log.info("no transfer: %s", exc)
        except (CallActionFailed, aiohttp.ClientError, TimeoutError) as exc:
            self.failure = f"transfer failed: {exc or type(exc).__name__}"
            self._call.log.warning(self.failure)

    def finish(self, end_reason: str, gathered: dict[str, Any] | None = None) -> None:
        """The agent ended the call: close the stream with 1000 and why (a transfer the
        provider does not offer ends `transfer_unsupported`, the reason in the run's logs)."""
        self._call.agent_gathered.update(gathered or {})
        if end_reason == "transfer" and self._unsupported is not None:
            end_reason = "transfer_unsupported"
            self._call.agent_logs["transfer_unsupported"] = self._unsupported
        self._close(self._call.outcome.agent_ended(end_reason))

    def fail(self, error: str) -> None:
        """The agent broke (our bug): close the stream with 1011; the run fails with `error`."""
        self._close(self._call.outcome.agent_failed(error))

    def _close(self, outcome: Outcome) -> None:
        if self._close_task is None:  # the socket reader sees the close and ends the call
            self._close_task = asyncio.create_task(
                self._call.close_socket(outcome.close_code, outcome.close_reason), name="agent close"
            )


def _how(status: int) -> str:
    return f"HTTP {status}" if status else "on the stream"


def _no_configuration(provider: Provider, organization_id: int) -> TelephonyConfig:
    """What a provider that needs no stored configuration (the browser) is given instead."""
    return TelephonyConfig(
        id=0, organization_id=organization_id, provider=provider.name, name="", account_id="",
        fields={}, secrets={}, from_numbers=[], created_at="", updated_at="",
    )


def _gap_summary(pipeline: CallPipeline) -> dict[str, Any]:
    """Outbound pacing as the provider saw it: gaps between media messages while speaking."""
    output = pipeline.transport.output()
    gaps = sorted(output.gaps)
    if not gaps:
        return {"media_frames_out": 0}
    return {  # percentiles of the kept gaps (KEPT_GAPS); count and maximum of them all
        "media_frames_out": len(gaps) + output.later_gap_count + 1,
        "gap_p50_ms": round(gaps[len(gaps) // 2] * 1000, 1),
        "gap_p99_ms": round(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))] * 1000, 1),
        "gap_max_ms": round(max(gaps[-1], output.later_gap_max) * 1000, 1),
    }


def _reply_summary(pipeline: CallPipeline) -> dict[str, Any]:
    """How long the caller waited for the agent: end of their speech to its next audio."""
    replies = sorted(pipeline.transcript.replies_ms)
    if not replies:
        return {"replies": 0}
    return {"replies": len(replies), "p50_ms": replies[len(replies) // 2], "max_ms": replies[-1]}


def _keypress_context(pipeline: CallPipeline) -> dict[str, Any]:
    keypresses = pipeline.recorder.keypresses
    if not keypresses:
        return {}
    return {
        "dtmf_digits": "".join(k.digit for k in keypresses),
        "keypresses": [{"digit": k.digit, "at_ms": k.at_ms} for k in keypresses],
    }
