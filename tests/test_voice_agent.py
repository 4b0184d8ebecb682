"""The scripted voice agent end to end, offline: espeak-synthesized caller speech goes in
through the real socket, the agent greets, recognises, branches, and hangs up or
transfers through the Cloudonix emulator. Transcript and recording are checked."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import wave
from typing import Any

import pytest

from agent_stream.config import Settings
from agent_stream.engine import Workflow as EngineWorkflow
from agent_stream.engine.scripted import ScriptedAgent
from agent_stream.pipeline import transport
from agent_stream.pipeline.transcript import CallTranscript
from agent_stream.speech.stt import DecoderPriority, GrammarRecognizer
from agent_stream.speech.tts import EspeakSynthesizer
from agent_stream.store import Store
from agent_stream.workflow import starter_definition
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import (
    Dial,
    MakeTenant,
    ServeApp,
    Tenant,
    answered,
    finished_run,
    keep_line_open,
    say,
    spawned_children,
    until,
)


def short_flow(**settings: Any) -> dict[str, Any]:
    """A brisk version of the starter agent, so tests do not wait on long prompts."""
    definition = starter_definition()
    definition["nodes"][0]["say"] = "Hi, {{direction}} caller. Book a visit?"
    definition["settings"].update(settings)
    return definition


@pytest.fixture
async def agent(make_tenant: MakeTenant, store: Store) -> Tenant:
    tenant = await make_tenant()
    await store.update_workflow(tenant.org_id, tenant.workflow.uuid, definition=short_flow())
    return tenant


def agent_lines(run: Any) -> list[tuple[str, str, bool]]:
    return [(line.role, line.text, line.interrupted) for line in run.transcript]


# -- the conversation ---------------------------------------------------------------------------


async def test_greets_recognises_speech_branches_and_hangs_up(
    dial: Dial, agent: Tenant, store: Store, emulator: CloudonixEmulator,
    caller_voice: EspeakSynthesizer,
) -> None:
    call = await dial(agent.workflow.uuid)
    call.start_reading()
    await call.handshake()
    await until(lambda: "utt-1" in call.marks)  # the greeting went out, then its mark
    greeting_audio = call.received_media_bytes
    assert greeting_audio > 8000 * 0.5  # at least half a second of speech
    await say(call, caller_voice, "yes")
    await until(lambda: "utt-2" in call.marks)
    await say(call, caller_voice, "goodbye")
    code, reason = await call.wait_closed(timeout=20)
    assert (code, reason) == (1000, "agent hung up")

    run = await finished_run(store, agent)
    assert (run.state, run.end_reason) == ("completed", "agent_hangup")
    assert agent_lines(run) == [
        ("agent", "Hi, inbound caller. Book a visit?", False),
        ("caller", "yes", False),
        ("agent", "Great. Which day suits you?", False),
        ("caller", "goodbye", False),
        ("agent", "Goodbye.", False),
    ]
    times = [(line.start_ms, line.end_ms) for line in run.transcript]
    assert all(start <= end for start, end in times)
    assert [start for start, _ in times] == sorted(start for start, _ in times)
    hangups = [r for r in emulator.requests if r.method == "DELETE"]
    assert len(hangups) == 1 and hangups[0].session == call.session and hangups[0].authorized

    with wave.open(run.recording_path) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)
        frames = wav.readframes(wav.getnframes())
    left = frames[0::4] + frames[1::4]
    right = frames[2::4] + frames[3::4]
    assert any(left) and any(right), "both the caller and the agent are in the recording"
    assert run.logs["outbound_audio"]["media_frames_out"] > 50


async def test_keypress_transfers_after_the_last_words(
    dial: Dial, agent: Tenant, store: Store, emulator: CloudonixEmulator
) -> None:
    call = await dial(agent.workflow.uuid)
    call.start_reading()
    await call.handshake()
    await until(lambda: "utt-1" in call.marks)
    await call.press("0")
    code, reason = await call.wait_closed(timeout=20)
    assert (code, reason) == (1000, "call transferred")
    assert "utt-2" in call.marks  # "Connecting you now." was played before the transfer

    run = await finished_run(store, agent)
    assert (run.state, run.end_reason) == ("completed", "transfer")
    assert run.gathered_context["transfer_destination"] == "+15555550123"
    assert run.gathered_context["dtmf_digits"] == "0"
    assert [line.text for line in run.transcript] == [
        "Hi, inbound caller. Book a visit?", "(pressed 0)", "Connecting you now."]
    (transfer,) = [r for r in emulator.requests if r.method == "POST"]
    assert transfer.json == {"cxml": "<Response><Dial>+15555550123</Dial></Response>"}
    assert transfer.session == call.session


async def test_unmatched_reply_reprompts_once_then_takes_the_fallback(
    dial: Dial, agent: Tenant, store: Store, caller_voice: EspeakSynthesizer
) -> None:
    call = await dial(agent.workflow.uuid)
    call.start_reading()
    await call.handshake()
    await until(lambda: "utt-1" in call.marks)
    await call.press("7")  # no edge has 7
    await until(lambda: "utt-2" in call.marks)
    await call.press("9")  # still nothing: the fallback edge goes to "bye"
    assert (await call.wait_closed(timeout=20))[0] == 1000
    run = await finished_run(store, agent)
    assert [line.text for line in run.transcript] == [
        "Hi, inbound caller. Book a visit?",
        "(pressed 7)",
        "Sorry, I didn't catch that. Hi, inbound caller. Book a visit?",
        "(pressed 9)",
        "Goodbye.",
    ]
    assert run.end_reason == "agent_hangup"


@pytest.mark.parametrize("speech_queue_seconds", [None, 0.1], ids=["default-queue", "tiny-queue"])
async def test_barge_in_clears_the_provider_and_cuts_the_transcript(
    dial: Dial, make_tenant: MakeTenant, store: Store, caller_voice: EspeakSynthesizer,
    monkeypatch: pytest.MonkeyPatch, speech_queue_seconds: float | None,
) -> None:
    if speech_queue_seconds is not None:  # the greeting waits for room in the speech queue
        monkeypatch.setattr(transport, "MAX_QUEUED_SPEECH_SECONDS", speech_queue_seconds)
    definition = starter_definition()  # the long greeting: about four seconds
    tenant = await make_tenant(definition=definition)
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: call.received_media_bytes > 8000)  # a second of greeting played
    speaking = asyncio.create_task(say(call, caller_voice, "talk to a human"))
    await until(lambda: call.clears == 1)
    clear_at = next(i for i, e in enumerate(call.received) if e["event"] == "clear")
    await speaking
    # nothing of the cut greeting follows the clear: the next audio is the transfer prompt
    after = call.received[clear_at + 1:]
    assert not [e for e in after if e["event"] == "mark" and e["mark"]["name"] == "utt-1"]
    assert (await call.wait_closed(timeout=20)) == (1000, "call transferred")

    run = await finished_run(store, tenant)
    first = run.transcript[0]
    assert (first.role, first.interrupted) == ("agent", True)
    full = definition["nodes"][0]["say"]
    assert first.text and full.startswith(first.text) and first.text != full
    assert [(line.role, line.text) for line in run.transcript[1:]] == [
        ("caller", "talk to a human"), ("agent", "Connecting you now.")]


async def test_an_utterance_longer_than_the_speech_queue_plays_whole(
    dial: Dial, make_tenant: MakeTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await make_tenant()  # the starter's greeting: about four seconds

    async def greeting_bytes() -> int:
        call = await answered(dial, tenant.workflow.uuid)
        await until(lambda: "utt-1" in call.marks)
        heard = call.received_media_bytes
        await call.hang_up()
        await call.wait_closed()
        return heard

    whole = await greeting_bytes()
    monkeypatch.setattr(transport, "MAX_QUEUED_SPEECH_SECONDS", 0.1)  # five 20 ms chunks
    assert await greeting_bytes() == whole > 8000 * 3


async def test_a_caller_hanging_up_while_speech_waits_for_room_ends_the_call_at_once(
    dial: Dial, make_tenant: MakeTenant, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "MAX_QUEUED_SPEECH_SECONDS", 0.1)
    tenant = await make_tenant()  # the starter's greeting: about four seconds, 0.1 s queued
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: call.received_media_bytes > 8000)  # a second of it has played
    await call.hang_up()
    assert await call.wait_closed(timeout=5) == (1000, "call ended")
    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason) == ("completed", "caller_hangup")
    assert run.transcript[0].role == "agent"


async def test_a_non_interruptible_prompt_is_not_cut(
    dial: Dial, make_tenant: MakeTenant, store: Store, caller_voice: EspeakSynthesizer
) -> None:
    definition = short_flow()
    definition["nodes"][0]["interruptible"] = False
    definition["nodes"][0]["say"] = "Please listen carefully, as our options have changed."
    tenant = await make_tenant(definition=definition)
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: call.received_media_bytes > 4000)
    await say(call, caller_voice, "representative")
    assert (await call.wait_closed(timeout=20))[0] == 1000
    assert call.clears == 0
    run = await finished_run(store, tenant)
    assert run.transcript[0].interrupted is False
    assert run.transcript[0].text == "Please listen carefully, as our options have changed."


# -- timeouts ---------------------------------------------------------------------------------


async def test_silence_reprompts_then_ends_with_silence_timeout(
    dial: Dial, make_tenant: MakeTenant, store: Store, emulator: CloudonixEmulator
) -> None:
    tenant = await make_tenant()
    await store.update_workflow(tenant.org_id, tenant.workflow.uuid,
                                definition=short_flow(silence_timeout_seconds=1))
    call = await answered(dial, tenant.workflow.uuid)
    line = asyncio.create_task(keep_line_open(call, 30))
    try:
        assert await call.wait_closed(timeout=30) == (1000, "silence timeout")
    finally:
        line.cancel()
    run = await finished_run(store, tenant)
    assert run.end_reason == "silence_timeout"
    assert [line.text for line in run.transcript] == [
        "Hi, inbound caller. Book a visit?",
        "Are you still there? Hi, inbound caller. Book a visit?",
        "Goodbye.",
    ]
    assert [r.method for r in emulator.requests] == ["GET", "DELETE"]


async def test_max_duration_hangs_up(
    dial: Dial, make_tenant: MakeTenant, store: Store, emulator: CloudonixEmulator
) -> None:
    tenant = await make_tenant()
    await store.update_workflow(tenant.org_id, tenant.workflow.uuid,
                                definition=short_flow(max_duration_seconds=1.5))
    call = await answered(dial, tenant.workflow.uuid)
    line = asyncio.create_task(keep_line_open(call, 10))
    try:
        assert await call.wait_closed(timeout=15) == (1000, "maximum call duration reached")
    finally:
        line.cancel()
    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason) == ("completed", "max_duration")
    assert 1.0 < (run.duration_seconds or 0) < 6
    assert emulator.requests[-1].method == "DELETE"


async def test_caller_hangup_keeps_what_was_heard(
    dial: Dial, agent: Tenant, store: Store
) -> None:
    call = await dial(agent.workflow.uuid)
    call.start_reading()
    await call.handshake()
    await until(lambda: "utt-1" in call.marks)
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")
    run = await finished_run(store, agent)
    assert run.end_reason == "caller_hangup"
    assert agent_lines(run) == [("agent", "Hi, inbound caller. Book a visit?", False)]


async def test_failed_hangup_fails_the_run_with_the_reason(
    dial: Dial, agent: Tenant, store: Store, emulator: CloudonixEmulator
) -> None:
    call = await dial(agent.workflow.uuid)
    call.start_reading()
    await call.handshake()
    await until(lambda: "utt-1" in call.marks)
    emulator.status_override = 500
    await call.press("9")
    await call.press("9")  # second miss: fallback to "bye", then hang up (answered 500)
    assert (await call.wait_closed(timeout=20))[0] == 1000
    run = await finished_run(store, agent)
    assert (run.state, run.end_reason) == ("failed", "agent_hangup")
    assert run.error == "hangup failed: Cloudonix hangup failed: HTTP 500"


async def test_an_agent_step_that_breaks_ends_the_call_with_1011_and_its_traceback_logged(
    dial: Dial, make_tenant: MakeTenant, store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    definition = short_flow()
    # text the speech engine cannot encode (the API refuses it; the database may hold it)
    definition["nodes"][1]["say"] = "Great \ud800"
    tenant = await make_tenant(definition=definition)
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: "utt-1" in call.marks)
    await call.press("1")  # to the "book" node, whose prompt breaks the agent
    assert await call.wait_closed(timeout=20) == (1011, "internal server error")

    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason, run.close_code) == ("failed", "agent_error", 1011)
    assert run.error == "agent error in agent step: UnicodeEncodeError"
    failures = [r for r in caplog.records if r.getMessage().endswith("agent step failed")]
    assert len(failures) == 1 and failures[0].exc_info is not None  # with its traceback


class RecordedActions:
    """The engine's side of a call, as `CallActions` describes it, recording what it asked."""

    failure: str | None = None

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def hangup(self) -> None:
        self.asked.append("hangup")

    async def transfer(self, destination: str) -> None:
        self.asked.append(f"transfer {destination}")

    def finish(self, end_reason: str, gathered: dict[str, Any] | None = None) -> None:
        self.asked.append(f"finish {end_reason}")

    def fail(self, error: str) -> None:
        self.asked.append(f"fail {error}")


async def test_a_timer_that_breaks_is_logged_with_its_traceback_and_ends_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    actions = RecordedActions()
    agent = ScriptedAgent(
        workflow=EngineWorkflow.parse(starter_definition()), context={},
        tts=EspeakSynthesizer(), stt=GrammarRecognizer(), transcript=CallTranscript(16000),
        serializer=None, actions=actions,
    )

    async def broken() -> None:
        raise RuntimeError("timer bug")

    agent._start_timer("max_duration", 0.01, broken)
    await until(lambda: bool(actions.asked), timeout=5)
    assert actions.asked == ["fail agent error in max_duration timer: RuntimeError"]
    (record,) = [r for r in caplog.records if r.getMessage() == "max_duration timer failed"]
    assert record.exc_info is not None and str(record.exc_info[1]) == "timer bug"


# -- the speech decoder process -----------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policy")
@pytest.mark.parametrize(("priority", "policy", "niceness"), [
    (None, "SCHED_IDLE", 0),  # the default: only CPU time the server leaves
    ("batch", "SCHED_BATCH", 19),
    ("normal", "SCHED_OTHER", 0),
])
async def test_the_decoder_process_takes_the_cpu_share_its_priority_says(
    priority: DecoderPriority | None, policy: str, niceness: int,
) -> None:
    """Read from the process itself once its start is done (no decode asked of it: at idle
    priority, on a machine the other test processes keep busy, that can wait long)."""
    before = spawned_children(os.getpid())
    recognizer = GrammarRecognizer() if priority is None else GrammarRecognizer(priority=priority)
    try:
        recognizer.warm_up()
        await until(lambda: bool(spawned_children(os.getpid()) - before), timeout=10)
        (decoder,) = spawned_children(os.getpid()) - before
        wanted = min(os.getpriority(os.PRIO_PROCESS, 0) + niceness, 19)
        await until(lambda: os.sched_getscheduler(decoder) == getattr(os, policy)
                    and os.getpriority(os.PRIO_PROCESS, decoder) == wanted, timeout=20)
    finally:
        recognizer.close()


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policy")
async def test_the_server_s_decoder_takes_the_priority_its_operator_set(
    serve_app: ServeApp, settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENT_STREAM_DECODER_PRIORITY", " Batch ")
    assert Settings.from_env().decoder_priority == "batch"
    monkeypatch.setenv("AGENT_STREAM_DECODER_PRIORITY", "")
    assert Settings.from_env().decoder_priority == "idle"
    before = spawned_children(os.getpid())
    await serve_app(dataclasses.replace(settings, decoder_priority="batch", preload_speech=True))
    await until(lambda: bool(spawned_children(os.getpid()) - before), timeout=10)
    (decoder,) = spawned_children(os.getpid()) - before
    # the policy is set once the model is loaded (its start runs at normal priority)
    await until(lambda: os.sched_getscheduler(decoder) == os.SCHED_BATCH, timeout=20)
    assert os.getpriority(os.PRIO_PROCESS, decoder) == 19
