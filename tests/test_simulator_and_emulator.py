"""The call simulator and the Cloudonix emulator behave as the provider does."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from agent_stream.providers.base import CallerIdentity
from agent_stream.simulator import (
    FRAME_BYTES,
    SimulatedCall,
    caller_side,
    connect,
    pcm16_to_ulaw,
    silence_ulaw,
    stream_url,
    tone_ulaw,
    ulaw_to_pcm16,
)
from tests.cloudonix_emulator import CloudonixEmulator, start_emulator

DOMAIN = "acme.cloudonix.net"
TOKEN = "secret-bearer"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SEEN = web.AppKey("seen", list)


# --- pure framing -------------------------------------------------------------------------


def who(session: str | None = "S1") -> CallerIdentity:
    return CallerIdentity(stream_id="MZ1", call_id="CA1", account_id=DOMAIN, caller="+1555",
                          called="+1666", session=session)


def test_cloudonix_start_carries_the_fields_the_gateway_reads() -> None:
    event = json.loads(caller_side("cloudonix").opening(who())[1])
    assert event["event"] == "start"
    assert event["sequenceNumber"] == "1"
    assert event["streamSid"] == "MZ1"
    start = event["start"]
    assert start["streamSid"] == "MZ1" and start["callSid"] == "CA1" and start["session"] == "S1"
    assert start["accountSid"] == DOMAIN and start["from"] == "+1555" and start["to"] == "+1666"
    assert start["tracks"] == ["inbound"]
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert "session" not in json.loads(caller_side("cloudonix").opening(who(None))[1])["start"]


def test_other_events_match_twilio_framing() -> None:
    side = caller_side("cloudonix")
    assert json.loads(side.opening(who())[0]) == {
        "event": "connected", "protocol": "Call", "version": "1.0.0"}
    media = json.loads(side.media(who(), b"\x01\x02", sequence=4, chunk=3))["media"]
    assert media["track"] == "inbound"
    assert base64.b64decode(media["payload"]) == b"\x01\x02"
    assert media["chunk"] == "3" and media["timestamp"] == "40"
    assert json.loads(side.dtmf(who(), "5", 5))["dtmf"]["digit"] == "5"
    assert json.loads(side.played(who(), "m", 6))["mark"] == {"name": "m"}
    assert json.loads(side.stop(who(), 7) or "") == {
        "event": "stop", "sequenceNumber": "7", "streamSid": "MZ1", "stop": {"callSid": "CA1"}}


def test_stream_url_old_form_encodes_query() -> None:
    url = stream_url(
        "http://127.0.0.1:8000", "abc-123", domain="acme", call_id="c 1", caller="+15551230000",
        called="+1666",
    )
    parts = urlsplit(url)
    assert parts.scheme == "ws" and parts.netloc == "127.0.0.1:8000"
    assert parts.path == "/api/v1/agent-stream/abc-123"
    assert "%2B15551230000" in parts.query
    assert parse_qs(parts.query) == {
        "provider": ["cloudonix"],
        "Domain": ["acme"],
        "callId": ["c 1"],
        "from": ["+15551230000"],
        "to": ["+1666"],
    }


def test_stream_url_omits_none_and_maps_https() -> None:
    url = stream_url("https://gw.example.com/", "u", provider=None)
    assert url == "wss://gw.example.com/api/v1/agent-stream/u"


def test_stream_url_newer_form_has_no_query() -> None:
    url = stream_url("ws://h:1", "u-1", domain="ignored", caller="+1", newer_form=True)
    assert url == "ws://h:1/api/v1/agent-stream/cloudonix/u-1"


def test_mulaw_round_trip_stays_close() -> None:
    ulaw = tone_ulaw(0.1)
    assert len(ulaw) == 800
    pcm = ulaw_to_pcm16(ulaw)
    again = ulaw_to_pcm16(pcm16_to_ulaw(pcm))
    assert again == pcm  # decoded values are exact mu-law levels
    peak = max(abs(int.from_bytes(pcm[i : i + 2], "little", signed=True)) for i in range(0, len(pcm), 2))
    assert abs(peak - 0.3 * 32767) < 0.05 * 32767
    assert silence_ulaw(0.02) == b"\xff" * FRAME_BYTES
    assert set(ulaw_to_pcm16(silence_ulaw(0.01))) == {0}


# --- Cloudonix emulator -------------------------------------------------------------------


@pytest.fixture
async def emulator(aiohttp_server: Any) -> tuple[CloudonixEmulator, str]:
    emu, base = await start_emulator(aiohttp_server)
    emu.add_domain(DOMAIN, TOKEN)
    emu.add_session(DOMAIN, "sess-1")
    return emu, base


async def test_bad_token_is_rejected_and_recorded(emulator: tuple[CloudonixEmulator, str]) -> None:
    emu, base = emulator
    async with aiohttp.ClientSession() as http:
        url = f"{base}/customers/self/domains/{DOMAIN}/sessions/sess-1"
        async with http.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 401
            assert "error" in await resp.json()
    [recorded] = emu.requests
    assert recorded.authorized is False and recorded.status == 401
    assert recorded.method == "GET" and recorded.domain == DOMAIN and recorded.session == "sess-1"


async def test_get_then_delete_then_gone(emulator: tuple[CloudonixEmulator, str]) -> None:
    emu, base = emulator
    url = f"{base}/customers/self/domains/{DOMAIN}/sessions/sess-1"
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(url) as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["token"] == "sess-1" and body["domain"] == DOMAIN
        async with http.delete(url) as resp:
            assert resp.status == 204
        assert (DOMAIN, "sess-1") not in emu.sessions
        async with http.get(url) as resp:
            assert resp.status == 404
        async with http.delete(url) as resp:
            assert resp.status == 404
    assert [(r.method, r.status, r.authorized) for r in emu.requests] == [
        ("GET", 200, True),
        ("DELETE", 204, True),
        ("GET", 404, True),
        ("DELETE", 404, True),
    ]


async def test_transfer_needs_cxml(emulator: tuple[CloudonixEmulator, str]) -> None:
    emu, base = emulator
    url = f"{base}/calls/{DOMAIN}/sessions/sess-1/application"
    cxml = {"cxml": "<Response><Dial>+15555550123</Dial></Response>"}
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.post(url, json=cxml) as resp:
            assert resp.status == 200 and await resp.json() == {"ok": True}
        async with http.post(url, json={"dial": "x"}) as resp:
            assert resp.status == 400
        async with http.post(url, data=b"not json") as resp:
            assert resp.status == 400
        async with http.post(f"{base}/calls/{DOMAIN}/sessions/nope/application", json=cxml) as resp:
            assert resp.status == 404
    assert emu.requests[0].json == cxml
    assert [r.status for r in emu.requests] == [200, 400, 400, 404]


async def test_status_override_answers_everything(emulator: tuple[CloudonixEmulator, str]) -> None:
    emu, base = emulator
    emu.status_override = 503
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(f"{base}/customers/self/domains/{DOMAIN}/sessions/sess-1") as resp:
            assert resp.status == 503
    assert emu.requests[0].status == 503 and emu.requests[0].authorized is True


async def test_delay_makes_a_short_timeout_client_give_up(emulator: tuple[CloudonixEmulator, str]) -> None:
    emu, base = emulator
    emu.delay = 0.5
    timeout = aiohttp.ClientTimeout(total=0.05)
    async with aiohttp.ClientSession(headers=AUTH, timeout=timeout) as http:
        with pytest.raises(asyncio.TimeoutError):
            async with http.get(f"{base}/customers/self/domains/{DOMAIN}/sessions/sess-1"):
                pass


# --- SimulatedCall against a tiny provider-facing server ----------------------------------


async def _echo_handler(request: web.Request) -> web.WebSocketResponse:
    """Echo inbound media as outbound media; on stop send a mark and close 4400."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    seen: list[dict[str, Any]] = request.app[SEEN]
    async for msg in ws:
        event = json.loads(msg.data)
        seen.append(event)
        if event["event"] == "media":
            payload = event["media"]["payload"]
            await ws.send_json(
                {"event": "media", "streamSid": event["streamSid"], "media": {"payload": payload}}
            )
        elif event["event"] == "stop":
            await ws.send_json({"event": "mark", "streamSid": event["streamSid"], "mark": {"name": "m1"}})
            await ws.send_json({"event": "clear", "streamSid": event["streamSid"]})
            await ws.close(code=4400, message=b"bad start")
    return ws


@pytest.fixture
async def echo_url(aiohttp_server: Any) -> tuple[str, list[dict[str, Any]]]:
    app = web.Application()
    app[SEEN] = []
    app.router.add_get("/ws", _echo_handler)
    server = await aiohttp_server(app)
    return str(server.make_url("/ws")), app[SEEN]


async def test_simulated_call_records_media_marks_and_close(
    echo_url: tuple[str, list[dict[str, Any]]],
) -> None:
    url, seen = echo_url
    async with aiohttp.ClientSession() as http:
        call = await connect(http, url, account_sid=DOMAIN, caller="+15550001111", called="+15550002222")
        call.start_reading()
        await call.handshake()
        await call.send_audio(tone_ulaw(0.1), realtime=False)
        await call.press("1")
        await call.hang_up()
        assert await call.wait_closed() == (4400, "bad start")
    assert call.received_media_bytes == 800
    assert call.marks == ["m1"]
    assert call.clears == 1
    kinds = [e["event"] for e in seen]
    assert kinds == ["connected", "start"] + ["media"] * 5 + ["dtmf", "stop"]
    start = seen[1]["start"]
    assert start["session"] == call.call_sid and start["streamSid"] == call.stream_sid
    assert start["accountSid"] == DOMAIN and start["from"] == "+15550001111"
    media = [e["media"] for e in seen if e["event"] == "media"]
    assert [m["chunk"] for m in media] == ["1", "2", "3", "4", "5"]
    assert [m["timestamp"] for m in media] == ["0", "20", "40", "60", "80"]
    assert [int(e["sequenceNumber"]) for e in seen[1:]] == list(range(1, 9))


async def test_wait_closed_reads_by_itself_and_realtime_paces(
    echo_url: tuple[str, list[dict[str, Any]]],
) -> None:
    url, _ = echo_url
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(url, autoclose=False)
        call = SimulatedCall(ws, session="explicit")
        await call.handshake()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await call.send_silence(0.1)
        assert loop.time() - began >= 0.07  # five frames cannot all leave at once
        await call.hang_up()
        assert await call.wait_closed() == (4400, "bad start")
    assert call.received_media_bytes == 800
