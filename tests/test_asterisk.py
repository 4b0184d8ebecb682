"""What differs on Asterisk (chan_websocket and ARI), through the real app and real sockets:
binary audio in whole optimal frames, three formats, JSON and plain-text control, flow
control, FLUSH_MEDIA and MARK_MEDIA, the media socket's Basic credentials, the transfer's
channel variable, the `ari` alias. The contract suite (test_providers.py) runs the rest
for the `asterisk` kit; its fixtures and helpers are reused here."""
from __future__ import annotations

import asyncio
import base64
import json
import wave
from array import array
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agent_stream.audio import Codec, alaw_to_pcm16, pcm16_to_alaw, ulaw_to_pcm16
from agent_stream.models import ConfigInput
from agent_stream.providers import provider_named
from agent_stream.providers.asterisk import PLAIN_FORM, AsteriskCaller, caller_channel
from agent_stream.providers.asterisk.wire import JSON_FORM, packet_size
from agent_stream.simulator import SimulatedCall, caller_side, stream_url, tone_ulaw
from agent_stream.store import Store
from tests import test_providers as suite
from tests.conftest import finished_run, until
from tests.provider_kits import Kit
from tests.test_process import cli_agent, run_cli
from tests.test_providers import (
    DESTINATION,
    Line,
    assert_caller_said_one_second_of_440_hz,
    changed,
    dial,
    greeted,
    greeting,
    quick_agent,
    same_speech,
)

# The contract suite's fixtures, for the Asterisk kit only.
kit = suite.kit
public_url = suite.public_url
settings = suite.settings
line = suite.line
only_asterisk = pytest.mark.parametrize("kit", ["asterisk"], indirect=True)

LONG_GREETING = "Hello, thanks for calling Acme. Would you like to book an appointment?"


def side(call: SimulatedCall) -> AsteriskCaller:
    assert isinstance(call.side, AsteriskCaller)
    return call.side


async def long_greeting(store: Store, line: Line) -> None:
    definition = quick_agent()
    definition["nodes"][0]["say"] = LONG_GREETING
    await store.update_workflow(line.org_id, line.workflow.uuid, definition=definition)


def media(call: SimulatedCall) -> list[bytes]:
    return [h.payload for h in call.heard if h.kind == "media"]


async def greeting_of(client: TestClient, kit: Kit, line: Line, *, encoding: str = "ulaw",
                      frame_size: int | None = None) -> SimulatedCall:
    """A call in `encoding` (Asterisk announcing `frame_size`), greeted and hung up."""
    kit.encoding = encoding
    call = await dial(client, kit, line)
    if frame_size is not None:
        side(call).optimal_frame_size = frame_size
    await greeted(call)
    await call.hang_up()
    await call.wait_closed()
    return call


# -- audio ------------------------------------------------------------------------------------------


@only_asterisk
@pytest.mark.parametrize(("encoding", "frame_size", "packet"), [
    ("ulaw", 160, 160), ("ulaw", 320, 320), ("ulaw", 100, 200), ("slin16", 640, 640),
    ("alaw", 160, 160),
])
async def test_agent_audio_goes_out_in_whole_optimal_frames_and_is_the_agent_s_speech(
    client: TestClient, kit: Kit, line: Line, encoding: str, frame_size: int, packet: int
) -> None:
    reference = b"".join(h.payload for h in greeting(await greeting_of(client, kit, line)))
    assert len(reference) > 2000

    call = await greeting_of(client, kit, line, encoding=encoding, frame_size=frame_size)
    sizes = {len(payload) for payload in media(call)}
    assert sizes == {packet}  # the smallest multiple of the frame size holding 20 ms
    assert packet % frame_size == 0 and packet <= 65_500
    played = b"".join(h.payload for h in greeting(call))
    if encoding == "ulaw":  # the same speech, the last packet padded with mu-law silence
        assert played.rstrip(b"\xff") == reference.rstrip(b"\xff")
        assert len(played) - len(reference) < packet
    elif encoding == "alaw":
        speech = ulaw_to_pcm16(reference)
        assert same_speech(alaw_to_pcm16(played[:len(reference)]), speech)
        assert not same_speech(ulaw_to_pcm16(played[:len(reference)]), speech)
    else:  # 16-bit little-endian PCM at 16 kHz: the 8 kHz speech resampled
        expected = Codec("l16", 16000).encode(ulaw_to_pcm16(reference), 8000)
        assert 0 <= len(played) - len(expected) < packet
        assert same_speech(played[:len(expected)], expected)


def test_packets_are_the_smallest_multiple_holding_20_ms_and_never_over_65_500_bytes() -> None:
    ulaw, slin16 = Codec("ulaw", 8000), Codec("l16", 16000)
    assert [packet_size(ulaw, n) for n in (160, 320, 100, 7, 65_500)] == [160, 320, 200, 161, 65_500]
    assert [packet_size(slin16, n) for n in (640, 320, 2)] == [640, 640, 640]


@only_asterisk
@pytest.mark.parametrize("encoding", ["ulaw", "alaw", "slin16"])
async def test_the_caller_is_heard_in_each_format(
    client: TestClient, store: Store, kit: Kit, line: Line, encoding: str
) -> None:
    kit.encoding = encoding
    call = await dial(client, kit, line)
    await greeted(call)
    tone = tone_ulaw(1.0, freq=440.0)
    await call.send_audio(tone, realtime=False)  # binary frames in the call's format
    await call.hang_up()
    await call.wait_closed()
    run = await finished_run(store, line)
    assert (run.state, run.logs["media_frames_in"]) == ("completed", 50)
    with wave.open(run.recording_path) as recording:
        caller = array("h", recording.readframes(recording.getnframes()))[0::2]
    if encoding == "ulaw":
        assert ulaw_to_pcm16(tone) in caller.tobytes()
    elif encoding == "alaw":
        assert alaw_to_pcm16(pcm16_to_alaw(ulaw_to_pcm16(tone))) in caller.tobytes()
    assert_caller_said_one_second_of_440_hz(run.recording_path)


# -- control in both forms --------------------------------------------------------------------------


@only_asterisk
@pytest.mark.parametrize("form", [JSON_FORM, PLAIN_FORM])
async def test_a_call_in_json_or_plain_text_control_is_answered_in_the_same(
    client: TestClient, store: Store, kit: Kit, line: Line, form: str
) -> None:
    await long_greeting(store, line)
    call = await dial(client, kit, line)
    side(call).form = form
    await call.handshake()
    await until(lambda: call.received_media_bytes > 4000)
    await call.press("1")  # over the greeting: FLUSH_MEDIA, then "Bye." and the hang-up
    assert await call.wait_closed(timeout=20) == (1000, "agent hung up")

    commands = [r for r in call.received if not isinstance(r, bytes)]
    if form == JSON_FORM:
        assert commands == [{"command": "FLUSH_MEDIA"},
                            {"command": "MARK_MEDIA", "correlation_id": "utt-2"},
                            {"command": "HANGUP"}]
    else:  # chan_websocket's plain text: the command, then its one argument
        assert commands == ["FLUSH_MEDIA", "MARK_MEDIA utt-2", "HANGUP"]
    run = await finished_run(store, line)
    assert (run.state, run.end_reason, run.gathered_context["dtmf_digits"]) == (
        "completed", "agent_hangup", "1")
    cut = run.transcript[0]  # the words that went out before the flush
    assert cut.interrupted and LONG_GREETING.startswith(cut.text) and cut.text != LONG_GREETING
    assert run.logs["inbound_webhook"]["control_format"] == form
    assert run.logs["inbound_webhook"]["start"]["format"] == "ulaw"
    assert run.gathered_context["asterisk_call_id"] == call.call_sid
    assert run.logs["protocol_errors"] == {}


@only_asterisk
async def test_mark_media_echoes_drive_the_agent_and_the_transcript(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    call = await dial(client, kit, line)
    side(call).form = PLAIN_FORM
    await greeted(call)
    call.echo_marks = False  # this test plays Asterisk's MEDIA_MARK_PROCESSED itself
    await call.press("1")
    await until(lambda: "utt-2" in call.marks)  # "Bye." queued, its mark behind it
    assert "hangup" not in [h.kind for h in call.heard]  # the agent waits for the echo
    await call.send("MEDIA_MARK_PROCESSED utt-2")
    # hung up at the echo, well before the grace the agent allows a missing one (3 s)
    assert await call.wait_closed(timeout=1.5) == (1000, "agent hung up")
    run = await finished_run(store, line)
    assert [(t.role, t.text, t.interrupted) for t in run.transcript] == [
        ("agent", "Hi.", False), ("caller", "(pressed 1)", False), ("agent", "Bye.", False)]


@only_asterisk
async def test_media_xoff_holds_agent_audio_and_media_xon_resumes_it_losing_nothing(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    await long_greeting(store, line)
    reference = b"".join(h.payload for h in greeting(await greeting_of(client, kit, line)))

    call = await dial(client, kit, line)
    await call.handshake()
    await until(lambda: call.received_media_bytes > 4000)
    await call.send(side(call).flow(call.identity, "MEDIA_XOFF"))
    loop = asyncio.get_running_loop()
    last = [len(media(call)), loop.time()]

    def settled() -> bool:
        """A whole second without a packet: what was in flight when XOFF came has arrived
        (the agent sends one every 20 ms; a loaded machine may stall it, never that long)."""
        if len(media(call)) != last[0]:
            last[:] = [len(media(call)), loop.time()]
        return loop.time() - last[1] >= 1.0

    await until(settled)
    paused_at = len(media(call))
    await asyncio.sleep(0.6)  # the pause Asterisk asks for while its queue drains
    assert len(media(call)) == paused_at  # nothing was sent while paused
    assert "utt-1" not in call.marks
    assert 0 < sum(map(len, media(call))) < len(reference)

    await call.send(side(call).flow(call.identity, "MEDIA_XON"))
    await until(lambda: "utt-1" in call.marks)
    assert b"".join(h.payload for h in greeting(call)) == reference  # nothing lost or repeated
    await call.hang_up()
    await call.wait_closed()
    run = await finished_run(store, line)
    assert run.state == "completed" and run.logs["protocol_errors"] == {}
    assert not run.transcript[0].interrupted


# -- the handshake ----------------------------------------------------------------------------------


def media_start(call: SimulatedCall, **changes: Any) -> str:
    message = json.loads(call.side.opening(call.identity)[0])
    return json.dumps({**message, **changes})


@only_asterisk
@pytest.mark.parametrize(("changes", "reason"), [
    ({"format": "opus"}, "unsupported format 'opus' (need ulaw, alaw, slin16)"),
    ({"format": "slin"}, "unsupported format 'slin' (need ulaw, alaw, slin16)"),
    ({"optimal_frame_size": None},
     "malformed 'MEDIA_START' event: optimal_frame_size must be 1 to 65500, not 'None'"),
    ({"optimal_frame_size": 65_501},
     "malformed 'MEDIA_START' event: optimal_frame_size must be 1 to 65500, not '65501'"),
    ({"optimal_frame_size": "160"}, ""),  # digits as text: what plain text carries anyway
    ({"optimal_frame_size": "\u00b2"},  # a digit to str.isdigit, none to int(): was a 1011
     "malformed 'MEDIA_START' event: optimal_frame_size must be 1 to 65500, not '\u00b2'"),
    ({"channel_id": "../asterisk"},
     "malformed 'MEDIA_START' event: channel_id must be letters, digits and . _ : - only"),
])
async def test_a_media_start_we_cannot_serve_is_a_4400_naming_why(
    client: TestClient, store: Store, kit: Kit, line: Line, changes: dict[str, Any], reason: str
) -> None:
    call = await dial(client, kit, line)
    await call.send(media_start(call, **changes))
    if not reason:
        await until(lambda: "utt-1" in call.marks)
        await call.hang_up()
        assert await call.wait_closed() == (1000, "")
        return
    code, said = await call.wait_closed()
    assert code == 4400 and said.startswith(reason)
    run = await finished_run(store, line)
    assert (run.state, run.end_reason) == ("failed", "handshake_failed")
    assert kit.requests() == []


@only_asterisk
async def test_the_stream_may_name_the_ari_alias_and_runs_as_asterisk(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    who = kit.identity(line.account)
    kit.make_live(line.account, who)
    url = stream_url(str(client.make_url("/")), line.workflow.uuid, provider="ari", newer_form=True)
    asterisk = caller_side("ari")
    ws = await client.session.ws_connect(asterisk.stream_url(url, who["call_sid"], {}),
                                         protocols=asterisk.subprotocols, autoclose=False)
    assert ws.protocol == "media"  # chan_websocket hangs up unless its subprotocol is echoed
    call = SimulatedCall(ws, side=asterisk, **who)
    call.start_reading()
    await greeted(call)
    await call.hang_up()
    assert await call.wait_closed() == (1000, "")
    run = await finished_run(store, line)
    assert (run.state, run.mode, run.initial_context["provider"]) == ("completed", "asterisk", "asterisk")
    assert run.initial_context["custom_parameters"] == {"caller": caller_channel(who["call_sid"])}


# -- the media socket's credentials ---------------------------------------------------------------


@only_asterisk
async def test_configured_media_credentials_must_come_with_the_upgrade(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    configured = await changed(client, line, {"media_username": "pbx1", "media_password": "m3dia-pass"})
    assert configured["has_media_password"] is True and "m3dia-pass" not in json.dumps(configured)
    for upgrade, reason in (
        ({}, "missing HTTP Basic credentials (the configuration has a media username)"),
        ({"media_username": "pbx1", "media_password": "wrong"},
         "HTTP Basic credentials do not match the media username and password"),
        ({"media_username": "pbx2", "media_password": "m3dia-pass"},
         "HTTP Basic credentials do not match the media username and password"),
    ):
        call = await dial(client, kit, line, upgrade_secrets=upgrade)
        await call.handshake()
        assert await call.wait_closed() == (4400, reason)
        run = await finished_run(store, line)
        assert (run.state, run.error) == ("failed", reason)
    assert kit.requests() == []  # refused before ARI was asked anything

    call = await dial(client, kit, line, upgrade_secrets={"media_username": "pbx1",
                                                          "media_password": "m3dia-pass"})
    await greeted(call)
    await call.hang_up()
    await call.wait_closed()
    run = await finished_run(store, line)
    assert run.state == "completed" and "m3dia-pass" not in json.dumps(run.logs)

    emptied = await changed(client, line, {"media_username": ""})
    assert emptied["media_username"] in (None, "")  # no longer required
    call = await dial(client, kit, line, upgrade_secrets={})
    await greeted(call)


@only_asterisk
async def test_a_malformed_basic_header_is_a_4400(client: TestClient, kit: Kit, line: Line) -> None:
    await changed(client, line, {"media_username": "pbx1", "media_password": "m3dia-pass"})
    who = kit.identity(line.account)
    kit.make_live(line.account, who)
    url = stream_url(str(client.make_url("/")), line.workflow.uuid, provider="asterisk", newer_form=True)
    asterisk = caller_side("asterisk")
    ws = await client.session.ws_connect(asterisk.stream_url(url, who["call_sid"], {}), autoclose=False,
                                         protocols=("media",), headers={"Authorization": "Basic %%%"})
    call = SimulatedCall(ws, side=asterisk, **who)
    await call.handshake()
    assert await call.wait_closed() == (
        4400, "HTTP Basic credentials do not match the media username and password")
    encoded = base64.b64encode(b"pbx1:m3dia-pass").decode()
    assert encoded not in json.dumps(kit.requests(), default=str)


@only_asterisk
async def test_a_media_username_without_a_password_admits_no_stream(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    """Half a credential is none: `pbx1:` (what the username alone would make) is refused."""
    await changed(client, line, {"media_username": "pbx1"})
    call = await dial(client, kit, line, upgrade_secrets={"media_username": "pbx1"})
    await call.handshake()
    assert await call.wait_closed() == (
        4400, "HTTP Basic credentials do not match the media username and password")
    assert kit.requests() == []


# -- transfer ---------------------------------------------------------------------------------------


@only_asterisk
async def test_a_transfer_sets_the_caller_s_variable_then_hangs_up_the_stream(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    """A caller channel in a Stasis application takes the channel variable."""
    call = await dial(client, kit, line)
    kit.emulator.stasis.add(caller_channel(call.call_sid))
    await greeted(call)
    await call.press("0")
    assert await call.wait_closed(timeout=20) == (1000, "call transferred")
    assert kit.emulator.variables == [
        (caller_channel(call.call_sid), "AGENT_STREAM_TRANSFER", DESTINATION)]
    assert kit.emulator.globals == []
    assert [h.raw for h in call.heard if h.kind == "hangup"] == [{"command": "HANGUP"}]
    run = await finished_run(store, line)
    assert (run.state, run.end_reason) == ("completed", "transfer")


@only_asterisk
async def test_a_caller_in_the_dialplan_gets_the_destination_through_a_global_variable(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    """ARI sets channel variables only in Stasis (409 for a caller running Dial()): the
    destination goes into the global variable the dialplan reads after Dial()."""
    call = await dial(client, kit, line)
    caller = caller_channel(call.call_sid)
    await greeted(call)
    await call.press("0")
    assert await call.wait_closed(timeout=20) == (1000, "call transferred")
    refused, accepted = [r for r in kit.requests() if r.method == "POST"]
    assert (refused.path, refused.status) == (f"/ari/channels/{caller}/variable", 409)
    assert (accepted.path, accepted.status, accepted.authorized) == ("/ari/asterisk/variable", 204, True)
    assert kit.emulator.globals == [
        ("AGENT_STREAM_TRANSFER_" + "".join(c for c in caller if c.isalnum()), DESTINATION)]
    assert [h.raw for h in call.heard if h.kind == "hangup"] == [{"command": "HANGUP"}]
    run = await finished_run(store, line)
    assert (run.state, run.end_reason, run.error) == ("completed", "transfer", None)


@only_asterisk
async def test_a_transfer_without_the_caller_parameter_fails_the_run_saying_how_to_fix_it(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    who = kit.identity(line.account)
    kit.make_live(line.account, who)
    url = stream_url(str(client.make_url("/")), line.workflow.uuid, provider="asterisk", newer_form=True)
    ws = await client.session.ws_connect(url, protocols=("media",), autoclose=False)  # no v()
    call = SimulatedCall(ws, side=caller_side("asterisk"), **who)
    call.start_reading()
    await greeted(call)
    await call.press("0")
    assert await call.wait_closed(timeout=20) == (1000, "call transferred")
    run = await finished_run(store, line)
    assert (run.state, run.end_reason) == ("failed", "transfer")
    assert run.error == (
        "transfer failed: Asterisk transfer impossible: the stream has no 'caller' parameter: add "
        "caller=${UNIQUEID} to the v() options of Dial(WebSocket/...) so the agent can name the "
        "channel to transfer")
    assert kit.emulator.variables == [] and len(kit.requests()) == 1  # the validation only


@only_asterisk
async def test_a_transfer_ari_refuses_both_ways_fails_the_run_with_its_answer(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    call = await dial(client, kit, line)
    await greeted(call)
    kit.refuse_all(409)
    await call.press("0")
    assert (await call.wait_closed(timeout=20))[0] == 1000
    run = await finished_run(store, line)
    assert (run.state, run.end_reason) == ("failed", "transfer")
    assert run.error == "transfer failed: Asterisk transfer failed: HTTP 409"
    assert [r.path for r in kit.requests() if r.method == "POST"][-1] == "/ari/asterisk/variable"


# -- configuration and snippets ---------------------------------------------------------------------


@only_asterisk
@pytest.mark.parametrize("ari_url", ["pbx:8088/ari", "ftp://pbx/ari", "http://u:p@pbx:8088/ari",
                                     "http://pbx:8088/ari?x=1"])
async def test_the_ari_url_must_be_an_http_url_of_its_own(
    client: TestClient, kit: Kit, line: Line, ari_url: str
) -> None:
    response = await client.post("/api/v1/telephony-configurations", headers=line.headers, json={
        "provider": "asterisk", "name": "pbx", "ari_url": ari_url, "ari_username": "u",
        "ari_password": "p"})
    assert response.status == 400
    problems = (await response.json())["problems"]
    assert [p["field"] for p in problems] == ["ari_url"]


@only_asterisk
async def test_the_ari_alias_names_the_provider_in_the_api(
    client: TestClient, kit: Kit, line: Line
) -> None:
    response = await client.post("/api/v1/telephony-configurations", headers=line.headers, json={
        "provider": "asterisk", "name": "pbx2", "ari_url": "https://pbx2.example.com/ari/",
        "ari_username": "u", "ari_password": "secret-pw"})
    assert response.status == 201, await response.text()
    created = await response.json()
    assert created["ari_url"] == "https://pbx2.example.com/ari" and "secret-pw" not in json.dumps(created)


@only_asterisk
async def test_the_snippets_dial_the_stream_and_the_transfer(
    client: TestClient, store: Store, kit: Kit, line: Line
) -> None:
    asterisk = provider_named("ari")
    assert asterisk is not None and asterisk.name == "asterisk"
    stream = f"https://voice.example.com/api/v1/agent-stream/asterisk/{line.workflow.uuid}"
    url, conf, dialplan = asterisk.snippets(stream, None)
    wss = f"wss://voice.example.com/api/v1/agent-stream/asterisk/{line.workflow.uuid}"
    assert url.text == wss
    assert conf.text == "\n".join([
        "[agent_stream]", "type = websocket_client", f"uri = {wss}", "protocols = media",
        "connection_type = per_call_config", "tls_enabled = yes",
        "username = MEDIA_USERNAME", "password = MEDIA_PASSWORD"])
    assert "Dial(WebSocket/agent_stream/c(ulaw)f(json)v(caller=${UNIQUEID}))" in dialplan.text

    await changed(client, line, {"media_username": "pbx1", "media_password": "m3dia-pass"})
    config = await store.get_telephony_config(line.org_id, line.config_id)
    _, conf, dialplan = asterisk.snippets(stream.replace("https", "http"), config)
    assert "uri = ws://voice.example.com/" in conf.text and "tls_enabled" not in conf.text
    assert "username = pbx1\npassword = MEDIA_PASSWORD" in conf.text and "m3dia-pass" not in conf.text
    assert dialplan.text == "\n".join([
        "[agent-stream]",
        "exten => _X.,1,Answer()",
        " same => n,Dial(WebSocket/agent_stream/c(ulaw)f(json)"
        f"v(caller=${{UNIQUEID}},telephony_configuration={line.config_id}))",
        " same => n,Set(DESTINATION=${AGENT_STREAM_TRANSFER})",
        ' same => n,GotoIf($["${DESTINATION}" != ""]?transfer)',
        " same => n,Set(DESTINATION=${GLOBAL(AGENT_STREAM_TRANSFER_${FILTER(0-9A-Za-z,${UNIQUEID})})})",
        " same => n,Set(GLOBAL(AGENT_STREAM_TRANSFER_${FILTER(0-9A-Za-z,${UNIQUEID})})=)",
        ' same => n,GotoIf($["${DESTINATION}" != ""]?transfer)',
        " same => n,Hangup()",
        " same => n(transfer),Dial(${DESTINATION})",
        " same => n,Hangup()",
        "exten => h,1,Set(GLOBAL(AGENT_STREAM_TRANSFER_${FILTER(0-9A-Za-z,${UNIQUEID})})=)",
    ])



# -- the CLI test call ------------------------------------------------------------------------------


async def test_the_cli_test_call_speaks_asterisk_with_no_configuration_at_all(tmp_path: Path) -> None:
    db = tmp_path / "agent_stream.db"
    _, agent = await cli_agent(db, "Hi. Press zero for a human.", cloudonix=False)
    done = await asyncio.to_thread(run_cli, "call", agent, "--provider", "ari", "--dtmf", "0", db=db)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed, transfer (close 1000 'call transferred')" in done.stdout
    # the stand-in's ARI URL is the loopback stand-in; the simulated dialplan names the caller
    assert "provider API: POST /ari/channels/" in done.stdout
    assert "-caller/variable?variable=AGENT_STREAM_TRANSFER&value=+15555550123" in done.stdout


async def test_the_cli_test_call_never_reaches_the_pbx_a_stored_configuration_names(
    tmp_path: Path,
) -> None:
    """The organization's Asterisk configuration is used (its id in the v() options), but
    its ARI URL becomes the loopback stand-in's: a test call validates and transfers
    nothing on the real PBX (here one that does not resolve), and never sends its password."""
    db = tmp_path / "agent_stream.db"
    organization_id, agent = await cli_agent(db, "Hi. Press zero for a human.", cloudonix=False)
    store = await Store.open(db)
    try:
        config = await store.create_telephony_config(organization_id, "asterisk", ConfigInput(
            name="pbx", account_id="", fields={"ari_url": "http://pbx.invalid:8088/ari",
                                               "ari_username": "agent"},
            secrets={"ari_password": "real-ari-password"},
        ), one_per_account=False)
    finally:
        await store.close()
    done = await asyncio.to_thread(run_cli, "call", agent, "--provider", "asterisk", "--dtmf", "0", db=db)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed, transfer (close 1000 'call transferred')" in done.stdout
    assert "provider API: POST /ari/channels/" in done.stdout
    assert "real-ari-password" not in done.stdout + done.stderr
    store = await Store.open(db)
    try:
        (run,), _ = await store.list_runs(organization_id)
    finally:
        await store.close()
    assert run.logs["inbound_webhook"]["configuration"]["id"] == config.id
