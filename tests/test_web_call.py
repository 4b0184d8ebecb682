"""The admin's browser test call (provider `web`) through the real app: the token the
panel mints, every refusal of the socket (4400 with its reason, a failed run), and a whole
call in the page's framing (binary 16 kHz PCM, JSON control, live transcript lines)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from agent_stream import call_tokens
from agent_stream.audio import Codec
from agent_stream.keys import SPEECH
from agent_stream.models import User
from agent_stream.security import SESSION_COOKIE
from agent_stream.simulator import SimulatedCall, connect, stream_url, tone_ulaw
from agent_stream.store import Store
from tests.admin_fixtures import Operator, make_operator
from tests.conftest import Dial, MakeTenant, Tenant, answered, finished_run, until

GREETING = "Hello, thanks for calling Acme. Would you like to book an appointment?"
DESTINATION = "+15555550123"  # the starter's transfer node


@dataclass
class Admin:
    """A person signed in to the admin, as the call panel sees them: the session cookie's
    value, and the page's CSRF token to mint call tokens with."""

    operator: Operator
    session: str

    @property
    def user(self) -> User:
        return self.operator.user

    async def mint(self, agent_uuid: str) -> aiohttp.ClientResponse:
        """What the panel's POST gets (the client carries this admin's session cookie)."""
        client = self.operator.client
        client.session.cookie_jar.update_cookies({SESSION_COOKIE: self.session})
        return await client.post(f"/agents/{agent_uuid}/call-token",
                                 data={"csrf_token": self.operator.csrf}, allow_redirects=False)

    async def token(self, agent_uuid: str) -> str:
        response = await self.mint(agent_uuid)
        assert response.status == 200, await response.text()
        body = await response.json()
        assert body["stream_path"] == f"/api/v1/agent-stream/web/{agent_uuid}"
        token: str = body["token"]
        return token


async def admin_of(
    client: TestClient, store: Store, tenant: Tenant, email: str | None = None
) -> Admin:
    """Sign in through the real login form; keep the session cookie it set."""
    operator = await make_operator(client, store, tenant, email=email)
    cookie = client.session.cookie_jar.filter_cookies(client.make_url("/"))[SESSION_COOKIE]
    return Admin(operator, cookie.value)


@pytest.fixture
async def admin(client: TestClient, store: Store, tenant: Tenant) -> Admin:
    return await admin_of(client, store, tenant)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The page's sockets, with no cookie but those a test gives."""
    async with aiohttp.ClientSession() as session:
        yield session


async def talk(
    http: aiohttp.ClientSession, client: TestClient, agent_uuid: str, *,
    session: str | None = None, token: str | None = None, origin: str | None = None,
    query: str = "",
) -> SimulatedCall:
    """Open the panel's socket (same origin unless told) and send its start message."""
    url = stream_url(str(client.make_url("/")), agent_uuid, provider="web", newer_form=True) + query
    secrets = {k: v for k, v in {"session": session, "token": token, "origin": origin}.items() if v}
    call = await connect(http, url, provider="web", secrets=secrets)
    call.start_reading()
    await call.handshake()
    return call


async def refused(call: SimulatedCall, store: Store, tenant: Tenant, reason: str) -> None:
    """The socket closes 4400 with `reason`, and the run that was created failed with it."""
    code, said = await call.wait_closed(timeout=10)
    assert (code, said) == (4400, reason)
    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason, run.error) == ("failed", "handshake_failed", reason)
    assert (run.call_type, run.mode) == ("web", "web")
    assert not any(h.kind == "media" for h in call.heard)


# -- refusals ------------------------------------------------------------------------------------


async def test_no_session_is_refused(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    token = await admin.token(tenant.workflow.uuid)
    call = await talk(http, client, tenant.workflow.uuid, token=token)
    await refused(call, store, tenant, "browser call refused: not signed in (sign in to the admin again)")


async def test_a_session_without_a_token_is_refused(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    call = await talk(http, client, tenant.workflow.uuid, session=admin.session)
    await refused(call, store, tenant, "malformed 'start' event: missing call token")


async def test_a_signed_out_session_is_refused(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    token = await admin.token(tenant.workflow.uuid)
    await admin.operator.post("/logout")
    call = await talk(http, client, tenant.workflow.uuid, session=admin.session, token=token)
    await refused(call, store, tenant, "browser call refused: not signed in (sign in to the admin again)")


async def test_a_token_in_the_url_is_never_accepted(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    token = await admin.token(tenant.workflow.uuid)
    call = await talk(http, client, tenant.workflow.uuid, session=admin.session,
                      query=f"?token={token}")
    await refused(call, store, tenant,
                  "browser call refused: a call token is never accepted in the URL")
    # not even looked up: the token is still good, once, in the start message
    good = await talk(http, client, tenant.workflow.uuid, session=admin.session, token=token)
    await until(lambda: "utt-1" in good.marks)
    await good.hang_up()
    assert (await good.wait_closed())[0] == 1000


async def test_a_token_for_another_agent_is_refused(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    other = await store.create_workflow(organization_id=tenant.org_id, owner_user_id=tenant.user_id,
                                        name="Other agent", definition=tenant.workflow.definition)
    token = await admin.token(other.uuid)
    call = await talk(http, client, tenant.workflow.uuid, session=admin.session, token=token)
    await refused(call, store, tenant, "browser call refused: the call token is for another agent")


async def test_a_token_works_once(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    token = await admin.token(tenant.workflow.uuid)
    first = await talk(http, client, tenant.workflow.uuid, session=admin.session, token=token)
    await until(lambda: "utt-1" in first.marks)
    second = await talk(http, client, tenant.workflow.uuid, session=admin.session, token=token)
    await refused(second, store, tenant,
                  "browser call refused: the call token is unknown, used or expired")
    assert not first.ws.closed  # the first call goes on
    await first.hang_up()
    assert (await first.wait_closed())[0] == 1000


async def test_an_expired_token_is_refused(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(call_tokens, "TTL_SECONDS", 0.0)
    token = await admin.token(tenant.workflow.uuid)
    call = await talk(http, client, tenant.workflow.uuid, session=admin.session, token=token)
    await refused(call, store, tenant,
                  "browser call refused: the call token is unknown, used or expired")


async def test_another_user_s_token_is_refused(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    token = await admin.token(tenant.workflow.uuid)
    colleague = await admin_of(client, store, tenant, "colleague@example.com")
    call = await talk(http, client, tenant.workflow.uuid, session=colleague.session, token=token)
    await refused(call, store, tenant, "browser call refused: the call token is another user's")


async def test_a_user_of_another_organization_is_refused(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant,
    make_tenant: MakeTenant,
) -> None:
    stranger = await admin_of(client, store, await make_tenant(name="Other Org"))
    # the panel's endpoint does not even know the agent in their organization...
    assert (await stranger.mint(tenant.workflow.uuid)).status == 404
    # ...and a token for it (the store would only make one if our own code did) is refused
    token, _ = await call_tokens.mint(store, agent_uuid=tenant.workflow.uuid, user_id=stranger.user.id)
    call = await talk(http, client, tenant.workflow.uuid, session=stranger.session, token=token)
    await refused(call, store, tenant,
                  "browser call refused: the signed-in user may not see this agent")


@pytest.mark.parametrize("origin", [
    "https://evil.example", "null", "http://127.0.0.1:1",
    # no origin at all: malformed, or with bytes that are not UTF-8 (lone surrogates to aiohttp)
    "http://[::1", "http://127.0.0.1:99999", "http://ev{not_utf8}il.example",
])
async def test_another_origin_is_refused(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin,
    origin: str, non_utf8_headers: str,
) -> None:
    token = await admin.token(tenant.workflow.uuid)
    call = await talk(http, client, tenant.workflow.uuid, session=admin.session, token=token,
                      origin=origin.format(not_utf8=non_utf8_headers))
    await refused(call, store, tenant,
                  "browser call refused: the page is not of this server's origin")


async def test_the_origin_is_the_public_one_behind_a_proxy(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    """Behind a TLS proxy the page is https://: its socket's Origin says so, and a proxy
    passes X-Forwarded-Proto (the same rule as every URL the admin shows)."""
    token = await admin.token(tenant.workflow.uuid)
    origin = f"https://127.0.0.1:{client.port}"
    url = stream_url(str(client.make_url("/")), tenant.workflow.uuid, provider="web",
                     newer_form=True)
    ws = await http.ws_connect(url, headers={
        "Origin": origin, "X-Forwarded-Proto": "https",
        "Cookie": f"{SESSION_COOKIE}={admin.session}",
    })
    await ws.send_json({"event": "start", "token": token})
    # accepted: the greeting's line and its audio (the line goes out as the audio starts)
    received = [await ws.receive(timeout=10)]
    while received[-1].type is aiohttp.WSMsgType.BINARY and len(received) < 10:
        received.append(await ws.receive(timeout=10))
    assert received[-1].json() == {"event": "transcript", "role": "agent", "text": GREETING}
    if len(received) == 1:
        received.append(await ws.receive(timeout=10))
    assert aiohttp.WSMsgType.BINARY in {message.type for message in received}
    await ws.send_json({"event": "hangup"})
    await ws.close()
    assert (await finished_run(store, tenant)).state == "completed"


# -- a call --------------------------------------------------------------------------------------


def events(call: SimulatedCall, name: str) -> list[dict[str, Any]]:
    return [m for m in call.received if isinstance(m, dict) and m.get("event") == name]


async def test_a_call_speaks_16_khz_pcm_shows_live_lines_and_ends_when_the_person_hangs_up(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    token = await admin.token(tenant.workflow.uuid)
    call = await talk(http, client, tenant.workflow.uuid, session=admin.session, token=token)
    # the greeting's line arrives as it starts to play, not when it has
    await until(lambda: bool(events(call, "transcript")))
    assert events(call, "transcript")[0] == {"event": "transcript", "role": "agent", "text": GREETING}
    await until(lambda: "utt-1" in call.marks)  # the page echoed it: played

    frames = [h.payload for h in call.heard if h.kind == "media"]
    assert frames and all(len(frame) == 640 for frame in frames)  # 20 ms at 16 kHz
    speech = await client.app[SPEECH].tts.synthesize(GREETING, voice="en-us")
    expected = Codec("l16", 16000).encode(speech, 8000)  # the agent's words, as the page gets them
    heard = b"".join(frames)
    assert heard[: len(expected)] == expected
    assert not any(heard[len(expected):])  # then only the padding of the last frame

    await call.send_audio(tone_ulaw(0.4), realtime=False)
    await call.hang_up()
    assert (await call.wait_closed())[0] == 1000
    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason, run.call_type, run.mode) == (
        "completed", "caller_hangup", "web", "web")
    assert run.transcript[0].text == GREETING and not run.transcript[0].interrupted
    assert run.recording_path is not None
    assert run.gathered_context["web_user_id"] == admin.user.id
    assert run.gathered_context["call_id"].startswith("web-")
    assert run.logs["inbound_webhook"]["signed_in_user"] == admin.user.email
    assert "configuration" not in run.logs["inbound_webhook"]
    assert token not in str(run.logs) + str(run.gathered_context) + str(run.initial_context)
    recording = await client.get(f"/api/v1/workflow-runs/{run.id}/recording", headers=tenant.headers)
    assert recording.status == 200 and len(await recording.read()) > 44


async def test_caller_lines_are_shown_as_they_are_recognized(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    token = await admin.token(tenant.workflow.uuid)
    call = await talk(http, client, tenant.workflow.uuid, session=admin.session, token=token)
    await until(lambda: "utt-1" in call.marks)
    await call.press("1")  # the keypad: on to "book"
    await until(lambda: len(events(call, "transcript")) >= 3)
    assert [(e["role"], e["text"]) for e in events(call, "transcript")] == [
        ("agent", GREETING), ("caller", "(pressed 1)"), ("agent", "Great. Which day suits you?")]
    await call.hang_up()
    await call.wait_closed()


async def test_the_agent_hangs_up_on_the_socket(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    token = await admin.token(tenant.workflow.uuid)
    call = await talk(http, client, tenant.workflow.uuid, session=admin.session, token=token)
    await until(lambda: "utt-1" in call.marks)
    await call.send_json({"event": "dtmf", "digit": "9"})  # no edge: re-prompt
    await until(lambda: "utt-2" in call.marks)
    await call.send_json({"event": "dtmf", "digit": "9"})  # the fallback: "Goodbye." and hang up
    assert await call.wait_closed(timeout=20) == (1000, "agent hung up")
    assert events(call, "hangup") == [{"event": "hangup"}]
    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason, run.error) == ("completed", "agent_hangup", None)


async def test_a_transfer_node_ends_the_call_and_shows_where_it_would_have_gone(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    token = await admin.token(tenant.workflow.uuid)
    call = await talk(http, client, tenant.workflow.uuid, session=admin.session, token=token)
    await until(lambda: "utt-1" in call.marks)
    await call.press("0")
    code, _ = await call.wait_closed(timeout=20)
    assert code == 1000
    reason = f"a browser test call cannot be transferred; it would have gone to {DESTINATION}"
    assert events(call, "transfer") == [
        {"event": "transfer", "destination": DESTINATION, "text": reason}]
    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason) == ("completed", "transfer_unsupported")
    assert run.gathered_context["transfer_destination"] == DESTINATION
    assert run.logs["transfer_unsupported"] == reason


async def test_a_clear_reaches_the_page_when_the_person_talks_over_the_agent(
    http: aiohttp.ClientSession, client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    token = await admin.token(tenant.workflow.uuid)
    call = await talk(http, client, tenant.workflow.uuid, session=admin.session, token=token)
    call.echo_marks = False  # still playing the greeting
    await until(lambda: bool(events(call, "transcript")))
    await call.send_audio(tone_ulaw(1.0))  # barge-in
    await until(lambda: call.clears == 1)
    assert events(call, "clear") == [{"event": "clear"}]
    await call.hang_up()
    await call.wait_closed()
    run = await finished_run(store, tenant)
    assert run.transcript[0].interrupted


async def test_a_phone_call_gets_no_live_lines(dial: Dial, store: Store, tenant: Tenant) -> None:
    """The live transcript is the browser's: a provider whose wire shows none is sent none
    (its transcript has no listener at all)."""
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: "utt-1" in call.marks)
    await call.press("1")
    await until(lambda: "utt-2" in call.marks)
    await call.hang_up()
    await call.wait_closed()
    assert {message.get("event") for message in call.received} == {"media", "mark"}
    run = await finished_run(store, tenant)
    assert [line.role for line in run.transcript] == ["agent", "caller", "agent"]


# -- no configuration -----------------------------------------------------------------------------


async def test_the_api_and_the_admin_refuse_a_web_configuration(
    client: TestClient, tenant: Tenant, admin: Admin
) -> None:
    response = await client.post("/api/v1/telephony-configurations", headers=tenant.headers,
                                 json={"provider": "web", "name": "browser"})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error.startswith("provider 'web': the browser test call needs no configuration")
    unknown = await client.post("/api/v1/telephony-configurations", headers=tenant.headers,
                                json={"provider": "nope"})
    assert "web" not in (await unknown.json())["error"]

    form = await admin.operator.post("/telephony", {"provider": "web", "name": "browser"})
    assert form.status == 400 and "the browser test call needs no configuration" in form.html
    listing = await admin.operator.get("/telephony?provider=web")
    assert listing.status == 400
    page = await admin.operator.get("/telephony")
    assert "?provider=web" not in page.html
    settings = await admin.operator.get(f"/agents/{tenant.workflow.uuid}/settings")
    assert 'id="connect-web"' not in settings.html
    assert "Talk to this agent" in settings.html


async def test_the_call_token_needs_the_session_and_its_csrf_token(
    client: TestClient, store: Store, tenant: Tenant, admin: Admin
) -> None:
    forged = await client.post(f"/agents/{tenant.workflow.uuid}/call-token",
                               data={"csrf_token": "forged"}, allow_redirects=False)
    assert forged.status == 403
    client.session.cookie_jar.clear()
    anonymous = await client.post(f"/agents/{tenant.workflow.uuid}/call-token",
                                  data={"csrf_token": admin.operator.csrf}, allow_redirects=False)
    assert anonymous.status == 303 and anonymous.headers["Location"] == "/login"
    response = await admin.mint(tenant.workflow.uuid)
    assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["expires_in"] == 60 and body["call_id"].startswith("web-")
