"""The Cloudonix provider on its own: wire format, REST client against the emulator."""
from __future__ import annotations

import base64
import json
import logging
from typing import Any

import aiohttp
import pytest
from pipecat.frames.frames import (
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
)

from agent_stream.audio import Codec
from agent_stream.errors import HandshakeError
from agent_stream.models import TelephonyConfig
from agent_stream.pipeline.frames import ProviderMarkFrame, StreamStopFrame
from agent_stream.providers.base import CallControl, CallerIdentity, ControlContext, ProviderApiError
from agent_stream.providers.cloudonix import (
    CloudonixCaller,
    CloudonixProvider,
    normalize_domain,
    parse_domain,
    parse_start,
    transfer_cxml,
)
from agent_stream.providers.identifiers import api_url, is_identifier
from agent_stream.simulator import tone_ulaw, ulaw_to_pcm16
from tests.cloudonix_emulator import CloudonixEmulator

DOMAIN = "acme.cloudonix.net"


class NoTokens:
    """Cloudonix fetches no URL of ours during a call: no one-time token is ever made."""

    async def create_one_time_token(self, purpose: str, payload: dict[str, Any], ttl_seconds: float) -> str:
        raise AssertionError("a Cloudonix call made a one-time token")


NO_TOKENS = NoTokens()


def start_event(*, stream_sid: str, call_sid: str, session: str | None, account_sid: str | None,
                caller: str | None, called: str | None) -> dict[str, Any]:
    """A start event as Cloudonix sends it."""
    return CloudonixCaller(Codec("ulaw", 8000)).start(CallerIdentity(
        stream_id=stream_sid, call_id=call_sid, account_id=account_sid, caller=caller,
        called=called, session=session))


@pytest.mark.parametrize(
    ("given", "normalized"),
    [("acme", DOMAIN), (DOMAIN, DOMAIN), (" ACME.cloudonix.net. ", DOMAIN),
     ("sub.acme", "sub.acme.cloudonix.net")],
)
def test_normalize_domain(given: str, normalized: str) -> None:
    assert normalize_domain(given) == normalized


def test_api_url_encodes_each_segment_whole_and_refuses_dot_segments() -> None:
    url = api_url("http://127.0.0.1:9/base/", "domains", "acme.cloudonix.net", "a b/c?d", "v3:x")
    assert url.raw_path == "/base/domains/acme.cloudonix.net/a%20b%2Fc%3Fd/v3%3Ax"
    assert str(url) == "http://127.0.0.1:9/base/domains/acme.cloudonix.net/a%20b%2Fc%3Fd/v3%3Ax"
    for bad in ("..", ".", ""):
        with pytest.raises(ValueError):
            api_url("http://127.0.0.1:9", "sessions", bad)
    plivo = api_url("http://127.0.0.1:9/", "Call", "a b/..", trailing_slash=True)  # Plivo's form
    assert plivo.raw_path == "/Call/a%20b%2F../"


@pytest.mark.parametrize(
    ("value", "ok"),
    [("CA0123456789abcdef", True), ("v3:Ab-9_x.7", True), ("1700000000.42", True),
     ("..", False), (".hidden", False), ("a/b", False), ("a b", False), ("", False),
     ("x" * 128, True), ("x" * 129, False), (42, False), ("caf\u00e9", False)],
)
def test_identifiers_are_a_narrow_character_set(value: object, ok: bool) -> None:
    assert is_identifier(value) is ok


@pytest.mark.parametrize(
    ("raw", "domain"),
    [("acme", DOMAIN), (" ACME.cloudonix.net. ", DOMAIN), ("sub-1.acme", "sub-1.acme.cloudonix.net")],
)
def test_parse_domain_normalizes(raw: str, domain: str) -> None:
    assert parse_domain(raw) == domain


@pytest.mark.parametrize("raw", ["a b/../c?", "acme/..", "-acme", "ac_me", "a..b", "%2e"])
def test_parse_domain_refuses_what_is_no_dns_name(raw: str) -> None:
    with pytest.raises(ValueError, match="letters, digits, dots and dashes only"):
        parse_domain(raw)


def test_parse_start_takes_session_or_falls_back_to_call_sid() -> None:
    event = start_event(stream_sid="MZ1", call_sid="CA1", session="S1", account_sid=DOMAIN,
                        caller="+1555", called="+1666")
    info = parse_start(event)
    assert (info.stream_id, info.gathered["cloudonix_call_sid"], info.call_id) == ("MZ1", "CA1", "S1")
    assert (info.account_id, info.caller, info.called) == (DOMAIN, "+1555", "+1666")
    event["start"].pop("session")
    assert parse_start(event).call_id == "CA1"


def test_parse_start_rejects_a_non_string_session() -> None:
    event = start_event(stream_sid="MZ1", call_sid="CA1", session="S", account_sid=None,
                        caller=None, called=None)
    event["start"]["session"] = 42
    with pytest.raises(HandshakeError, match="session must be a string"):
        parse_start(event)


def test_transfer_cxml_escapes_the_destination() -> None:
    assert transfer_cxml("+15555550123") == "<Response><Dial>+15555550123</Dial></Response>"
    assert transfer_cxml("a<b>&c") == "<Response><Dial>a&lt;b&gt;&amp;c</Dial></Response>"


# -- serializer ------------------------------------------------------------------------------


def wire_for(stream_sid: str) -> Any:
    """The wire format of a call whose start named `stream_sid`."""
    event = start_event(stream_sid=stream_sid, call_sid="CA1", session="S1", account_sid=DOMAIN,
                        caller=None, called=None)
    return CloudonixProvider().wire(parse_start(event), log=logging.getLogger("test"))


async def test_serializer_decodes_media_dtmf_mark_and_stop() -> None:
    serializer = wire_for("MZ1")
    ulaw = tone_ulaw(0.02)
    frame = await serializer.deserialize(json.dumps(
        {"event": "media", "media": {"payload": base64.b64encode(ulaw).decode()}}))
    assert isinstance(frame, InputAudioRawFrame)
    assert (frame.sample_rate, frame.audio) == (8000, ulaw_to_pcm16(ulaw))
    dtmf = await serializer.deserialize('{"event": "dtmf", "dtmf": {"digit": "5"}}')
    assert isinstance(dtmf, InputDTMFFrame) and dtmf.button.value == "5"
    mark = await serializer.deserialize('{"event": "mark", "mark": {"name": "utt-1"}}')
    assert isinstance(mark, ProviderMarkFrame) and mark.mark == "utt-1"
    assert isinstance(await serializer.deserialize('{"event": "stop"}'), StreamStopFrame)
    assert serializer.media_frames == 1 and not serializer.problems.counts


async def test_serializer_encodes_media_clear_and_marks() -> None:
    serializer = wire_for("MZ1")
    pcm = ulaw_to_pcm16(tone_ulaw(0.02))
    media = json.loads(await serializer.serialize(OutputAudioRawFrame(pcm, 8000, 1)) or "")
    assert media["event"] == "media" and media["streamSid"] == "MZ1"
    assert len(base64.b64decode(media["media"]["payload"])) == 160
    # 16 kHz audio is resampled to 8 kHz mu-law: half the samples
    media16 = json.loads(await serializer.serialize(OutputAudioRawFrame(pcm * 2, 16000, 1)) or "")
    assert len(base64.b64decode(media16["media"]["payload"])) == 160
    assert json.loads(await serializer.serialize(InterruptionFrame()) or "") == {
        "event": "clear", "streamSid": "MZ1"}
    mark = {"event": "mark", "streamSid": "MZ1", "mark": {"name": "utt-1"}}
    assert json.loads(await serializer.serialize(OutputTransportMessageFrame(mark)) or "") == mark


# -- REST client against the emulator ----------------------------------------------------------


@pytest.fixture
async def cx_client(cloudonix: tuple[CloudonixEmulator, str]) -> Any:
    emulator, base_url = cloudonix
    emulator.add_domain(DOMAIN, "good-token-1234")
    emulator.add_session(DOMAIN, "S1")
    async with aiohttp.ClientSession() as http:
        config = TelephonyConfig(
            id=1, organization_id=1, provider="cloudonix", name="Acme", account_id=DOMAIN,
            fields={"domain_id": DOMAIN}, secrets={"bearer_token": "good-token-1234"},
            from_numbers=[], created_at="", updated_at="",
        )

        def control(session: str) -> CallControl:
            start = parse_start({"event": "start", "start": {
                "streamSid": "MZ1", "callSid": "CA1", "session": session}})
            return CloudonixProvider().control(ControlContext(
                http=http, api_base_url=base_url, config=config, start=start, timeout=1.0,
                public_url="http://127.0.0.1", tokens=NO_TOKENS, send_text=no_socket,
            ))

        yield emulator, control


async def no_socket(message: str) -> bool:
    return False


async def test_hangup_deletes_the_session_and_404_counts_as_done(cx_client: Any) -> None:
    emulator, client = cx_client
    assert await client("S1").hangup() == 204
    assert (DOMAIN, "S1") not in emulator.sessions
    assert await client("S1").hangup() == 404  # already gone: done, not an error
    request = emulator.requests[0]
    assert (request.method, request.path, request.authorized) == (
        "DELETE", f"/customers/self/domains/{DOMAIN}/sessions/S1", True)


async def test_transfer_posts_dial_cxml(cx_client: Any) -> None:
    emulator, client = cx_client
    assert await client("S1").transfer("+15555550123") == 200
    request = emulator.requests[-1]
    assert (request.method, request.path) == ("POST", f"/calls/{DOMAIN}/sessions/S1/application")
    assert request.json == {"cxml": "<Response><Dial>+15555550123</Dial></Response>"}


async def test_rest_errors_carry_the_status(cx_client: Any) -> None:
    emulator, client = cx_client
    emulator.status_override = 401
    with pytest.raises(ProviderApiError, match="hangup failed: HTTP 401"):
        await client("S1").hangup()
    with pytest.raises(ProviderApiError, match="transfer failed: HTTP 401"):
        await client("S1").transfer("+1")


def test_client_repr_never_shows_the_token(cx_client: Any) -> None:
    _, client = cx_client
    assert "good-token" not in repr(client("S1"))
