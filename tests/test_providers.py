"""The provider contract suite: every scenario of contract section 7 for every provider,
through the real app and real sockets, each provider's REST API played by its emulator
(provider_kits.py says what differs between them)."""
from __future__ import annotations

import base64
import json
import logging
import time
import uuid
import wave
from array import array
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestClient
from pipecat.frames.frames import InterruptionFrame
from yarl import URL

from agent_stream.audio import alaw_to_pcm16, pcm16_to_alaw, resample, rms, ulaw_to_pcm16
from agent_stream.config import Settings
from agent_stream.errors import clip_reason
from agent_stream.models import Run, TelephonyConfig, Workflow
from agent_stream.providers import provider_named
from agent_stream.providers.exotel.wire import ExotelWire
from agent_stream.providers.exotel.wire import parse_start as parse_exotel_start
from agent_stream.providers.identifiers import IDENTIFIER_RULE
from agent_stream.providers.twilio import signature
from agent_stream.providers.vonage.client import destination_endpoint
from agent_stream.simulator import SimulatedCall, caller_side, connect, stream_url, tone_ulaw
from agent_stream.store import Store
from tests.admin_fixtures import sign_in
from tests.conftest import finished_run, stored_bytes, until
from tests.provider_emulators import start_rest_emulator
from tests.provider_kits import KITS, Expected, Kit

DESTINATION = "+15555550123"


def quick_agent() -> dict[str, Any]:
    """A short agent: 1 hangs up, 0 transfers, anything else is asked again."""
    return {
        "version": 1,
        "settings": {"language": "en", "voice": "en-us", "max_duration_seconds": 60,
                     "silence_timeout_seconds": 20},
        "nodes": [
            {"id": "start", "kind": "start", "say": "Hi."},
            {"id": "bye", "kind": "end", "say": "Bye."},
            {"id": "human", "kind": "transfer", "say": "One moment.", "destination": DESTINATION},
        ],
        "edges": [
            {"from": "start", "to": "bye", "dtmf": "1", "fallback": True},
            {"from": "start", "to": "human", "dtmf": "0"},
        ],
    }


@pytest.fixture(params=sorted(KITS))
async def kit(request: pytest.FixtureRequest, aiohttp_server: Any) -> Kit:
    kit = KITS[request.param]()
    kit.base_url = await start_rest_emulator(aiohttp_server, kit.emulator)
    return kit


@pytest.fixture
def public_url() -> str | None:
    """AGENT_STREAM_PUBLIC_URL (a test parametrizes it to play a proxy in front)."""
    return None


@pytest.fixture
def settings(settings: Settings, kit: Kit, public_url: str | None) -> Settings:
    return replace(settings, api_base_urls={**settings.api_base_urls, kit.provider: kit.base_url},
                   public_url=public_url)


@dataclass
class Line:
    """An organization with an agent and a configuration of the kit's provider."""

    org_id: int
    headers: dict[str, str]
    workflow: Workflow
    account: str
    secret: str
    config_id: int


@pytest.fixture
async def line(client: TestClient, store: Store, kit: Kit) -> Line:
    """The organization's line of the provider under test."""
    return await make_line(client, store, kit)


async def make_line(client: TestClient, store: Store, kit: Kit, name: str = "Org") -> Line:
    org = await store.get_or_create_organization(name)
    user = await store.create_user(
        organization_id=org.id, email=f"{name.lower().replace(' ', '-')}@example.com", password="pw"
    )
    _, api_key = await store.create_api_key(user.id, "tests")
    headers = {"Authorization": f"Bearer {api_key}"}
    workflow = await store.create_workflow(
        organization_id=org.id, owner_user_id=user.id, name="Agent", definition=quick_agent()
    )
    account, secret = kit.new_account()
    response = await client.post(
        "/api/v1/telephony-configurations",
        json={"provider": kit.provider, "name": "main"} | kit.config(account, secret),
        headers=headers,
    )
    assert response.status == 201, await response.text()
    return Line(org.id, headers, workflow, account, secret, (await response.json())["id"])


async def add_config(client: TestClient, kit: Kit, line: Line, name: str, account: str,
                     secret: str) -> int:
    response = await client.post(
        "/api/v1/telephony-configurations",
        json={"provider": kit.provider, "name": name} | kit.config(account, secret),
        headers=line.headers,
    )
    assert response.status == 201, await response.text()
    return int((await response.json())["id"])


async def dial(client: TestClient, kit: Kit, line: Line, *, live: bool = True,
               secret: str | None = None, upgrade_secrets: dict[str, str] | None = None,
               **identity: Any) -> SimulatedCall:
    """A call of the line's account, as the provider opens it (signing where it signs, with
    `secret` or the line's; `upgrade_secrets` instead: exactly what the upgrade carries)."""
    who = kit.identity(line.account) | identity
    if live:
        kit.make_live(who["account_sid"], who)
    url = stream_url(str(client.make_url("/")), line.workflow.uuid, provider=kit.provider,
                     newer_form=True)
    call = await connect(client.session, url, provider=kit.provider, encoding=kit.encoding,
                         secrets=kit.secrets(secret or line.secret) if upgrade_secrets is None
                         else upgrade_secrets, **who)
    call.start_reading()
    return call


async def changed(client: TestClient, line: Line, changes: dict[str, Any]) -> dict[str, Any]:
    """The line's configuration after a PATCH of `changes` (which must be accepted)."""
    response = await client.patch(f"/api/v1/telephony-configurations/{line.config_id}",
                                  json=changes, headers=line.headers)
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def greeted(call: SimulatedCall) -> None:
    """Through the handshake, and the greeting played (its mark echoed)."""
    await call.handshake()
    await until(lambda: "utt-1" in call.marks)


async def greeted_and_hung_up(call: SimulatedCall) -> None:
    """A call that goes through: greeted, then the caller hangs up and the server says so."""
    await greeted(call)
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")


def seen(kit: Kit) -> list[tuple[str, str, Any]]:
    return [kit.request_seen(r) for r in kit.requests()]


def assert_sent(kit: Kit, expected: Expected) -> None:
    """`expected` is among the requests the provider's API got, authorized."""
    for request in kit.requests():
        method, path, body = kit.request_seen(request)
        if (method, path) == (expected.method, expected.path):
            assert request.authorized, (method, path)
            if expected.body is not None:
                assert body == expected.body
            if expected.check is not None:
                expected.check(body)
            return
    raise AssertionError(f"{expected} not in {seen(kit)}")


# -- a call ------------------------------------------------------------------------------------------


async def test_a_call_completes_with_the_run_the_contract_describes(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    call = await dial(client, kit, line)
    await greeted(call)  # the greeting played, in the call's codec
    await call.send_audio(tone_ulaw(0.2), realtime=False)
    await call.press("5")
    await call.hang_up()
    assert await call.wait_closed() == kit.hang_up_close

    run = await finished_run(store, line)
    assert (run.state, run.end_reason, run.close_code, run.mode) == (
        "completed", "caller_hangup", 1000, kit.provider)
    call_id = kit.call_id_of(call)
    assert run.gathered_context[kit.call_key] == call_id
    assert run.gathered_context[kit.stream_key] == call.stream_sid
    assert run.gathered_context["dtmf_digits"] == "5"
    configuration = run.logs["inbound_webhook"]["configuration"]
    assert configuration["id"] == line.config_id
    assert run.logs["media_frames_in"] == 10
    assert run.transcript[0].role == "agent" and run.transcript[0].text == "Hi."
    assert_sent(kit, kit.validation(line.account, call_id))


@pytest.mark.parametrize(
    ("first", "reason"),
    [(b"\x00\x01", "got a binary frame"), ("not json", "not JSON"), ('{"event": "media"}', "got 'media'")],
)
async def test_first_messages_the_provider_would_not_send_are_a_4400(
    client: TestClient, store: Store, kit: Kit, line: Line, first: str | bytes, reason: str
) -> None:
    call = await dial(client, kit, line)
    await call.send(first)
    code, said = await call.wait_closed()
    if first == "not json":
        reason = kit.not_json_reason  # Asterisk also reads plain-text events
    assert code == 4400 and reason in said
    run = await finished_run(store, line)
    assert (run.state, run.end_reason) == ("failed", "handshake_failed")
    assert kit.requests() == []


async def test_an_identifier_that_could_bend_a_url_is_a_4400_and_nothing_is_sent(
    client: TestClient, kit: Kit, line: Line
) -> None:
    call = await dial(client, kit, line, call_sid="..", session="..")
    await call.handshake()
    code, reason = await call.wait_closed()
    assert code == 4400 and "must be letters, digits and . _ : -" in reason
    assert kit.requests() == []


# -- choosing the configuration --------------------------------------------------------------------


async def test_a_custom_parameter_names_the_configuration_by_id_or_name(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    other, other_secret = kit.new_account()
    second = await add_config(client, kit, line, "second line", other, other_secret)
    for reference in (str(second), "second line") if kit.names_configurations else (str(second),):
        call = await dial(client, kit, line, secret=other_secret, account_sid=other,
                          custom_parameters={"telephony_configuration": reference})
        await call.handshake()
        await until(lambda call=call: call.received_media_bytes > 0)
        await call.hang_up()
        assert await call.wait_closed() == kit.hang_up_close
        run = await finished_run(store, line)
        assert (run.state, run.end_reason) == ("completed", "caller_hangup")
        assert run.logs["inbound_webhook"]["configuration"] == {
            "id": second, "name": "second line", "selected_by": "custom parameter"}
        assert run.initial_context["custom_parameters"] == kit.stream_parameters(
            {"telephony_configuration": reference}, call)

    call = await dial(client, kit, line, custom_parameters={"telephony_configuration": "nope"})
    await call.handshake()
    assert (await call.wait_closed())[1] == f"no {title(kit)} telephony configuration 'nope'"


@pytest.mark.parametrize(("given", "stored"), [
    ({"note": "a\x00b"}, {"note": "a\ufffdb"}),
    ({"note": "a\ud800b", "k\udfff": "v"}, {"note": "a\ufffdb", "k\ufffd": "v"}),
], ids=["nul", "unpaired-surrogate"])
async def test_text_no_database_holds_in_a_custom_parameter_loses_nothing_else(
    client: TestClient, store: Store, kit: Kit, line: Line,
    given: dict[str, str], stored: dict[str, str],
) -> None:
    """PostgreSQL's JSON functions refuse a NUL, and its json half a surrogate pair
    ("\\ud800": valid JSON, no text, no UTF-8): each is kept as U+FFFD on both backends, and
    the merge that carries the call's context (call id, parameters, the start event) goes in."""
    if "k\udfff" in given and kit.provider in ("asterisk", "exotel"):
        pytest.skip("its custom parameters travel in the stream URL, which carries UTF-8 only")
    call = await dial(client, kit, line, custom_parameters=given)
    await call.handshake()
    await until(lambda: call.received_media_bytes > 0)
    await call.hang_up()
    assert await call.wait_closed() == kit.hang_up_close
    run = await finished_run(store, line)
    assert (run.state, run.end_reason) == ("completed", "caller_hangup")
    assert run.initial_context["custom_parameters"] == kit.stream_parameters(stored, call)
    assert run.gathered_context["call_id"]
    assert run.logs["inbound_webhook"]["start"]


def title(kit: Kit) -> str:
    return {"cloudonix": "Cloudonix", "twilio": "Twilio", "telnyx": "Telnyx", "plivo": "Plivo",
            "vonage": "Vonage", "asterisk": "Asterisk", "exotel": "Exotel"}[kit.provider]


async def test_an_account_no_configuration_names_is_a_4400_never_another_organization_s(
    client: TestClient, store: Store, kit: Kit
) -> None:
    ours = await make_line(client, store, kit, "Ours")
    theirs = await make_line(client, store, kit, "Theirs")
    if not kit.account_in_stream:
        await streams_naming_no_account_never_reach_another_organization(client, store, kit, ours, theirs)
        return
    # their account, on our agent: their configuration is never ours to use
    call = await dial(client, kit, ours, account_sid=theirs.account, secret=theirs.secret)
    await call.handshake()
    code, reason = await call.wait_closed()
    assert code == 4400 and reason.startswith(f"no {title(kit)} telephony configuration for")
    assert theirs.account in reason
    assert kit.requests() == []


async def streams_naming_no_account_never_reach_another_organization(
    client: TestClient, store: Store, kit: Kit, ours: Line, theirs: Line
) -> None:
    """Where the stream names no account (Asterisk), their configuration named by the
    parameter on our agent is none of ours; without it, our only configuration is used and
    their call is not ours to validate."""
    call = await dial(client, kit, ours, account_sid=theirs.account, secret=theirs.secret,
                      custom_parameters={"telephony_configuration": str(theirs.config_id)})
    await call.handshake()
    assert await call.wait_closed() == (
        4400, f"no {title(kit)} telephony configuration '{theirs.config_id}'")
    assert kit.requests() == []

    call = await dial(client, kit, ours, account_sid=theirs.account, secret=theirs.secret)
    await call.handshake()
    code, reason = await call.wait_closed()
    assert code == 4400 and reason.startswith("session validation failed")
    # asked with our credentials (theirs would find their call: 200), of our PBX, which has none
    [asked] = kit.requests()
    assert asked.authorized and asked.status == 404
    run = await finished_run(store, ours)
    assert (run.state, run.error) == ("failed", reason)


# -- what the agent does through the provider's API ------------------------------------------------


async def press_after_greeting(
    client: TestClient, store: Store, kit: Kit, key: str, before: Callable[[], object] = lambda: None
) -> tuple[Line, SimulatedCall, tuple[int, str], Run]:
    """A call whose caller, once greeted (and after `before`), presses `key`: 1 and the
    agent says goodbye and hangs up, 0 and it transfers. The line, the call, how the
    server closed it and the ended run."""
    line = await make_line(client, store, kit)
    call = await dial(client, kit, line)
    await greeted(call)
    before()
    await call.press(key)
    closed = await call.wait_closed(timeout=20)
    return line, call, closed, await finished_run(store, line)


def only_validated(kit: Kit, line: Line, call: SimulatedCall) -> None:
    """The provider's API was asked to validate the call, and nothing else."""
    validation = kit.validation(line.account, kit.call_id_of(call))
    assert [(method, path) for method, path, _ in seen(kit)] == [(validation.method, validation.path)]


def transfer_end(kit: Kit) -> tuple[str, str]:
    """How a transfer ends: the close reason and the run's end reason."""
    if kit.no_transfer:
        return "transfer not offered by the provider", "transfer_unsupported"
    return "call transferred", "transfer"


async def test_the_agent_hangs_up_after_its_last_words_through_the_api(
    client: TestClient, store: Store, kit: Kit
) -> None:
    line, call, closed, run = await press_after_greeting(client, store, kit, "1")
    assert closed == (1000, "agent hung up")
    assert "utt-2" in call.marks  # "Bye." was played before the hang-up
    assert (run.state, run.end_reason) == ("completed", "agent_hangup")
    if kit.hangs_up_on_stream:  # a command on the socket, after the goodbye's mark
        assert [h.kind for h in call.heard if h.kind in ("mark", "hangup")][-2:] == ["mark", "hangup"]
        assert seen(kit) == [kit.request_seen(r) for r in kit.requests()[:1]]  # validation only
    elif kit.hangs_up_by_closing:  # the close is the hang-up: nothing else is asked
        only_validated(kit, line, call)
    else:
        assert_sent(kit, kit.hangup(line.account, kit.call_id_of(call)))


async def test_a_transfer_goes_through_the_api(
    client: TestClient, store: Store, kit: Kit
) -> None:
    line, call, closed, run = await press_after_greeting(client, store, kit, "0")
    reason, end_reason = transfer_end(kit)
    assert closed == (1000, reason)
    assert (run.state, run.end_reason) == ("completed", end_reason)
    assert run.gathered_context["transfer_destination"] == DESTINATION
    if kit.no_transfer:  # the run says why, and the provider is asked nothing
        assert (run.logs["transfer_unsupported"], run.error) == (kit.no_transfer, None)
        only_validated(kit, line, call)
        return
    assert "transfer_unsupported" not in run.logs
    assert_sent(kit, kit.transfer(line.account, kit.call_id_of(call), DESTINATION))
    if kit.hangs_up_on_stream:  # then the stream hangs up, for the dialplan to dial
        assert [h.kind for h in call.heard].count("hangup") == 1


@pytest.mark.parametrize("key", ["1", "0"])
async def test_a_hang_up_or_transfer_answered_already_over_counts_as_done(
    client: TestClient, store: Store, kit: Kit, key: str
) -> None:
    line, call, closed, run = await press_after_greeting(
        client, store, kit, key, before=kit.end_all_calls)
    reason, end_reason = ("agent hung up", "agent_hangup") if key == "1" else transfer_end(kit)
    assert closed == (1000, reason)
    assert (run.state, run.end_reason, run.error) == ("completed", end_reason, None)
    if key == "1" and kit.hangs_up_on_stream:  # no request: the command on the socket
        assert [h.kind for h in call.heard].count("hangup") == 1
    elif kit.hangs_up_by_closing if key == "1" else kit.no_transfer:
        only_validated(kit, line, call)  # nothing asked, so nothing answered "over"
    else:
        assert kit.requests()[-1].status == kit.already_over


async def test_a_refused_hang_up_fails_the_run_with_the_provider_s_answer(
    client: TestClient, store: Store, kit: Kit
) -> None:
    """Where the hang-up is a command on the stream (Asterisk), nothing can refuse it: the
    transfer's request is what the provider refuses instead. Where neither is a request
    (Exotel), nothing is refused and the run completes."""
    if kit.hangs_up_by_closing and kit.no_transfer:
        line, call, closed, run = await press_after_greeting(
            client, store, kit, "1", before=lambda: kit.refuse_all(500))
        assert closed == (1000, "agent hung up")
        assert (run.state, run.end_reason, run.error) == ("completed", "agent_hangup", None)
        only_validated(kit, line, call)
        return
    key, action = ("0", "transfer") if kit.hangs_up_on_stream else ("1", "hangup")
    _, _, closed, run = await press_after_greeting(
        client, store, kit, key, before=lambda: kit.refuse_all(500))
    assert closed[0] == 1000
    assert (run.state, run.end_reason) == ("failed", "agent_hangup" if key == "1" else "transfer")
    assert run.error == f"{action} failed: {title(kit)} {action} failed: HTTP 500"


async def test_a_secret_with_a_line_break_is_refused_by_its_field_and_nothing_is_stored(
    client: TestClient, kit: Kit, line: Line
) -> None:
    """A pasted token with a line break would become a header of every request to the
    provider: refused where it is typed, for the API as for the admin."""
    account, secret = kit.new_account()
    secret_field, value = kit.one_line_secret or (kit.fields[1], secret)
    response = await client.post(
        "/api/v1/telephony-configurations", headers=line.headers,
        json={"provider": kit.provider, "name": "pasted"} | kit.config(account, secret)
        | {secret_field: value + "\r\nX-Evil: 1"},
    )
    assert response.status == 400, await response.text()
    problems = (await response.json())["problems"]
    assert [p["field"] for p in problems] == [secret_field]
    assert "line break" in problems[0]["message"] and value not in json.dumps(problems)
    listed = await client.get("/api/v1/telephony-configurations", headers=line.headers)
    assert [c["name"] for c in (await listed.json())["telephony_configurations"]] == ["main"]


async def test_validation_refused_is_a_4400(client: TestClient, kit: Kit, line: Line) -> None:
    call = await dial(client, kit, line, live=False)  # the provider knows no such call
    await call.handshake()
    code, reason = await call.wait_closed()
    assert code == 4400 and reason.startswith("session validation failed")


async def test_barge_in_sends_the_provider_s_clear(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    definition = quick_agent()
    definition["nodes"][0]["say"] = "Hello, thanks for calling Acme. Would you like to book an appointment?"
    await store.update_workflow(line.org_id, line.workflow.uuid, definition=definition)
    call = await dial(client, kit, line)
    await call.handshake()
    await until(lambda: call.received_media_bytes > 4000)  # half a second of the greeting
    await call.press("9")  # the caller talks over it (a key nobody expects)
    await until(lambda: call.clears == 1)
    await call.hang_up()
    await call.wait_closed()
    run = await finished_run(store, line)
    assert run.transcript[0].interrupted
    assert run.logs["protocol_errors"] == {}  # what answers a clear (Plivo's) is no error


# -- secrets -------------------------------------------------------------------------------------------


async def test_secrets_never_reach_answers_pages_or_logs(
    client: TestClient, store: Store, kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    line = await make_line(client, store, kit)
    call = await dial(client, kit, line)
    await call.handshake()
    await call.hang_up()
    await call.wait_closed()
    listed = await client.get("/api/v1/telephony-configurations", headers=line.headers)
    one = await client.get(f"/api/v1/telephony-configurations/{line.config_id}", headers=line.headers)
    run = await finished_run(store, line)
    detail = await client.get(f"/api/v1/workflow-runs/{run.id}", headers=line.headers)
    for answer in (listed, one, detail):
        assert answer.status == 200
        assert line.secret not in await answer.text()
    config = (await listed.json())["telephony_configurations"][0]
    assert any(key.startswith("has_") and value is True for key, value in config.items())
    assert line.secret not in caplog.text
    assert line.workflow.uuid not in caplog.text


# -- what differs: Twilio signs its upgrades ---------------------------------------------------------


only_twilio = pytest.mark.parametrize("kit", ["twilio"], indirect=True)


@only_twilio
async def test_twilio_upgrades_without_a_valid_signature_are_refused(
    client: TestClient, kit: Kit, line: Line, non_utf8_headers: str
) -> None:
    url = stream_url(str(client.make_url("/")), line.workflow.uuid, provider="twilio",
                     newer_form=True)
    who = kit.identity(line.account)
    kit.make_live(line.account, who)
    for headers, reason in (
        ({}, "missing X-Twilio-Signature"),
        ({"X-Twilio-Signature": signature("another-token", "wss://" + url.partition("://")[2])},
         "X-Twilio-Signature does not match the stream URL and auth token"),
        ({"X-Twilio-Signature": "c2lnbmF0dXJl" + non_utf8_headers},  # a byte that is not UTF-8
         "X-Twilio-Signature does not match the stream URL and auth token"),
    ):
        ws = await client.session.ws_connect(url, headers=headers, autoclose=False)
        call = SimulatedCall(ws, side=caller_side("twilio"), **who)
        await call.handshake()
        assert await call.wait_closed() == (4400, reason)
    assert kit.requests() == []  # refused before anything was asked of Twilio


@only_twilio
@pytest.mark.parametrize("public_url", ["https://voice.example.com"])
async def test_twilio_signs_the_public_url_a_proxy_in_front_received(
    client: TestClient, kit: Kit, line: Line
) -> None:
    path = f"/api/v1/agent-stream/twilio/{line.workflow.uuid}"
    who = kit.identity(line.account)
    kit.make_live(line.account, who)
    headers = {"X-Twilio-Signature": signature(line.secret, f"wss://voice.example.com{path}")}
    ws = await client.session.ws_connect(client.make_url(path), headers=headers, autoclose=False)
    call = SimulatedCall(ws, side=caller_side("twilio"), **who)
    call.start_reading()
    await greeted_and_hung_up(call)


@only_twilio
async def test_twilio_two_configurations_of_one_account_need_the_parameter(
    client: TestClient, kit: Kit, line: Line
) -> None:
    await add_config(client, kit, line, "night line", line.account, line.secret)
    call = await dial(client, kit, line)
    await call.handshake()
    assert await call.wait_closed() == (4400, (
        f"2 Twilio configurations for account {line.account}: name one with the "
        "telephony_configuration parameter"))


# -- what differs: Telnyx's codecs, its stream token, its optional user id ----------------------------


only_telnyx = pytest.mark.parametrize("kit", ["telnyx"], indirect=True)
TELNYX_TOKEN_HEADER = "x-telnyx-streaming-auth-token"


def greeting(call: SimulatedCall) -> list[Any]:
    """The media messages of the agent's first utterance (before its mark), as the
    provider's end received them, in the call's codec."""
    media = []
    for heard in call.heard:
        if heard.kind == "mark":
            return media
        if heard.kind == "media":
            media.append(heard)
    raise AssertionError("the greeting's checkpoint never came")


def same_speech(pcm: bytes, reference: bytes) -> bool:
    """`pcm` is `reference` up to G.711 quantization: the error is 20 dB below the signal
    (mu-law and A-law each err by about 3% of a sample; another table is nowhere near)."""
    got, want = array("h", pcm), array("h", reference)
    if len(got) != len(want):
        return False
    error = sum((a - b) ** 2 for a, b in zip(got, want, strict=True))
    return error * 100 <= sum(b * b for b in want)


def caller_track(path: str) -> bytes:
    """The recording's left channel: the caller, as the server decoded it."""
    with wave.open(path) as wav:
        frames = array("h", wav.readframes(wav.getnframes()))
    return frames[0::2].tobytes()


async def start_announcing(call: SimulatedCall, **media_format: Any) -> None:
    """Telnyx's first messages, the start announcing `media_format` instead."""
    connected, start = call.side.opening(call.identity)
    event = json.loads(start)
    event["start"]["media_format"].update(media_format)
    await call.send(connected)
    await call.send(json.dumps(event))


@only_telnyx
async def test_telnyx_a_pcma_leg_is_heard_and_answered_in_a_law(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    greetings: dict[str, bytes] = {}
    for encoding in ("ulaw", "alaw"):
        kit.encoding = encoding
        call = await dial(client, kit, line)
        await call.handshake()
        await until(lambda call=call: "utt-1" in call.marks)
        await call.send_audio(tone_ulaw(0.2), realtime=False)
        await call.hang_up()
        assert await call.wait_closed() == (1000, "call ended")
        greetings[encoding] = b"".join(h.payload for h in greeting(call))
        run = await finished_run(store, line)
    assert run.logs["inbound_webhook"]["start"]["media_format"]["encoding"] == "PCMA"
    assert run.logs["inbound_webhook"]["encoding"] == "PCMA"

    # The agent: the A-law leg's greeting, read with the A-law table, is the speech the
    # mu-law leg's greeting is with the mu-law table; mu-law bytes on the A-law leg (the
    # server answering in the wrong codec) would be noise, and so would a mix-up of tables.
    mulaw_greeting, alaw_greeting = greetings["ulaw"], greetings["alaw"]
    speech = ulaw_to_pcm16(mulaw_greeting)
    assert len(alaw_greeting) == len(mulaw_greeting) > 2000
    assert alaw_greeting != mulaw_greeting
    assert same_speech(alaw_to_pcm16(alaw_greeting), speech)
    assert not same_speech(alaw_to_pcm16(mulaw_greeting), speech)  # answered in mu-law
    assert not same_speech(ulaw_to_pcm16(alaw_greeting), speech)  # read with the wrong table

    # The caller: the tone went in as A-law and is in the recording exactly as A-law holds it.
    tone_as_alaw = pcm16_to_alaw(ulaw_to_pcm16(tone_ulaw(0.2)))
    assert alaw_to_pcm16(tone_as_alaw) in caller_track(run.recording_path)
    assert ulaw_to_pcm16(tone_as_alaw) not in caller_track(run.recording_path)


@only_telnyx
async def test_telnyx_older_mu_law_name_is_accepted_and_error_frames_are_counted(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    call = await dial(client, kit, line)
    await start_announcing(call, encoding="audio/x-mulaw")
    await until(lambda: "utt-1" in call.marks)
    await call.send_json({"event": "error", "sequence_number": "3", "stream_id": call.stream_sid,
                          "error": {"title": "rate_limit_reached", "code": "100005"}})
    await call.press("5")
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")
    run = await finished_run(store, line)
    assert (run.state, run.gathered_context["dtmf_digits"]) == ("completed", "5")
    assert run.logs["protocol_errors"] == {"error event from the provider": 1}
    for event in ("media", "mark"):  # what the server sends names no stream (as pipecat's)
        sent = [m for m in call.received if m.get("event") == event]
        assert sent and all(set(m) == {"event", event} for m in sent)


@only_telnyx
@pytest.mark.parametrize(("media_format", "reason"), [
    ({"encoding": "OPUS"}, "unsupported media encoding 'OPUS' (need PCMU or PCMA)"),
    ({"encoding": "L16", "sample_rate": 16000}, "unsupported media encoding 'L16' (need PCMU or PCMA)"),
    ({"sample_rate": 16000}, "unsupported sample rate 16000 Hz (need 8000)"),
])
async def test_telnyx_a_codec_we_do_not_speak_is_a_4400_naming_it(
    client: TestClient, store: Store, kit: Kit, line: Line, media_format: dict[str, Any], reason: str
) -> None:
    call = await dial(client, kit, line)
    await start_announcing(call, **media_format)
    assert await call.wait_closed() == (4400, reason)
    run = await finished_run(store, line)
    assert (run.state, run.end_reason, run.error) == ("failed", "handshake_failed", reason)
    assert kit.requests() == []


@only_telnyx
async def test_telnyx_a_configured_stream_auth_token_must_come_with_the_upgrade(
    client: TestClient, store: Store, kit: Kit, line: Line, non_utf8_headers: str
) -> None:
    token = "stream-token-" + "x" * 20
    assert (await changed(client, line, {"stream_auth_token": token}))["has_stream_auth_token"] is True
    for secrets, reason in (
        ({}, f"missing {TELNYX_TOKEN_HEADER}"),
        ({"stream_auth_token": token[:-1] + "y"},
         f"{TELNYX_TOKEN_HEADER} does not match the configured stream auth token"),
        ({"stream_auth_token": token[:-1] + non_utf8_headers},  # a byte that is not UTF-8
         f"{TELNYX_TOKEN_HEADER} does not match the configured stream auth token"),
    ):
        call = await dial(client, kit, line, upgrade_secrets=secrets)
        await call.handshake()
        assert await call.wait_closed() == (4400, reason)
        run = await finished_run(store, line)
        assert (run.state, run.error) == ("failed", clip_reason(reason))
    assert kit.requests() == []  # refused before anything was asked of Telnyx

    call = await dial(client, kit, line, upgrade_secrets={"stream_auth_token": token})
    await greeted_and_hung_up(call)
    run = await finished_run(store, line)
    assert run.state == "completed" and token not in json.dumps(run.logs)

    emptied = await changed(client, line, {"stream_auth_token": ""})
    assert emptied["has_stream_auth_token"] is False  # no longer required
    call = await dial(client, kit, line, upgrade_secrets={})
    await greeted_and_hung_up(call)


@only_telnyx
async def test_telnyx_configurations_without_a_user_id_serve_as_the_organization_s_only_one(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    assert (await changed(client, line, {"account_id": ""}))["account_id"] is None

    call = await dial(client, kit, line)  # its start still names the user
    await greeted_and_hung_up(call)
    run = await finished_run(store, line)
    assert run.logs["inbound_webhook"]["configuration"] == {
        "id": line.config_id, "name": "main", "selected_by": "only configuration"}

    response = await client.post("/api/v1/telephony-configurations", headers=line.headers,
                                 json={"provider": "telnyx", "name": "second", "api_key": "KEYother"})
    assert response.status == 201, await response.text()
    call = await dial(client, kit, line)
    await call.handshake()
    assert await call.wait_closed() == (4400, (
        "2 Telnyx configurations and nothing to choose: name one with the "
        "telephony_configuration parameter"))

    call = await dial(client, kit, line, custom_parameters={"telephony_configuration": "main"})
    await greeted_and_hung_up(call)
    run = await finished_run(store, line)
    assert run.logs["inbound_webhook"]["configuration"]["selected_by"] == "custom parameter"


@only_telnyx
async def test_telnyx_a_call_that_is_no_longer_alive_fails_validation(
    client: TestClient, kit: Kit, line: Line
) -> None:
    who = kit.identity(line.account)
    kit.emulator.ended.add(who["call_sid"])  # Telnyx still answers for it: is_alive false
    call = await dial(client, kit, line, live=False, **who)
    await call.handshake()
    assert await call.wait_closed() == (
        4400, "session validation failed: the Telnyx call is not alive")
    assert [r.status for r in kit.requests()] == [200]


@only_telnyx
async def test_telnyx_a_transfer_refused_for_another_reason_than_an_ended_call_fails_the_run(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    definition = quick_agent()
    definition["nodes"][2]["destination"] = "front desk"  # not a number Telnyx dials
    await store.update_workflow(line.org_id, line.workflow.uuid, definition=definition)
    call = await dial(client, kit, line)
    await greeted(call)
    await call.press("0")
    assert (await call.wait_closed(timeout=20))[0] == 1000
    run = await finished_run(store, line)
    assert (run.state, run.end_reason) == ("failed", "transfer")
    assert run.error == "transfer failed: Telnyx transfer failed: HTTP 422"
    assert kit.requests()[-1].body == {"to": "front desk"}


def test_telnyx_snippets_stream_both_ways_in_rtp_and_name_the_configuration() -> None:
    telnyx = provider_named("telnyx")
    assert telnyx is not None
    url = "https://voice.example.com/api/v1/agent-stream/telnyx/AGENT"
    config = TelephonyConfig(7, 1, "telnyx", "night line", "", {}, {"api_key": "KEYx"}, [], "", "")
    stream, texml, call_control = telnyx.snippets(url, config)
    wss = "wss://voice.example.com/api/v1/agent-stream/telnyx/AGENT"
    assert stream.text == wss
    assert (texml.label, call_control.label) == ("TeXML", "JSON")
    assert texml.text == (
        f'<Response><Connect><Stream url="{wss}" bidirectionalMode="rtp" '
        'bidirectionalCodec="PCMU" codec="PCMU"/></Connect></Response>')
    assert json.loads(call_control.text) == {
        "stream_url": wss, "stream_track": "inbound_track", "stream_codec": "PCMU",
        "stream_bidirectional_mode": "rtp", "stream_bidirectional_codec": "PCMU",
        "custom_parameters": [{"name": "telephony_configuration", "value": "7"}],
    }
    assert "custom_parameters" not in json.loads(telnyx.snippets(url, None)[2].text)


# -- what differs: Plivo (no connected, L16 at 16 kHz, extra headers, a one-time transfer URL) -------


only_plivo = pytest.mark.parametrize("kit", ["plivo"], indirect=True)
TRANSFER_PURPOSE = "plivo-transfer"


def plivo_start(who: dict[str, Any], account: str, **top: Any) -> dict[str, Any]:
    """A start event as Plivo writes it (the test picks the media format and extra headers)."""
    start = {"callId": who["call_sid"], "streamId": who["stream_sid"], "accountId": account,
             "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}
    return {"event": "start", "sequenceNumber": 1, "start": start} | top


def assert_caller_said_one_second_of_440_hz(recording_path: str) -> None:
    """The recording's caller track (left) holds one second of 440 Hz: audio decoded at the
    wrong rate would be longer or shorter, and lower or higher."""
    with wave.open(recording_path) as recording:
        rate = recording.getframerate()
        left = array("h", recording.readframes(recording.getnframes()))[0::2]
    sounding = [i for i, sample in enumerate(left) if sample]
    caller = left[sounding[0]:sounding[-1] + 1]
    assert abs(len(caller) / rate - 1.0) < 0.05
    assert abs(dominant_hz(caller, rate) - 440) < 15


def dominant_hz(samples: array[int], rate: int) -> float:
    """The frequency of a pure tone, from its zero crossings."""
    crossings = sum(1 for a, b in zip(samples, samples[1:], strict=False) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / rate)


@only_plivo
async def test_plivo_l16_at_16_khz_both_ways(client: TestClient, store: Store, kit: Kit, line: Line) -> None:
    # the same greeting on a mu-law stream, for its length (one byte a sample at 8 kHz)
    reference = await dial(client, kit, line)
    await reference.handshake()
    await until(lambda: "utt-1" in reference.marks)
    ulaw_bytes = sum(len(h.payload) for h in greeting(reference))
    await reference.hang_up()
    await reference.wait_closed()
    assert ulaw_bytes > 2000  # "Hi." is a few hundred milliseconds

    kit.encoding = "l16"
    call = await dial(client, kit, line)
    await greeted(call)
    played = greeting(call)
    for heard in played:  # the stream's own content type and rate, and 20 ms a message
        assert heard.raw["media"]["contentType"] == "audio/x-l16"
        assert heard.raw["media"]["sampleRate"] == 16000
        assert len(heard.payload) <= 640 and len(json.dumps(heard.raw)) < 16_000
    # N seconds of speech are N * 32,000 bytes of 16-bit PCM at 16 kHz: 4 bytes per mu-law one
    assert abs(sum(len(h.payload) for h in played) - 4 * ulaw_bytes) <= 8
    await call.send_audio(tone_ulaw(1.0, freq=440.0), realtime=False)  # sent as L16 at 16 kHz
    await call.hang_up()
    await call.wait_closed()

    run = await finished_run(store, line)
    assert (run.state, run.end_reason) == ("completed", "caller_hangup")
    assert run.logs["media_frames_in"] == 50
    assert run.logs["inbound_webhook"]["start"]["mediaFormat"] == {"encoding": "audio/x-l16",
                                                                   "sampleRate": 16000}
    assert_caller_said_one_second_of_440_hz(run.recording_path)


@only_plivo
@pytest.mark.parametrize(("encoding", "rate"), [("audio/x-alaw", 8000), ("audio/x-l16", 24000),
                                                ("audio/x-mulaw", 16000),
                                                ("audio/x-mulaw", "\u00b2")])  # no int(): was a 1011
async def test_plivo_media_formats_it_does_not_stream_are_a_4400_naming_them(
    client: TestClient, kit: Kit, line: Line, encoding: str, rate: int | str
) -> None:
    call = await dial(client, kit, line)
    message = plivo_start(kit.identity(line.account), line.account)
    message["start"]["mediaFormat"] = {"encoding": encoding, "sampleRate": rate}
    await call.send_json(message)
    code, reason = await call.wait_closed()
    assert code == 4400
    assert reason.startswith(f"unsupported media format {encoding} at {rate} Hz")
    assert kit.requests() == []


@only_plivo
async def test_plivo_extra_headers_name_the_configuration(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    night = await add_config(client, kit, line, "night line", line.account, line.secret)
    who = kit.identity(line.account)
    kit.make_live(line.account, who)

    call = await dial(client, kit, line, live=False)  # two configurations of one auth id
    await call.send_json(plivo_start(who, line.account))
    assert await call.wait_closed() == (4400, (
        f"2 Plivo configurations for auth ID {line.account}: name one with the "
        "telephony_configuration parameter"))

    call = await dial(client, kit, line, live=False)
    await call.send_json(plivo_start(who, line.account,
                                     extra_headers=f"userId=42;telephonyconfiguration={night}"))
    await until(lambda: call.received_media_bytes > 0)
    await call.hang_up()
    await call.wait_closed()
    run = await finished_run(store, line)
    assert run.logs["inbound_webhook"]["configuration"] == {
        "id": night, "name": "night line", "selected_by": "custom parameter"}
    assert run.initial_context["custom_parameters"] == {"userId": "42",
                                                        "telephony_configuration": str(night)}
    assert run.initial_context.get("caller_number") is None  # Plivo's start names no numbers
    assert run.gathered_context["call_id"] == run.gathered_context["plivo_call_id"] == who["call_sid"]


@only_plivo
async def test_plivo_fetches_the_transfer_xml_once_and_the_token_is_never_logged(
    client: TestClient, store: Store, kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    line = await make_line(client, store, kit)
    call = await dial(client, kit, line)
    await greeted(call)
    await call.press("0")
    assert await call.wait_closed(timeout=20) == (1000, "call transferred")

    [fetched] = kit.emulator.fetched  # what Plivo got from the aleg_url, with no credentials
    assert (fetched.status, fetched.content_type) == (200, "application/xml")
    assert fetched.text == f"<Response><Dial><Number>{DESTINATION}</Number></Dial></Response>"
    url = URL(fetched.url)
    assert str(url.origin()) == str(client.make_url("/").origin())  # this server, as Plivo reaches it
    token = url.name
    assert url.path == client.app.router["plivo_transfer"].url_for(one_time_token=token).path
    assert (await client.get(url.path)).status == 404  # once only
    assert (await client.get(url.path[:-4] + "AAAA")).status == 404  # unknown
    assert token not in caplog.text
    assert f"/api/v1/providers/plivo/transfer/{token[:4]}…" in caplog.text  # the access log


@only_plivo
async def test_plivo_transfer_urls_answer_only_their_own_live_tokens(
    client: TestClient, store: Store, kit: Kit
) -> None:
    route = client.app.router["plivo_transfer"]

    def url(token: str) -> str:
        return str(route.url_for(one_time_token=token))

    odd = await store.create_one_time_token(TRANSFER_PURPOSE, {"destination": "sip:a&b@<x>"}, 60)
    assert (await client.head(url(odd))).status == 405  # a HEAD does not use it up
    answer = await client.get(url(odd))
    assert answer.status == 200 and answer.content_type == "application/xml"
    assert await answer.text() == "<Response><Dial><Number>sip:a&amp;b@&lt;x&gt;</Number></Dial></Response>"

    expired = await store.create_one_time_token(TRANSFER_PURPOSE, {"destination": "+1555"}, -1)
    another = await store.create_one_time_token("web-call", {"destination": "+1555"}, 60)
    for token in (expired, another, "..", "a" * 200):
        assert (await client.get(url(token))).status == 404, token
    assert (await client.post(url(odd))).status == 405


@only_plivo
async def test_one_time_tokens_are_stored_hashed_and_used_once(
    client: TestClient, store: Store, kit: Kit, settings: Settings
) -> None:
    token = await store.create_one_time_token(TRANSFER_PURPOSE, {"destination": "+1555"}, 60)
    assert await store.use_one_time_token("web-call", token) is None  # another purpose
    assert await store.use_one_time_token(TRANSFER_PURPOSE, token) == {"destination": "+1555"}
    assert await store.use_one_time_token(TRANSFER_PURPOSE, token) is None
    assert token.encode() not in await stored_bytes(settings)


@only_plivo
async def test_plivo_configurations_need_an_auth_id_and_show_the_xml(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    response = await client.post(
        "/api/v1/telephony-configurations",
        json={"provider": "plivo", "auth_id": "ma123", "auth_token": "t"}, headers=line.headers,
    )
    assert response.status == 400
    assert "An Auth ID is MA (or SA for a subaccount) followed by 18" in await response.text()

    plivo = provider_named("plivo")
    assert plivo is not None
    stream = f"https://voice.example.com/api/v1/agent-stream/plivo/{line.workflow.uuid}"
    url, xml = plivo.snippets(stream, None)
    assert url.text == f"wss://voice.example.com/api/v1/agent-stream/plivo/{line.workflow.uuid}"
    assert xml.label == "Plivo XML" and "extraHeaders" not in xml.text
    config = await store.get_telephony_config(line.org_id, line.config_id)
    _, named = plivo.snippets(stream, config)
    assert named.text == (
        '<Response><Stream bidirectional="true" keepCallAlive="true" '
        'contentType="audio/x-mulaw;rate=8000" '
        f'extraHeaders="telephonyconfiguration={line.config_id}">{url.text}</Stream></Response>')


# -- what differs: Vonage's binary frames, its JWTs, its NCCO ---------------------------------------


only_vonage = pytest.mark.parametrize("kit", ["vonage"], indirect=True)


async def vonage_greeting(client: TestClient, kit: Kit, line: Line, encoding: str) -> SimulatedCall:
    """A Vonage call at `encoding`'s rate, greeted, the caller's one-second 440 Hz tone
    sent, hung up."""
    kit.encoding = encoding
    call = await dial(client, kit, line)
    await greeted(call)
    await call.send_audio(tone_ulaw(1.0, freq=440.0), realtime=False)
    await call.hang_up()
    await call.wait_closed()
    return call


def envelope_correlation(audio: bytes, reference: bytes, *, frames: int) -> float:
    """How alike two recordings' loudness is over `frames` equal slices (Pearson)."""
    def envelope(pcm: bytes) -> list[float]:
        size = len(pcm) // frames // 2 * 2
        return [float(rms(pcm[i * size:(i + 1) * size])) for i in range(frames)]
    a, b = envelope(audio), envelope(reference)
    mean_a, mean_b = sum(a) / frames, sum(b) / frames
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b, strict=True))
    spread = (sum((x - mean_a) ** 2 for x in a) * sum((y - mean_b) ** 2 for y in b)) ** 0.5
    return cov / spread if spread else 0.0


@only_vonage
@pytest.mark.parametrize(("encoding", "rate"), [("l16-8000", 8000), ("l16", 16000), ("l16-24000", 24000)])
async def test_vonage_frames_are_exactly_20_ms_of_pcm_at_the_announced_rate_both_ways(
    client: TestClient, store: Store, kit: Kit, line: Line, encoding: str, rate: int
) -> None:
    # the greeting at 8 kHz, the pipeline's own rate, for its length and its loudness over time
    eight = await vonage_greeting(client, kit, line, "l16-8000")
    speech = b"".join(h.payload for h in greeting(eight))
    call = eight if rate == 8000 else await vonage_greeting(client, kit, line, encoding)
    played = greeting(call)
    frame = rate * 2 // 50
    assert played and all(len(h.payload) == frame for h in played)  # 20 ms, the last one padded
    audio = b"".join(h.payload for h in played)
    assert len(speech) > 4000
    # N seconds of speech are N * rate * 2 bytes (the 8 kHz greeting's last frame is padded too)
    assert abs(len(audio) - len(speech) * rate // 8000) < frame
    # the same words at the announced rate: frame by frame as loud as at 8 kHz (audio at the
    # wrong rate would be stretched or squeezed against it)
    assert envelope_correlation(audio, speech, frames=len(played)) > 0.95
    run = await finished_run(store, line)
    assert (run.state, run.end_reason) == ("completed", "caller_hangup")
    assert run.logs["media_frames_in"] == 50
    assert run.logs["inbound_webhook"]["start"]["content-type"] == f"audio/l16;rate={rate}"
    assert_caller_said_one_second_of_440_hz(run.recording_path)


@only_vonage
@pytest.mark.parametrize(("opening", "reason"), [
    ({"content-type": "audio/l16;rate=44100"}, "unsupported content-type 'audio/l16;rate=44100'"),
    ({"content-type": "audio/mulaw"}, "unsupported content-type 'audio/mulaw'"),
    ({"call_uuid": None}, "malformed 'websocket:connected' event: missing call_uuid header"),
])
async def test_vonage_a_rate_we_do_not_take_or_no_call_uuid_is_a_4400(
    client: TestClient, store: Store, kit: Kit, line: Line, opening: dict[str, Any], reason: str
) -> None:
    call = await dial(client, kit, line)
    connected = json.loads(call.side.opening(call.identity)[0]) | opening
    await call.send_json({k: v for k, v in connected.items() if v is not None})
    code, said = await call.wait_closed()
    assert (code, said[:len(reason)]) == (4400, reason)
    assert (await finished_run(store, line)).end_reason == "handshake_failed"
    assert kit.requests() == []


@only_vonage
async def test_vonage_with_a_signature_secret_the_upgrade_must_carry_its_jwt(
    client: TestClient, store: Store, kit: Kit, line: Line, non_utf8_headers: str
) -> None:
    secret = "vonage-signature-" + "s" * 24
    config = await changed(client, line, {"signature_secret": secret})
    assert config["has_signature_secret"] and secret not in json.dumps(config)
    signed = {"application_id": line.account, "signature_secret": secret}
    refusals = [
        ({}, "missing Vonage signature (Authorization: Bearer JWT)"),
        (signed | {"signature_secret": "another-secret-" + "x" * 24},
         "Vonage signature does not verify with the signature secret"),
    ]
    for upgrade, reason in refusals:
        call = await dial(client, kit, line, upgrade_secrets=upgrade)
        await call.handshake()
        assert await call.wait_closed() == (4400, reason)

    async def refused_with(token: str, reason: str, *, by_name: bool) -> None:
        url = stream_url(str(client.make_url("/")), line.workflow.uuid, provider="vonage",
                         newer_form=True)
        ws = await client.session.ws_connect(url, headers={"Authorization": f"Bearer {token}"},
                                             autoclose=False)
        named = {"telephony_configuration": str(line.config_id)} if by_name else {}
        call = SimulatedCall(ws, side=caller_side("vonage"), **kit.identity(line.account),
                             custom_parameters=named)
        await call.handshake()
        assert await call.wait_closed() == (4400, clip_reason(reason))
        run = await finished_run(store, line)
        assert (run.state, run.error) == ("failed", clip_reason(reason))

    # signed with the right secret, but not for the application whose configuration the
    # NCCO's header names, or long ago
    forged = [
        ({"application_id": str(uuid.uuid4()), "iat": int(time.time())},
         "Vonage signature is for another application"),
        ({"application_id": line.account, "iat": int(time.time()) - 3600},
         "Vonage signature is too old (a replayed upgrade?)"),
    ]
    for claims, reason in forged:
        token = jwt.encode(claims | {"jti": str(uuid.uuid4())}, secret, algorithm="HS256")
        await refused_with(token, reason, by_name=True)
    # text no column holds in the claim that selects the configuration (JSON may escape half
    # a surrogate pair, or a NUL), and a token with a byte that is not UTF-8: a 4400, never a
    # database error or a 1011
    for odd in ("a\ud800", "a\x00"):
        token = jwt.encode({"application_id": odd, "iat": int(time.time())}, secret,
                           algorithm="HS256")
        await refused_with(token, "malformed 'start' event: application_id claim must be "
                                  + IDENTIFIER_RULE, by_name=False)
    await refused_with(f"eyJ{non_utf8_headers}.e30.", "Vonage signature does not verify with "
                                                      "the signature secret", by_name=True)
    assert kit.requests() == []

    call = await dial(client, kit, line, upgrade_secrets=signed)
    await greeted(call)
    await call.hang_up()
    assert await call.wait_closed() == (1000, "")
    run = await finished_run(store, line)
    assert (run.state, run.end_reason) == ("completed", "caller_hangup")
    assert run.logs["inbound_webhook"]["application"] == line.account
    assert run.logs["inbound_webhook"]["signed"] is True


@only_vonage
async def test_vonage_private_keys_are_checked_kept_sealed_and_never_hinted(
    client: TestClient, settings: Settings, kit: Kit, line: Line
) -> None:
    response = await client.post(
        "/api/v1/telephony-configurations", headers=line.headers,
        json={"provider": "vonage", "application_id": str(line.account), "private_key": "not a key"},
    )
    assert response.status == 400
    problems = (await response.json())["problems"]
    assert [p["field"] for p in problems] == ["private_key"]
    assert problems[0]["message"].startswith("That is not a private key: paste the whole private.key")

    one = await client.get(f"/api/v1/telephony-configurations/{line.config_id}", headers=line.headers)
    answer = await one.json()
    assert answer["has_private_key"] is True and "private_key_hint" not in answer
    key_body = line.secret.splitlines()[1]
    assert key_body not in await one.text()
    assert key_body.encode() not in await stored_bytes(settings)


@only_vonage
async def test_vonage_snippet_is_an_ncco_that_connects_the_stream_with_its_headers(
    store: Store, kit: Kit, line: Line
) -> None:
    vonage = provider_named("vonage")
    assert vonage is not None
    stream = f"https://voice.example.com/api/v1/agent-stream/vonage/{line.workflow.uuid}"
    url, ncco = vonage.snippets(stream, None)
    assert url.text == f"wss://voice.example.com/api/v1/agent-stream/vonage/{line.workflow.uuid}"
    endpoint = json.loads(ncco.text)[0]["endpoint"][0]
    assert ncco.label == "NCCO" and json.loads(ncco.text)[0]["action"] == "connect"
    assert endpoint == {"type": "websocket", "uri": url.text, "content-type": "audio/l16;rate=16000",
                        "headers": {"call_uuid": "<the answer webhook's uuid>"}}
    config = await store.get_telephony_config(line.org_id, line.config_id)
    assert config is not None
    signing = replace(config, secrets={**config.secrets, "signature_secret": "s" * 32})
    endpoint = json.loads(vonage.snippets(stream, signing)[1].text)[0]["endpoint"][0]
    assert endpoint["headers"]["telephony_configuration"] == str(line.config_id)
    assert endpoint["authorization"] == {"type": "vonage"}
    assert "s" * 32 not in vonage.snippets(stream, signing)[1].text


def test_vonage_transfers_phone_numbers_without_the_plus_and_sip_uris_as_sip() -> None:
    assert destination_endpoint("+15555550123") == {"type": "phone", "number": "15555550123"}
    assert destination_endpoint("sip:desk@pbx.example.com") == {"type": "sip",
                                                                 "uri": "sip:desk@pbx.example.com"}


# -- what differs: Exotel (16-bit PCM at 8, 16 or 24 kHz in 100 ms chunks, Basic credentials,
# no REST hang-up or transfer) --------------------------------------------------------------------


only_exotel = pytest.mark.parametrize("kit", ["exotel"], indirect=True)
EXOTEL_RATES = (8000, 16000, 24000)


def exotel_start(call: SimulatedCall, **media_format: Any) -> tuple[str, str]:
    """Exotel's first messages, the start's media format replaced by `media_format` (a
    value of None leaves that key out; no keys at all: no media_format)."""
    connected, start = call.side.opening(call.identity)
    event = json.loads(start)
    if media_format:
        changed_format = event["start"]["media_format"] | media_format
        event["start"]["media_format"] = {k: v for k, v in changed_format.items() if v is not None}
    else:
        del event["start"]["media_format"]
    return connected, json.dumps(event)


def speech_error(pcm: bytes, reference: bytes) -> float:
    """The error of `pcm` against `reference`, relative to the reference's power (the
    shorter length of both)."""
    got, want = array("h", pcm), array("h", reference)
    n = min(len(got), len(want))
    error = sum((got[i] - want[i]) ** 2 for i in range(n))
    return error / max(1, sum(want[i] ** 2 for i in range(n)))


@only_exotel
async def test_exotel_answers_in_100_ms_chunks_of_the_speech_at_the_announced_rate(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    greetings: dict[int, list[Any]] = {}
    for rate in EXOTEL_RATES:
        kit.encoding = f"l16-{rate}"
        call = await dial(client, kit, line)
        await greeted_and_hung_up(call)
        greetings[rate] = greeting(call)
        for heard in greetings[rate]:
            assert set(heard.raw) == {"event", "stream_sid", "media"}
            assert heard.raw["stream_sid"] == call.stream_sid
        mark = next(h for h in call.heard if h.kind == "mark")
        assert mark.raw == {"event": "mark", "stream_sid": call.stream_sid, "mark": {"name": "utt-1"}}
        run = await finished_run(store, line)
        assert run.logs["inbound_webhook"]["sample_rate"] == rate
        assert run.logs["inbound_webhook"]["start"]["media_format"]["sample_rate"] == str(rate)

    reference = b"".join(h.payload for h in greetings[8000])  # the agent's PCM at 8 kHz
    assert len(reference) > 4000  # "Hi." is a few hundred milliseconds
    for rate, played in greetings.items():
        chunk = rate * 2 // 10  # 100 ms of 16-bit samples
        # every message exactly 100 ms (the last padded before the mark): a multiple of
        # 320 bytes, never shorter, never over 100,000 bytes
        assert {len(h.payload) for h in played} == {chunk}
        assert chunk % 320 == 0 and chunk <= 100_000
        assert len(played) == len(greetings[8000])  # the same speech takes as long
        # read at the announced rate it is the 8 kHz speech; read at 8 kHz, slowed down
        audio = b"".join(h.payload for h in played)
        assert speech_error(resample(audio, rate, 8000), reference) < 0.01
        if rate != 8000:
            assert speech_error(audio, reference) > 0.5


@only_exotel
@pytest.mark.parametrize("rate", EXOTEL_RATES)
async def test_exotel_caller_audio_in_100_ms_chunks_is_heard_at_the_announced_rate(
    client: TestClient, store: Store, kit: Kit, line: Line, rate: int
) -> None:
    kit.encoding = f"l16-{rate}"
    call = await dial(client, kit, line)
    await greeted(call)
    tone = resample(ulaw_to_pcm16(tone_ulaw(1.0, freq=440.0)), 8000, rate)
    chunk = rate * 2 // 10
    for n, start in enumerate(range(0, len(tone), chunk), start=1):  # as Exotel sends it
        await call.send(call.side.media(call.identity, tone[start:start + chunk], sequence=n + 1, chunk=n))
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")

    run = await finished_run(store, line)
    assert (run.state, run.logs["media_frames_in"]) == ("completed", 10)
    assert_caller_said_one_second_of_440_hz(run.recording_path)


@only_exotel
@pytest.mark.parametrize(("media_format", "reason"), [
    ({}, "malformed 'start' event: missing media_format.sample_rate (need 8000, 16000 or 24000)"),
    ({"sample_rate": None},
     "malformed 'start' event: missing media_format.sample_rate (need 8000, 16000 or 24000)"),
    ({"sample_rate": "44100"}, "unsupported sample_rate '44100' (need 8000, 16000 or 24000)"),
    ({"sample_rate": "8k"}, "unsupported sample_rate '8k' (need 8000, 16000 or 24000)"),
    ({"encoding": "audio/x-mulaw"}, "unsupported media encoding 'audio/x-mulaw' (need audio/x-raw)"),
    ({"bit_rate": "8"}, "unsupported bit_rate '8' (need 16)"),
    ({"sample_rate": "\u00b2"},  # a digit to str.isdigit, none to int(): was a 1011
     "unsupported sample_rate '\u00b2' (need 8000, 16000 or 24000)"),
])
async def test_exotel_a_missing_or_unknown_sample_rate_is_a_4400_naming_it(
    client: TestClient, store: Store, kit: Kit, line: Line, media_format: dict[str, Any], reason: str
) -> None:
    call = await dial(client, kit, line)
    for message in exotel_start(call, **media_format):
        await call.send(message)
    assert await call.wait_closed() == (4400, reason)
    run = await finished_run(store, line)
    assert (run.state, run.end_reason, run.error) == ("failed", "handshake_failed", reason)
    assert kit.requests() == []


@only_exotel
async def test_exotel_a_rate_written_as_a_number_is_taken(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    kit.encoding = "l16-16000"
    call = await dial(client, kit, line)
    for message in exotel_start(call, sample_rate=16000, bit_rate=16):
        await call.send(message)
    await until(lambda: "utt-1" in call.marks)
    assert {len(h.payload) for h in greeting(call)} == {3200}
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")


@only_exotel
async def test_exotel_upgrades_without_the_api_key_and_token_are_refused(
    client: TestClient, store: Store, kit: Kit, line: Line, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    right = kit.secrets(line.secret)
    missing = "missing HTTP Basic credentials (the Voicebot URL's API_KEY:API_TOKEN@)"
    wrong = "HTTP Basic credentials do not match the configuration's API key and token"
    for upgrade_secrets, reason in (
        ({}, missing),
        (right | {"api_token": line.secret[:-1] + "x"}, wrong),
        (right | {"api_key": "another-key"}, wrong),
        (kit.secrets(kit.new_account()[1]), wrong),  # another account's, however valid
    ):
        call = await dial(client, kit, line, upgrade_secrets=upgrade_secrets)
        await call.handshake()
        assert await call.wait_closed() == (4400, reason)
        run = await finished_run(store, line)
        assert (run.state, run.end_reason, run.error) == ("failed", "handshake_failed", reason)
    url = stream_url(str(client.make_url("/")), line.workflow.uuid, provider="exotel", newer_form=True)
    for header in ("Bearer " + line.secret, "Basic !!not-base64!!"):
        ws = await client.session.ws_connect(url, headers={"Authorization": header}, autoclose=False)
        call = SimulatedCall(ws, side=caller_side("exotel", encoding="l16-8000"),
                             **kit.identity(line.account))
        await call.handshake()
        assert await call.wait_closed() == (4400, missing if header.startswith("Bearer") else wrong)
    assert kit.requests() == []  # refused before anything was asked of Exotel
    assert line.secret not in caplog.text

    call = await dial(client, kit, line, upgrade_secrets=right)
    await greeted_and_hung_up(call)
    assert_sent(kit, kit.validation(line.account, kit.call_id_of(call)))


@only_exotel
async def test_exotel_mark_echoes_decide_what_the_caller_heard_and_a_barge_in_clears(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    definition = quick_agent()
    definition["nodes"][0]["say"] = "Hello, thanks for calling Acme."
    await store.update_workflow(line.org_id, line.workflow.uuid, definition=definition)
    for echoed in (True, False):
        call = await dial(client, kit, line)
        call.echo_marks = False  # Exotel has not played the greeting yet
        await call.handshake()
        await until(lambda call=call: "utt-1" in call.marks)  # all of it sent, then its mark
        if echoed:
            await call.mark("utt-1")  # Exotel echoes our mark: the caller heard all of it
        await call.press("1")  # the caller answers over what is (still) playing
        call.echo_marks = True
        assert await call.wait_closed(timeout=20) == (1000, "agent hung up")  # after "Bye."
        run = await finished_run(store, line)
        assert run.transcript[0].text.startswith("Hello, thanks")
        clears = [m for m in call.received if m.get("event") == "clear"]
        if echoed:  # heard whole: nothing to cut
            assert not run.transcript[0].interrupted and clears == []
        else:
            assert run.transcript[0].interrupted
            assert clears == [{"event": "clear", "stream_sid": call.stream_sid}]
        assert run.logs["protocol_errors"] == {}


@only_exotel
async def test_exotel_settings_show_the_voicebot_url_with_the_key_never_the_token(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    exotel = provider_named("exotel")
    assert exotel is not None
    path = f"/api/v1/agent-stream/exotel/{line.workflow.uuid}"
    stream, applet = exotel.snippets(f"https://voice.example.com{path}", None)
    assert stream.text == f"wss://voice.example.com{path}"
    assert applet.text == f"wss://API_KEY:API_TOKEN@voice.example.com{path}?sample-rate=8000"
    assert "16000 or 24000" in applet.title and "up to 3" in applet.title

    assert (await sign_in(client, "org@example.com", "pw")).status == 200
    page = await client.get(f"/agents/{line.workflow.uuid}/settings")
    html = await page.text()
    host = client.make_url("/").host
    key = kit.secrets(line.secret)["api_key"]
    assert (f"wss://{key}:API_TOKEN@{host}:{client.port}{path}?sample-rate=8000"
            f"&amp;telephony_configuration={line.config_id}") in html
    assert ">Copy Voicebot URL</button>" in html
    assert line.secret not in html


async def test_a_packetizing_wire_pads_its_last_packet_and_a_clear_drops_what_it_holds() -> None:
    """Exotel's 100 ms packets: 40 ms of tone make no message; a clear drops them, so the
    next packet is the 100 ms said after it, none of the tone; before a mark, what is left
    goes out padded with silence to a whole packet."""
    start = parse_exotel_start({"event": "start", "stream_sid": "MZ1", "start": {
        "stream_sid": "MZ1", "call_sid": "CA1", "account_sid": "AC1",
        "media_format": {"encoding": "audio/x-raw", "sample_rate": "8000", "bit_rate": "16"}}})
    wire = ExotelWire(start, log=logging.getLogger("test"))
    tone = ulaw_to_pcm16(tone_ulaw(0.02))  # 20 ms, 320 bytes at 8 kHz
    quiet = b"\x00" * len(tone)

    def payloads(messages: list[str | bytes]) -> list[bytes]:
        return [base64.b64decode(json.loads(m)["media"]["payload"]) for m in messages]

    assert wire.audio_messages(tone, 8000) == [] and wire.audio_messages(tone, 8000) == []
    assert json.loads(await wire.serialize(InterruptionFrame()) or "") == {
        "event": "clear", "stream_sid": "MZ1"}
    sent = [wire.audio_messages(quiet, 8000) for _ in range(5)]
    assert [len(m) for m in sent] == [0, 0, 0, 0, 1]
    assert payloads(sent[-1]) == [b"\x00" * 1600]  # none of the dropped tone

    assert wire.audio_messages(tone, 8000) == []
    (padded,) = payloads(wire.flush_messages())
    assert len(padded) == 1600 and padded[:320] == tone and padded[320:] == b"\x00" * 1280
    assert wire.flush_messages() == []
