"""The Agent Stream WebSocket through the real app: lifecycle, every close code, media."""
from __future__ import annotations

import asyncio
import re
import uuid
import wave
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent_stream.config import Settings
from agent_stream.keys import STORE
from agent_stream.server import create_app, runner_options
from agent_stream.simulator import silence_ulaw, tone_ulaw
from agent_stream.store import Store, open_store
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import (
    DOMAIN,
    Crash,
    Dial,
    MakeTenant,
    ServeApp,
    Tenant,
    add_cloudonix_config,
    answered,
    create_tenant,
    finished_run,
    handshake_done,
    latest_run_id,
    open_call,
    until,
    wait_for_handshake,
    wait_for_state,
)

# -- the happy path --------------------------------------------------------------------------


async def test_call_old_form_records_the_run_the_contract_describes(
    dial: Dial, tenant: Tenant, store: Store, emulator: CloudonixEmulator
) -> None:
    call = await dial(tenant.workflow.uuid, domain="acme", call_id="C-42")
    call.start_reading()
    await call.handshake()
    await call.send_audio(tone_ulaw(0.5), realtime=False)
    await call.press("1")
    await call.send_audio(silence_ulaw(0.5), realtime=False)
    await call.press("#")
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")

    run = await finished_run(store, tenant)
    assert run.state == "completed"
    assert run.end_reason == "caller_hangup"
    assert run.close_code == 1000
    assert re.fullmatch(r"WR-AGS-\d{8}", run.name)
    assert (run.call_type, run.mode, run.workflow_uuid) == ("inbound", "cloudonix", tenant.workflow.uuid)
    assert run.initial_context == {
        "caller_number": "+15555550100", "called_number": "+15555550199",
        "provider": "cloudonix", "direction": "inbound",
    }
    assert run.gathered_context["call_id"] == "C-42"
    assert run.gathered_context["cloudonix_call_sid"] == call.call_sid
    assert run.gathered_context["cloudonix_stream_sid"] == call.stream_sid
    assert run.gathered_context["dtmf_digits"] == "1#"
    webhook = run.logs["inbound_webhook"]
    assert webhook["domain"] == "acme"
    assert webhook["normalized_domain"] == DOMAIN
    assert webhook["start"]["callSid"] == call.call_sid
    assert webhook["start"]["mediaFormat"]["sampleRate"] == 8000
    assert run.started_at and run.ended_at and run.duration_seconds is not None
    assert run.logs["timing"]["accept_to_running_ms"] >= 0
    assert run.logs["media_frames_in"] == 50

    with wave.open(run.recording_path) as wav:  # stereo: caller left, agent right
        assert (wav.getframerate(), wav.getnchannels()) == (8000, 2)
        assert wav.getnframes() >= 8000

    validations = [r for r in emulator.requests if r.method == "GET"]
    assert len(validations) == 1
    assert validations[0].authorized and validations[0].status == 200
    assert validations[0].session == call.session and validations[0].domain == DOMAIN


async def test_a_disk_that_refuses_the_recording_still_finishes_the_run(
    dial: Dial, tenant: Tenant, store: Store, settings: Settings
) -> None:
    settings.recordings_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.recordings_dir.write_text("a file where the recordings folder should be")
    call = await answered(dial, tenant.workflow.uuid)
    await call.send_audio(tone_ulaw(0.5), realtime=False)
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")

    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason, run.recording_path) == ("completed", "caller_hangup", None)
    assert run.logs["recording_error"].startswith(("FileExistsError", "NotADirectoryError"))
    assert run.logs["media_frames_in"] == 25


async def test_newer_form_full_call(
    dial: Dial, tenant: Tenant, store: Store, emulator: CloudonixEmulator
) -> None:
    call = await dial(tenant.workflow.uuid, newer_form=True)
    call.caller, call.called = "+442071234567", "+15550001111"
    call.start_reading()
    await call.handshake()
    await call.send_audio(tone_ulaw(0.2), realtime=False)
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")

    run = await finished_run(store, tenant)
    assert run.state == "completed"
    assert run.initial_context["caller_number"] == "+442071234567"
    assert run.initial_context["called_number"] == "+15550001111"
    assert run.gathered_context["call_id"] == call.session
    assert run.logs["inbound_webhook"]["domain"] == DOMAIN
    assert run.logs["inbound_webhook"]["url_form"] == "path"
    assert [r.session for r in emulator.requests] == [call.session]


async def test_provider_closing_the_socket_completes_the_run(
    dial: Dial, tenant: Tenant, store: Store
) -> None:
    call = await dial(tenant.workflow.uuid)
    await call.handshake()
    await call.send_audio(tone_ulaw(0.1), realtime=False)
    await handshake_done(store, tenant)
    await call.ws.close()
    run = await finished_run(store, tenant)
    assert run.state == "completed"
    assert run.end_reason == "caller_hangup"
    assert run.ended_at is not None


async def test_run_is_running_and_visible_during_the_call(
    dial: Dial, tenant: Tenant, store: Store
) -> None:
    call = await dial(tenant.workflow.uuid)
    await call.handshake()
    await call.send_audio(tone_ulaw(0.1), realtime=False)
    run_id = await latest_run_id(store, tenant.org_id, wait=5)
    assert run_id is not None
    run = await wait_for_state(store, run_id, "running")
    assert run.state == "running" and run.started_at is not None
    # the start event's stream id is merged in once the handshake is done
    assert (await wait_for_handshake(store, run_id)).gathered_context["cloudonix_stream_sid"]
    await call.hang_up()
    assert (await finished_run(store, tenant)).state == "completed"


# -- 1008: routing failures, no run ------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "agent", "reason"),
    [
        (None, "valid", "missing provider"),
        ("", "valid", "missing provider"),
        ("skype", "valid", "unknown provider 'skype'"),
        ("cloudonix", "random", "workflow not found"),
        ("cloudonix", "not-a-uuid", "workflow not found"),
    ],
)
async def test_routing_failures_close_1008_without_a_run(
    dial: Dial, tenant: Tenant, store: Store, provider: str | None, agent: str, reason: str
) -> None:
    agent_uuid = {"valid": tenant.workflow.uuid, "random": str(uuid.uuid4())}.get(agent, agent)
    call = await dial(agent_uuid, provider=provider)
    assert await call.wait_closed() == (1008, reason)
    assert await latest_run_id(store, tenant.org_id) is None
    rejection = (await store.list_rejections())[0]
    assert (rejection.code, rejection.reason) == (1008, reason)
    assert rejection.agent_uuid_short == agent_uuid[:8] + "…"
    assert agent_uuid not in repr(rejection) or len(agent_uuid) <= 8


async def test_a_nul_in_the_stream_url_loses_nothing(
    dial: Dial, tenant: Tenant, store: Store
) -> None:
    """A NUL is no text PostgreSQL stores or merges: it is kept as U+FFFD, and the
    rejection, the run and everything the handshake adds to it are all there."""
    call = await dial(tenant.workflow.uuid, provider="sky\x00pe", newer_form=True)
    assert await call.wait_closed() == (1008, "unknown provider 'sky\\x00pe'")
    rejection = (await store.list_rejections())[0]
    assert (rejection.provider, rejection.reason) == ("sky\ufffdpe", "unknown provider 'sky\\x00pe'")

    call = await dial(tenant.workflow.uuid, caller="+1555\x00", call_id="C-\x00")
    await call.handshake()
    await call.send_audio(tone_ulaw(0.1), realtime=False)
    await handshake_done(store, tenant)
    await call.hang_up()
    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason) == ("completed", "caller_hangup")
    assert run.initial_context["caller_number"] == "+1555\ufffd"
    assert run.gathered_context["call_id"] == "C-\ufffd"
    assert run.gathered_context["cloudonix_stream_sid"]  # the handshake's merge went in
    assert run.logs["inbound_webhook"]["url_form"] == "query" and run.logs["inbound_webhook"]["start"]


async def test_archived_workflow_is_not_found(
    dial: Dial, tenant: Tenant, store: Store
) -> None:
    await store.update_workflow(tenant.org_id, tenant.workflow.uuid, status="archived")
    call = await dial(tenant.workflow.uuid)
    assert await call.wait_closed() == (1008, "workflow not found")
    # its operators still see the refusal; no run is created
    (rejection,) = await store.list_rejections(organization_id=tenant.org_id)
    assert (rejection.workflow_id, rejection.code) == (tenant.workflow.id, 1008)
    assert await latest_run_id(store, tenant.org_id) is None


async def test_unknown_provider_in_the_newer_path(dial: Dial, tenant: Tenant) -> None:
    call = await dial(tenant.workflow.uuid, provider="skype", newer_form=True)
    assert await call.wait_closed() == (1008, "unknown provider 'skype'")


async def test_concurrent_call_quota_race_lets_exactly_one_in(
    dial: Dial, make_tenant: MakeTenant, store: Store
) -> None:
    tenant = await make_tenant(max_concurrent_calls=1)
    calls = await asyncio.gather(*(dial(tenant.workflow.uuid) for _ in range(4)))
    for call in calls:
        await call.handshake()
    readers = {call.start_reading(): call for call in calls}
    done, pending = await asyncio.wait(readers, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    while len(done) < 3 and pending:  # three are refused; the one let in stays open
        more, pending = await asyncio.wait(pending, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert more, "a refusal did not come"
        done |= more
    rejected = [readers[reader] for reader in done]
    live = [readers[reader] for reader in pending]
    assert len(live) == 1 and len(rejected) == 3
    await handshake_done(store, tenant)  # the one let in is a live call
    assert not live[0].ws.closed
    for call in rejected:
        assert (await call.wait_closed()) == (
            1008, "quota exceeded: 1 concurrent calls already running")
    runs, total = await store.list_runs(tenant.org_id)
    assert total == 1
    rejections = await store.list_rejections(organization_id=tenant.org_id)
    assert len(rejections) == 3 and all(r.workflow_id == tenant.workflow.id for r in rejections)
    await live[0].hang_up()
    assert await live[0].wait_closed() == (1000, "call ended")
    # the slot is free again once the call ended
    again = await dial(tenant.workflow.uuid)
    await again.handshake()
    await again.hang_up()
    assert await again.wait_closed() == (1000, "call ended")


async def test_monthly_minutes_quota(dial: Dial, make_tenant: MakeTenant, store: Store) -> None:
    tenant = await make_tenant(monthly_minutes_limit=0)
    call = await dial(tenant.workflow.uuid)
    assert await call.wait_closed() == (1008, "quota exceeded: 0 monthly call minutes used")
    assert await latest_run_id(store, tenant.org_id) is None


async def test_minutes_used_counts_this_month_only(
    dial: Dial, make_tenant: MakeTenant, store: Store
) -> None:
    tenant = await make_tenant(monthly_minutes_limit=1)
    call = await dial(tenant.workflow.uuid)
    await call.handshake()
    await call.hang_up()
    await call.wait_closed()
    run = await finished_run(store, tenant)
    used = await store.minutes_used_this_month(tenant.user_id)
    assert used == pytest.approx((run.duration_seconds or 0) / 60)
    assert used < 1
    # a second call still fits: less than one minute used
    again = await dial(tenant.workflow.uuid)
    await again.handshake()
    await again.hang_up()
    assert await again.wait_closed() == (1000, "call ended")


# -- identifiers never reach a provider URL raw -------------------------------------------------


@pytest.mark.parametrize("field", ["session", "call_sid", "stream_sid"])
@pytest.mark.parametrize("value", ["..", ".", "../..", "a/b", "x?y", "S 1", "%2e%2e", "s\u00e9", "x" * 129])
async def test_an_identifier_that_could_bend_a_provider_url_is_a_4400_and_nothing_is_sent(
    dial: Dial, tenant: Tenant, store: Store, emulator: CloudonixEmulator, field: str, value: str
) -> None:
    call = await dial(tenant.workflow.uuid)
    setattr(call, field, value)
    emulator.add_session(DOMAIN, call.session)  # a live session of that name, too
    await call.handshake()
    name = {"session": "session", "call_sid": "callSid", "stream_sid": "streamSid"}[field]
    reason = (f"malformed 'start' event: {name} must be letters, digits and . _ : - only "
              "(at most 128, starting with a letter or digit)")
    await assert_handshake_failure(call, store, tenant, reason)
    assert emulator.requests == []  # no request left with the customer's token
    assert DOMAIN in emulator.tokens  # and the domain was not deleted


async def test_provider_identifiers_as_providers_send_them_pass(
    dial: Dial, tenant: Tenant, emulator: CloudonixEmulator
) -> None:
    call = await dial(tenant.workflow.uuid)
    call.session = "v3:Ab-9_x.7:1700000000.42"
    emulator.add_session(DOMAIN, call.session)
    await call.handshake()
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")
    assert [r.session for r in emulator.requests] == [call.session]


async def test_a_malformed_domain_in_the_url_is_a_4400(dial: Dial, tenant: Tenant, store: Store) -> None:
    call = await dial(tenant.workflow.uuid, domain="acme/../x")
    await assert_handshake_failure(call, store, tenant, "malformed Domain 'acme/../x'")


# -- every provider of the contract is known --------------------------------------------------


@pytest.mark.parametrize(("name", "mode"), [
    ("Cloudonix", "cloudonix"), ("TWILIO", "twilio"), ("Telnyx", "telnyx"), ("Plivo", "plivo"),
    ("Vonage", "vonage"), ("Asterisk", "asterisk"), ("ARI", "asterisk"), ("Exotel", "exotel"),
    ("Web", "web"),
])
async def test_every_provider_name_of_the_contract_reaches_its_handshake(
    dial: Dial, tenant: Tenant, store: Store, name: str, mode: str
) -> None:
    """Whatever its case, a provider's name (or Asterisk's alias) routes the call: a run in
    the provider's mode, failed by that provider's own handshake (4400), never a 1008."""
    call = await dial(tenant.workflow.uuid, provider=name, newer_form=True)
    await call.send(b"\x00")  # no provider opens its stream with this
    code, _ = await call.wait_closed()
    assert code == 4400
    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason, run.mode) == ("failed", "handshake_failed", mode)
    assert run.call_type == ("web" if mode == "web" else "inbound")


# -- 4400: Cloudonix handshake --------------------------------------------------------------------


async def assert_handshake_failure(call: Any, store: Store, tenant: Tenant, reason: str) -> None:
    code, got = await call.wait_closed()
    assert (code, got) == (4400, reason)
    run = await finished_run(store, tenant)
    assert (run.state, run.close_code, run.error) == ("failed", 4400, reason)
    assert run.end_reason == "handshake_failed"


async def test_missing_domain(dial: Dial, tenant: Tenant, store: Store) -> None:
    call = await dial(tenant.workflow.uuid, domain=None)
    await assert_handshake_failure(call, store, tenant, "missing Domain")


async def test_no_configuration_for_domain(dial: Dial, tenant: Tenant, store: Store) -> None:
    call = await dial(tenant.workflow.uuid, domain="other")
    await assert_handshake_failure(
        call, store, tenant, "no Cloudonix telephony configuration for domain other.cloudonix.net")


async def test_configuration_of_another_organization_is_not_used(
    dial: Dial, make_tenant: MakeTenant, store: Store
) -> None:
    ours = await make_tenant(domain="ours.cloudonix.net")
    await make_tenant(domain="theirs.cloudonix.net", token="their-token-abcdef")
    call = await dial(ours.workflow.uuid, domain="theirs")
    await assert_handshake_failure(
        call, store, ours, "no Cloudonix telephony configuration for domain theirs.cloudonix.net")


async def test_same_domain_in_two_organizations_uses_each_ones_token(
    dial: Dial, make_tenant: MakeTenant, store: Store, emulator: CloudonixEmulator
) -> None:
    first = await make_tenant(domain="shared.cloudonix.net", token="token-of-first-org-1111")
    second = await make_tenant(domain="shared.cloudonix.net", token="token-of-second-org-2222")
    # the emulator accepts only the last token registered: the second org's
    call = await dial(second.workflow.uuid, domain="shared", session_domain="shared.cloudonix.net")
    await call.handshake()
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")
    call = await dial(first.workflow.uuid, domain="shared", session_domain="shared.cloudonix.net")
    await call.handshake()
    await assert_handshake_failure(
        call, store, first, "session validation failed: Cloudonix answered HTTP 401")
    assert emulator.requests[-1].authorized is False


async def test_configuration_without_bearer_token(
    dial: Dial, tenant: Tenant, store: Store
) -> None:
    await add_cloudonix_config(store, tenant.org_id, name="empty", domain="notoken.cloudonix.net",
                               token="")
    call = await dial(tenant.workflow.uuid, domain="notoken")
    await assert_handshake_failure(
        call, store, tenant, "Cloudonix configuration for notoken.cloudonix.net has no bearer token")


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        ("not json", None, "malformed 'connected' event: not JSON"),
        ('["connected"]', None, "malformed 'connected' event: not a JSON object"),
        ('{"event": "start"}', None, "expected 'connected' event, got 'start'"),
        (b"\x00\x01", None, "expected a JSON text 'connected' event, got a binary frame"),
        (None, '{"event": "media"}', "expected 'start' event, got 'media'"),
        (None, '{"event": "start"}', "malformed 'start' event: missing 'start' object"),
        (None, '{"event": "start", "start": {"callSid": "CA1"}}',
         "malformed 'start' event: missing streamSid"),
        (None, '{"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1"}}',
         "malformed 'start' event: missing callSid"),
        (None, '{"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", '
               '"mediaFormat": {"encoding": "audio/x-alaw", "sampleRate": 8000}}}',
         "unsupported media format audio/x-alaw at 8000 Hz (need 8 kHz mu-law)"),
    ],
)
async def test_malformed_handshake_events(
    dial: Dial, tenant: Tenant, store: Store, first: Any, second: Any, reason: str
) -> None:
    call = await dial(tenant.workflow.uuid)
    if first is None:
        await call.send_connected()
        await call.ws.send_str(second)
    elif isinstance(first, bytes):
        await call.ws.send_bytes(first)
    else:
        await call.ws.send_str(first)
    await assert_handshake_failure(call, store, tenant, reason)


@pytest.fixture
def quick_settings(settings: Settings) -> Settings:
    return replace(settings, handshake_timeout=0.3, provider_api_timeout=0.3)


async def test_handshake_timeout_waiting_for_connected(
    serve_app: ServeApp, quick_settings: Settings, emulator: CloudonixEmulator
) -> None:
    client = await serve_app(quick_settings)
    tenant, call = await _quick_call(client, emulator)
    await assert_handshake_failure(call, client.app[STORE], tenant,
                                   "timed out waiting for 'connected' event")


async def test_handshake_timeout_waiting_for_start(
    serve_app: ServeApp, quick_settings: Settings, emulator: CloudonixEmulator
) -> None:
    client = await serve_app(quick_settings)
    tenant, call = await _quick_call(client, emulator)
    await call.send_connected()
    await assert_handshake_failure(call, client.app[STORE], tenant,
                                   "timed out waiting for 'start' event")


async def test_session_validation_timeout(
    serve_app: ServeApp, quick_settings: Settings, emulator: CloudonixEmulator
) -> None:
    client = await serve_app(quick_settings)
    tenant, call = await _quick_call(client, emulator)
    emulator.delay = 1.0
    await call.handshake()
    await assert_handshake_failure(call, client.app[STORE], tenant,
                                   "session validation failed: Cloudonix API timed out")


async def _quick_call(client: Any, emulator: CloudonixEmulator) -> tuple[Tenant, Any]:
    tenant = await create_tenant(client.app[STORE], emulator, definition={"nodes": []})
    call = await open_call(client.session, str(client.make_url("/")), emulator, tenant.workflow.uuid)
    return tenant, call


@pytest.mark.parametrize(
    ("live", "status", "reason"),
    [
        (False, None, "session validation failed: Cloudonix answered HTTP 404"),
        (True, 500, "session validation failed: Cloudonix answered HTTP 500"),
    ],
)
async def test_session_validation_rejected(
    dial: Dial, tenant: Tenant, store: Store, emulator: CloudonixEmulator,
    live: bool, status: int | None, reason: str,
) -> None:
    emulator.status_override = status
    call = await dial(tenant.workflow.uuid, live_session=live)
    await call.handshake()
    await assert_handshake_failure(call, store, tenant, reason)


async def test_session_defaults_to_call_sid(
    dial: Dial, tenant: Tenant, store: Store, emulator: CloudonixEmulator
) -> None:
    call = await dial(tenant.workflow.uuid)
    call.session = None  # type: ignore[assignment]
    emulator.add_session(DOMAIN, call.call_sid)
    await call.handshake()
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")
    assert emulator.requests[-1].session == call.call_sid


# -- malformed media ----------------------------------------------------------------------


async def test_bad_frames_after_the_handshake_are_counted_not_fatal(
    dial: Dial, tenant: Tenant, store: Store
) -> None:
    call = await answered(dial, tenant.workflow.uuid)
    await call.ws.send_bytes(b"\x00" * 320)
    await call.send_json({"event": "media", "streamSid": call.stream_sid,
                          "media": {"payload": "!!!not base64!!!"}})
    await call.send_json({"event": "media", "media": {}})
    await call.send_json({"event": "bogus"})
    await call.ws.send_str("{not json")
    await call.send_json({"event": "dtmf", "dtmf": {"digit": "x"}})
    await call.send_connected()
    await call.send_audio(tone_ulaw(0.1), realtime=False)
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")
    run = await finished_run(store, tenant)
    assert run.state == "completed"
    assert run.logs["protocol_errors"] == {
        "binary frame": 1, "bad base64 payload": 1, "media without payload": 1,
        "unknown event": 1, "malformed JSON": 1, "bad dtmf digit": 1,
        "repeated connected event": 1,
    }
    assert run.logs["media_frames_in"] == 5


async def test_one_megabyte_message_closes_1009_and_fails_the_run(
    dial: Dial, tenant: Tenant, store: Store, client: Any
) -> None:
    call = await answered(dial, tenant.workflow.uuid)
    await call.ws.send_str("x" * (1024 * 1024))
    code, reason = await call.wait_closed()
    assert (code, reason) == (1009, "message too big")
    run = await finished_run(store, tenant)
    assert (run.state, run.close_code, run.end_reason) == ("failed", 1009, "message_too_big")
    assert run.error == "message too big (limit 65536 bytes)"
    # the process is unharmed
    assert (await client.get("/api/v1/health")).status == 200


async def test_oversized_message_during_handshake(
    dial: Dial, tenant: Tenant, store: Store
) -> None:
    call = await dial(tenant.workflow.uuid)
    await call.ws.send_str("x" * (1024 * 1024))
    assert await call.wait_closed() == (1009, "message too big")
    run = await finished_run(store, tenant)
    assert (run.state, run.close_code) == ("failed", 1009)


# -- shutdown and restart ---------------------------------------------------------------------


async def test_shutdown_closes_live_calls_with_1001_and_finishes_their_runs(
    aiohttp_server: Any, settings: Settings, emulator: CloudonixEmulator, tmp_path: Path
) -> None:
    server = await aiohttp_server(create_app(settings), **runner_options(settings))
    tenant = await create_tenant(server.app[STORE], emulator)
    import aiohttp

    async with aiohttp.ClientSession() as http:
        calls = []
        for _ in range(2):
            call = await open_call(http, str(server.make_url("/")), emulator, tenant.workflow.uuid)
            call.start_reading()
            await call.handshake()
            await call.send_audio(tone_ulaw(0.1), realtime=False)
            calls.append(call)
        for call in calls:  # both calls are live: the agent's greeting is playing
            await until(lambda call=call: call.received_media_bytes > 0)
        await server.close()
        for call in calls:
            assert await call.wait_closed() == (1001, "server shutting down")

    reopened = await open_store(settings)
    try:
        runs, total = await reopened.list_runs(tenant.org_id)
        assert total == 2
        for run in runs:
            assert (run.state, run.end_reason, run.close_code) == (
                "completed", "server_shutdown", 1001)
            assert run.ended_at is not None
    finally:
        await reopened.close()


async def test_restart_fails_runs_left_open_by_a_crash(
    serve_app: ServeApp, settings: Settings, crash: Crash
) -> None:
    pending = await crash.open_run(running=False)
    running = await crash.open_run()
    await crash.store.close()  # the "crash": nobody finished these runs

    client = await serve_app(settings)
    restarted: Store = client.app[STORE]
    for run_id in (pending.id, running.id):
        run = await restarted.get_run_by_id(run_id)
        assert (run.state, run.error, run.end_reason) == (
            "failed", "server restarted", "server_restarted")
        assert run.ended_at is not None


async def test_an_invalid_stored_definition_fails_the_run_with_1011(
    dial: Dial, tenant: Tenant, store: Store
) -> None:
    await store.update_workflow(tenant.org_id, tenant.workflow.uuid, definition={"nodes": []})
    call = await dial(tenant.workflow.uuid)
    await call.handshake()
    reason = "invalid workflow definition: definition.nodes must be a non-empty list"
    assert await call.wait_closed() == (1011, reason)
    run = await finished_run(store, tenant)
    assert (run.state, run.error, run.close_code) == ("failed", reason, 1011)


async def test_a_provider_that_goes_quiet_is_closed_1011_and_the_run_fails(
    dial: Dial, tenant: Tenant, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent_stream.calls.call as stream

    monkeypatch.setattr(stream, "MEDIA_IDLE_TIMEOUT", 0.5)
    monkeypatch.setattr(stream, "WATCHDOG_PERIOD", 0.1)
    call = await dial(tenant.workflow.uuid)
    call.echo_marks = False
    call.start_reading()
    await call.handshake()  # ...and then nothing more
    assert await call.wait_closed() == (1011, "no media from provider for 0.5 s")
    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason, run.close_code) == ("failed", "provider_timeout", 1011)
