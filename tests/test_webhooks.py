"""Run webhooks (CONTRACT section 9): managed through the API and the admin, delivered by the
real server to a receiver played by a local aiohttp server, signed, retried, exactly once
accepted per run event across restarts and instances."""
from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, unused_port
from yarl import URL

from agent_stream.config import Settings
from agent_stream.crypto import KEY_ENV
from agent_stream.keys import STORE, WEBHOOKS
from agent_stream.logs import CallFieldsFilter
from agent_stream.simulator import SimulatedCall
from agent_stream.store import Store, open_store, utcnow
from agent_stream.webhooks import delivery
from agent_stream.webhooks.targets import ALLOW_PRIVATE_ENV
from tests.admin_fixtures import Operator, make_operator
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import (
    Crash,
    Dial,
    MakeTenant,
    ServeApp,
    Tenant,
    create_tenant,
    finished_run,
    open_call,
    short_call,
    stored_bytes,
    stored_rows,
    until,
)
from tests.test_process import ROOT, wait_healthy

SECRET = "whsec_test-secret-0123456789-abcdef"
ALL_EVENTS = ["run.started", "run.completed", "run.failed"]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    @property
    def key(self) -> str:
        return self.headers["Idempotency-Key"]


@dataclass
class Receiver:
    """A webhook receiver: records every request; fails the first `fail_first` tries of
    each event (500), or every try while `refuse_all` is set, or never answers while `hang`
    is set."""

    url: str = ""
    fail_first: int = 0
    slow: float = 0.0  # seconds it takes to answer
    arrived: int = 0  # requests that came in, answered or not yet
    hang: bool = False
    refuse_all: bool = False
    requests: list[Received] = field(default_factory=list)
    hanging: int = 0
    held: list[bytes] = field(default_factory=list)  # the bodies of the requests it hangs on
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.arrived += 1
        body = await request.read()
        headers = dict(request.headers)
        if self.hang:
            self.hanging += 1
            self.held.append(body)
            await self.release.wait()
            return web.Response(status=200)
        await asyncio.sleep(self.slow)
        tries = sum(1 for r in self.requests if r.key == headers.get("Idempotency-Key"))
        status = 500 if tries < self.fail_first or self.refuse_all else 200
        self.requests.append(Received(headers, body, status))
        return web.Response(status=status, text="nope" if status == 500 else "ok")

    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.status == 200]

    def events(self) -> list[str]:
        return sorted(r.json["event"] for r in self.accepted())


@pytest.fixture
async def receivers(aiohttp_server: Any) -> AsyncIterator[Any]:
    """Make receivers; hanging ones are let go at the end."""
    made: list[Receiver] = []

    async def make(**options: Any) -> Receiver:
        receiver = Receiver(**options)
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        server = await aiohttp_server(app)
        receiver.url = str(server.make_url("/hook")) + "?token=query-secret-123"
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.release.set()


@pytest.fixture
def dial_to(emulator: CloudonixEmulator) -> Callable[[TestClient], Dial]:
    """`dial` for any served app of the test (they share the Cloudonix emulator)."""

    def dial_of(app_client: TestClient) -> Dial:
        async def dial_agent(agent_uuid: str, **options: Any) -> SimulatedCall:
            url = {"call_id": "C-1", "caller": "+15555550100", "called": "+15555550199"}
            return await open_call(app_client.session, str(app_client.make_url("/")), emulator,
                                   agent_uuid, **(url | options))

        return dial_agent

    return dial_of


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries come within a fraction of a second, and the sender polls often."""
    monkeypatch.setattr(delivery, "FIRST_RETRY_SECONDS", 0.05)
    monkeypatch.setattr(delivery, "POLL_SECONDS", 0.1)


def check_signature(received: Received, secret: str = SECRET) -> None:
    """What a receiver does: recompute HMAC-SHA256 of `t.body`."""
    parts = dict(p.split("=", 1) for p in received.headers["X-Agent-Stream-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + received.body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)


async def add_webhook(
    client: TestClient, tenant: Tenant, url: str, *, events: list[str] | None = None,
    secret: str | None = SECRET,
) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url, "events": events or ALL_EVENTS}
    if secret is not None:
        body["secret"] = secret
    response = await client.post("/api/v1/webhooks", json=body, headers=tenant.headers)
    assert response.status == 201, await response.text()
    return await response.json()  # type: ignore[no-any-return]


def dialing(dial: Dial, tenant: Tenant) -> Dial:
    """`dial` for a tenant of its own Cloudonix domain."""
    return functools.partial(dial, domain=tenant.domain.split(".")[0], session_domain=tenant.domain)


async def deliveries(client: TestClient, tenant: Tenant, webhook_id: int) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", headers=tenant.headers)
    assert response.status == 200, await response.text()
    return (await response.json())["deliveries"]  # type: ignore[no-any-return]


async def all_delivered(
    client: TestClient, tenant: Tenant, webhook_id: int, count: int
) -> list[dict[str, Any]]:
    """The webhook's deliveries once `count` of them are delivered."""
    found: list[dict[str, Any]] = []

    async def poll() -> None:
        while True:
            found[:] = await deliveries(client, tenant, webhook_id)
            if sum(d["status"] == "delivered" for d in found) >= count:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), 20)
    return found


async def tried_deliveries(
    client: TestClient, tenant: Tenant, webhook_id: int, count: int
) -> list[dict[str, Any]]:
    """The webhook's deliveries once `count` of them have been attempted at least once."""
    found: list[dict[str, Any]] = []

    async def poll() -> None:
        while True:
            found[:] = await deliveries(client, tenant, webhook_id)
            if sum(d["attempts"] >= 1 for d in found) >= count:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), 20)
    return found


# -- the API -------------------------------------------------------------------------------


async def test_webhooks_are_managed_through_the_api_and_never_show_their_secret(
    client: TestClient, tenant: Tenant, make_tenant: MakeTenant, settings: Settings
) -> None:
    created = await add_webhook(client, tenant, "https://hooks.example.com/in?token=abc")
    assert created["secret_hint"] == "••••" + SECRET[-4:] and created["has_secret"] is True
    assert "secret" not in created and created["active"] is True
    assert created["events"] == ALL_EVENTS

    generated = await add_webhook(client, tenant, "http://10.0.0.5:8080/x", events=["run.failed"],
                                  secret=None)
    secret = generated["secret"]  # once, in the creation's answer
    assert secret.startswith("whsec_") and len(secret) > 30

    listed = await (await client.get("/api/v1/webhooks", headers=tenant.headers)).text()
    assert SECRET not in listed and secret not in listed
    assert [w["id"] for w in json.loads(listed)["webhooks"]] == [created["id"], generated["id"]]
    stored = await stored_bytes(settings)
    assert SECRET.encode() not in stored and secret.encode() not in stored  # sealed at rest

    for body, field_name in (
        ({"url": "ftp://example.com/x", "events": ALL_EVENTS}, "url"),
        ({"url": "https://user:pw@example.com/", "events": ALL_EVENTS}, "url"),
        ({"url": "not a url", "events": ALL_EVENTS}, "url"),
        ({"url": "https://example.com/"}, "events"),
        ({"url": "https://example.com/", "events": ["run.exploded"]}, "events"),
        ({"url": "https://example.com/", "events": ALL_EVENTS, "secret": "short"}, "secret"),
    ):
        response = await client.post("/api/v1/webhooks", json=body, headers=tenant.headers)
        assert response.status == 400, body
        answer = await response.json()
        if field_name:
            assert answer["problems"][0]["field"].startswith(field_name), answer

    one = f"/api/v1/webhooks/{created['id']}"
    paused = await client.patch(one, json={"active": False}, headers=tenant.headers)
    assert paused.status == 200 and (await paused.json())["active"] is False
    etag = paused.headers["ETag"]
    stale = await client.patch(one, json={"url": "https://b.example.com/"},
                               headers=tenant.headers | {"If-Match": '"1"'})
    assert stale.status == 412
    moved = await client.patch(one, json={"url": "https://b.example.com/", "secret": "x" * 20},
                               headers=tenant.headers | {"If-Match": etag})
    assert moved.status == 200, await moved.text()
    moved_body = await moved.json()
    assert moved_body["url"] == "https://b.example.com/" and moved_body["secret_hint"] == "••••xxxx"
    assert "secret" not in moved_body

    other = await make_tenant(name="Other", domain="other.cloudonix.net", token="other-token-1234")
    for method, path in (("GET", one), ("PATCH", one), ("DELETE", one),
                         ("GET", one + "/deliveries")):
        response = await client.request(method, path, json={} if method == "PATCH" else None,
                                         headers=other.headers)
        assert response.status == 404, (method, path)
    assert (await (await client.get("/api/v1/webhooks", headers=other.headers)).json()) == {
        "webhooks": []}

    assert (await client.delete(one, headers=tenant.headers)).status == 204
    assert (await client.get(one, headers=tenant.headers)).status == 404


async def test_a_control_character_or_a_bad_host_in_a_url_or_secret_is_a_400_on_both_backends(
    client: TestClient, store: Store, tenant: Tenant
) -> None:
    """A NUL is no text PostgreSQL stores (the insert failed: a 500; SQLite kept it), and a
    URL or a secret is one line: refused by the check the API and the admin share. A host
    that is not valid punycode raised when read (a 500)."""
    for body, field_name in (
        ({"url": "https://xn--a.example.com/in", "events": ALL_EVENTS}, "url"),  # no punycode
        ({"url": "https://hooks.example.com/in\x00", "events": ALL_EVENTS}, "url"),
        ({"url": "https://hooks\x00.example.com/", "events": ALL_EVENTS}, "url"),
        ({"url": "https://hooks.example.com/in\r\nX-Forged: 1", "events": ALL_EVENTS}, "url"),
        ({"url": "https://hooks.example.com/in", "events": ALL_EVENTS,
          "secret": "s" * 20 + "\x00"}, "secret"),
    ):
        response = await client.post("/api/v1/webhooks", json=body, headers=tenant.headers)
        assert response.status == 400, (body, await response.text())
        assert (await response.json())["problems"][0]["field"] == field_name
    created = await add_webhook(client, tenant, "https://hooks.example.com/in")
    one = f"/api/v1/webhooks/{created['id']}"
    for body in ({"url": "https://hooks.example.com/\x00"}, {"secret": "s" * 20 + "\x00"},
                 {"url": "http://xn--/"}):
        response = await client.patch(one, json=body, headers=tenant.headers)
        assert response.status == 400, (body, await response.text())

    operator = await make_operator(client, store, tenant)
    for form, said in (({"url": "https://hooks.example.com/a\x00"}, "control characters"),
                       ({"url": "https://hooks.example.com/a", "secret": "s" * 20 + "\x00"},
                        "control characters"),
                       ({"url": "https://xn--abc-.example.com/a"}, "is not a valid URL")):
        page = await operator.post("/webhooks", form | {"events": ALL_EVENTS})
        assert page.status == 400 and said in page.html, form
        page = await operator.post(f"/webhooks/{created['id']}", form | {"events": ALL_EVENTS})
        assert page.status == 400 and said in page.html, form
    (stored,) = await store.list_webhooks(tenant.org_id)
    assert stored.url == "https://hooks.example.com/in"


async def test_an_id_in_a_path_is_ascii_digits_or_not_found(
    client: TestClient, store: Store, tenant: Tenant
) -> None:
    """Only the id as we write it names a row: not other scripts' digits (`int()` reads
    "١" as 1), a sign, spaces or underscores, and a superscript ("²" passed `isdigit` and
    failed `int`: a 500), in the API and the admin alike."""
    webhook = (await add_webhook(client, tenant, "https://hooks.example.com/in"))["id"]
    response = await client.get("/api/v1/telephony-configurations", headers=tenant.headers)
    config = (await response.json())["telephony_configurations"][0]["id"]
    arabic = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
    operator = await make_operator(client, store, tenant)
    for api, admin, row in (("/api/v1/webhooks/", "/webhooks/", webhook),
                            ("/api/v1/telephony-configurations/", "/telephony/", config)):
        assert (await client.get(f"{api}{row}", headers=tenant.headers)).status == 200
        assert (await operator.get(f"{admin}{row}")).status == 200
        for spelled in (str(row).translate(arabic), f"+{row}", f"%20{row}", f"{row}%20",
                        f"0_{row}", "%C2%B2", "%C2%B9"):
            response = await client.get(f"{api}{spelled}", headers=tenant.headers)
            assert response.status == 404, (api, spelled, await response.text())
            assert (await operator.get(f"{admin}{spelled}")).status == 404, (admin, spelled)


# -- deliveries ----------------------------------------------------------------------------


async def test_a_call_is_reported_started_and_completed_signed_with_the_run_as_the_api_shows_it(
    client: TestClient, tenant: Tenant, dial: Dial, store: Store, receivers: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent_stream.webhooks")
    caplog.handler.addFilter(CallFieldsFilter())  # as the server's own handler has it
    receiver = await receivers()
    webhook = await add_webhook(client, tenant, receiver.url)
    assert await short_call(dial, tenant) == (1000, "call ended")
    run = await finished_run(store, tenant)

    shown = await all_delivered(client, tenant, webhook["id"], 2)
    assert receiver.events() == ["run.completed", "run.started"]
    for received in receiver.accepted():
        check_signature(received)
        body = received.json
        assert set(body) == {"event", "id", "created_at", "run"}
        assert received.key == body["id"]
        assert received.headers["Content-Type"] == "application/json"
        assert body["run"]["id"] == run.id and body["run"]["name"] == run.name
        assert "transcript" in body["run"]
    completed = next(r.json for r in receiver.accepted() if r.json["event"] == "run.completed")
    api_run = await (await client.get(f"/api/v1/workflow-runs/{run.id}", headers=tenant.headers)).json()
    assert completed["run"] == api_run
    assert completed["created_at"] == run.ended_at

    # logged by the receiver's origin: not its path (a Slack hook's path is its secret), its
    # query, nor the signing secret
    attempts = [r for r in caplog.records if r.name.startswith("agent_stream.webhooks")]
    # each names the run and the agent (shortened) as a call's lines do
    assert {(getattr(r, "run", None), getattr(r, "agent", None)) for r in attempts} == {
        (run.name, f"{tenant.workflow.uuid[:8]}…")}
    sent = [r.getMessage() for r in attempts]
    origin = str(URL(receiver.url).origin())
    assert sum(f" to {origin}: HTTP 200 " in line for line in sent) == 2, sent
    assert not [line for line in sent if "/hook" in line or "query-secret-123" in line]
    assert SECRET not in caplog.text

    assert {d["event"] for d in shown} == {"run.started", "run.completed"}
    for d in shown:
        assert (d["status"], d["status_code"], d["attempts"], d["error"]) == ("delivered", 200, 1, None)
        assert isinstance(d["latency_ms"], int) and d["run_id"] == run.id


async def test_a_refused_call_is_reported_failed_to_the_webhooks_that_want_it(
    client: TestClient, tenant: Tenant, dial: Dial, store: Store, receivers: Any
) -> None:
    failures, everything = await receivers(), await receivers()
    only_failed = await add_webhook(client, tenant, failures.url, events=["run.failed"])
    await add_webhook(client, tenant, everything.url, events=["run.completed", "run.failed"])
    call = await dial(tenant.workflow.uuid, domain=None)
    assert (await call.wait_closed())[0] == 4400
    run = await finished_run(store, tenant)
    assert run.state == "failed"

    await all_delivered(client, tenant, only_failed["id"], 1)
    await until(lambda: len(everything.accepted()) == 1)
    assert failures.events() == everything.events() == ["run.failed"]
    body = failures.accepted()[0].json
    assert (body["run"]["state"], body["run"]["close_code"]) == ("failed", 4400)


async def test_a_failing_receiver_gets_retries_with_the_same_idempotency_key_until_it_accepts(
    client: TestClient, tenant: Tenant, dial: Dial, store: Store, receivers: Any
) -> None:
    receiver = await receivers(fail_first=2)
    webhook = await add_webhook(client, tenant, receiver.url, events=["run.completed"])
    await short_call(dial, tenant)

    (shown,) = await all_delivered(client, tenant, webhook["id"], 1)
    assert [r.status for r in receiver.requests] == [500, 500, 200]
    assert len({r.key for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1  # the same event, the same body
    for received in receiver.requests:
        check_signature(received)
    assert (shown["status"], shown["attempts"], shown["status_code"]) == ("delivered", 3, 200)


async def test_an_attempt_that_keeps_failing_is_shown_with_its_error_and_next_attempt(
    client: TestClient, tenant: Tenant, dial: Dial, receivers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "FIRST_RETRY_SECONDS", 3600.0)  # one attempt in this test
    receiver = await receivers(fail_first=100)
    webhook = await add_webhook(client, tenant, receiver.url, events=["run.completed"])
    await short_call(dial, tenant)
    await until(lambda: len(receiver.requests) == 1)

    async def recorded() -> dict[str, Any]:
        while True:
            (shown,) = await deliveries(client, tenant, webhook["id"]) or [{}]
            if shown.get("attempts"):
                return shown
            await asyncio.sleep(0.05)

    shown = await asyncio.wait_for(recorded(), 10)
    assert (shown["status"], shown["status_code"], shown["error"]) == ("pending", 500, "HTTP 500")
    assert shown["next_attempt_at"] > shown["last_attempt_at"]


async def test_a_delivery_still_refused_24_hours_after_its_event_is_given_up(
    client: TestClient, tenant: Tenant, dial: Dial, receivers: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery, "RETRY_FOR_SECONDS", 0.0)  # the 24 hours are over at once
    outcomes: list[str] = []
    client.app[WEBHOOKS].on_outcome = outcomes.append  # where the metrics counter goes
    receiver = await receivers(fail_first=100)
    webhook = await add_webhook(client, tenant, receiver.url, events=["run.completed"])
    await short_call(dial, tenant)

    async def given_up() -> dict[str, Any]:
        while True:
            shown = await deliveries(client, tenant, webhook["id"])
            if shown and shown[0]["status"] == "failed":
                return shown[0]
            await asyncio.sleep(0.05)

    shown = await asyncio.wait_for(given_up(), 10)
    assert (shown["attempts"], shown["error"], shown["next_attempt_at"]) == (1, "HTTP 500", None)
    await until(lambda: outcomes == ["failed"])
    assert len(receiver.requests) == 1


async def test_a_paused_webhook_is_sent_nothing(
    client: TestClient, tenant: Tenant, dial: Dial, receivers: Any
) -> None:
    paused, active = await receivers(), await receivers()
    hook = await add_webhook(client, tenant, paused.url)
    response = await client.patch(f"/api/v1/webhooks/{hook['id']}", json={"active": False},
                                  headers=tenant.headers)
    assert response.status == 200
    other = await add_webhook(client, tenant, active.url)
    await short_call(dial, tenant)
    await all_delivered(client, tenant, other["id"], 2)
    assert paused.requests == [] and await deliveries(client, tenant, hook["id"]) == []


async def test_a_dead_receiver_delays_neither_the_call_nor_another_organizations_deliveries(
    client: TestClient, make_tenant: MakeTenant, dial: Dial, store: Store, receivers: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery, "ATTEMPT_TIMEOUT_SECONDS", 3.0)
    monkeypatch.setattr(delivery, "FIRST_RETRY_SECONDS", 3600.0)
    dead, alive = await receivers(hang=True), await receivers()
    stuck = await make_tenant(name="Stuck", domain="stuck.cloudonix.net", token="stuck-token-1234")
    fine = await make_tenant(name="Fine", domain="fine.cloudonix.net", token="fine-token-5678")
    dead_hook = await add_webhook(client, stuck, dead.url)
    alive_hook = await add_webhook(client, fine, alive.url)

    assert await short_call(dialing(dial, stuck), stuck) == (1000, "call ended")
    assert (await finished_run(store, stuck)).state == "completed"
    await until(lambda: dead.hanging >= 1)
    assert await short_call(dialing(dial, fine), fine) == (1000, "call ended")
    await all_delivered(client, fine, alive_hook["id"], 2)
    assert dead.hanging >= 1 and dead.requests == []  # still waiting for the dead one

    async def timed_out() -> list[dict[str, Any]]:
        while True:
            shown = await deliveries(client, stuck, dead_hook["id"])
            if shown and all(d["attempts"] >= 1 for d in shown):
                return shown
            await asyncio.sleep(0.05)

    for shown in await asyncio.wait_for(timed_out(), 15):
        assert (shown["status"], shown["error"]) == ("pending", "no answer within 3 s")


async def test_an_organization_s_many_slow_webhooks_do_not_hold_back_another_s_new_event(
    client: TestClient, make_tenant: MakeTenant, store: Store, receivers: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three dead receivers of one organization and 120 runs: 360 first attempts, four at
    a time. Another organization's event must not queue behind them (it did: the due list
    was the 100 oldest, all the first organization's, and its cap skipped them all)."""
    monkeypatch.setattr(delivery, "ATTEMPT_TIMEOUT_SECONDS", 30.0)
    busy = await make_tenant(name="Busy", domain="busy.cloudonix.net", token="busy-token-1234")
    other = await make_tenant(name="Other", domain="other.cloudonix.net", token="other-token-5678")
    dead, alive = await receivers(hang=True), await receivers()
    for _ in range(3):
        await add_webhook(client, busy, dead.url, events=["run.started"])
    await runs_started(store, busy, 120)
    await until(lambda: dead.hanging >= delivery.MAX_IN_FLIGHT_PER_ORGANIZATION)
    await add_webhook(client, other, alive.url, events=["run.started"])
    await runs_started(store, other, 1)
    await until(lambda: len(alive.accepted()) == 1, timeout=10)  # not after 360 others
    assert dead.hanging == delivery.MAX_IN_FLIGHT_PER_ORGANIZATION  # still the cap, no more


async def test_every_try_sends_the_body_of_the_first_even_after_a_crash_mid_attempt(
    crash: Crash, serve_app: ServeApp, settings: Settings, receivers: Any,
) -> None:
    """A server is SIGKILLed in the middle of a first attempt and the run ends meanwhile;
    the restarted instance tries again. One Idempotency-Key, one body: the run as the first
    try saw it (the body was rendered again, with the run completed)."""
    receiver = await receivers(hang=True)
    store = crash.store
    await store.create_webhook(crash.workflow.organization_id, url=receiver.url,
                               events=["run.started"], secret=SECRET)
    port = unused_port()
    env = os.environ | {"AGENT_STREAM_DB": settings.database, ALLOW_PRIVATE_ENV: "1"} | (
        {KEY_ENV: settings.secret_key} if settings.secret_key else {})
    server = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, f"http://127.0.0.1:{port}", server)
        run = await crash.open_run()
        await until(lambda: receiver.hanging == 1)
    finally:
        server.kill()
        server.communicate(timeout=30)
    await store.finish_run(run.id, state="completed", end_reason="caller_hangup", close_code=1000)
    await store.close()
    receiver.hang = False

    # the same instance restarted takes its claim back at once
    await serve_app(replace(settings, port=port))
    await until(lambda: len(receiver.accepted()) == 1)
    (accepted,) = receiver.accepted()
    assert accepted.body == receiver.held[0]
    assert (accepted.json["event"], accepted.json["run"]["state"]) == ("run.started", "running")
    check_signature(accepted)


async def test_a_server_stopping_lets_an_attempt_under_way_finish_and_records_it(
    serve_app: ServeApp, settings: Settings, crash: Crash, receivers: Any,
) -> None:
    """The server stops while a receiver takes a second to answer: the stop waits for the
    answer and records the delivery, so the next start does not send the event again (the
    attempt was cut off, and the receiver got it twice)."""
    receiver = await receivers(slow=1.0)
    org_id = crash.workflow.organization_id
    webhook = await crash.store.create_webhook(org_id, url=receiver.url, events=["run.started"],
                                               secret=SECRET)
    await crash.store.close()
    first = await serve_app(settings)
    await replace(crash, store=first.app[STORE]).open_run()
    await until(lambda: receiver.arrived == 1)
    await first.close()  # while the receiver takes its second
    assert len(receiver.accepted()) == 1
    store = await open_store(settings)
    try:
        (shown,) = await store.list_deliveries(org_id, webhook.id)
    finally:
        await store.close()
    assert (shown.state, shown.attempts, shown.status_code) == ("delivered", 1, 200)


async def test_a_stopping_server_starts_no_queued_attempt_and_gives_its_claim_back(
    serve_app: ServeApp, settings: Settings, crash: Crash, receivers: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One sender, busy with a slow receiver's run.started while run.completed waits in
    its queue: the stop lets the first finish, does not start the second (it would be cut
    off, and sent twice), and gives its claim back so the next start sends it at once."""
    monkeypatch.setattr(delivery, "SENDERS", 1)
    receiver = await receivers(slow=1.0)
    org_id = crash.workflow.organization_id
    webhook = await crash.store.create_webhook(org_id, url=receiver.url, events=ALL_EVENTS,
                                               secret=SECRET)
    await crash.store.close()
    first = await serve_app(settings)
    store = first.app[STORE]
    run = await replace(crash, store=store).open_run()
    await until(lambda: receiver.arrived == 1)
    await store.finish_run(run.id, state="completed", end_reason="caller_hangup", close_code=1000)

    async def queued() -> None:  # the second is claimed while the only sender is busy
        while True:
            if len(await claimed_by(settings, webhook.id)) == 2:
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(queued(), 5)
    await first.close()
    assert receiver.arrived == 1 and receiver.events() == ["run.started"]
    assert await claimed_by(settings, webhook.id) == []  # given back
    await serve_app(settings)
    await until(lambda: receiver.events() == ["run.completed", "run.started"], timeout=5)


async def claimed_by(settings: Settings, webhook_id: int) -> list[str]:
    """Who holds a claim on a pending delivery of the webhook, read past the app."""
    rows = await stored_rows(settings, f"""SELECT claimed_by FROM webhook_deliveries
        WHERE webhook_id = {int(webhook_id)} AND state = 'pending' AND claimed_by IS NOT NULL""")
    return [str(row[0]) for row in rows]


async def runs_started(store: Store, tenant: Tenant, count: int) -> None:
    """`count` runs of the tenant's agent go running: each writes its run.started deliveries."""
    owner = await store.get_user(tenant.user_id)
    for _ in range(count):
        run = await store.start_run(tenant.workflow, owner, mode="cloudonix", initial_context={},
                                    gathered_context={}, logs={})
        await store.mark_run_running(run.id)


async def test_deliveries_survive_a_restart_between_tries_and_are_accepted_exactly_once(
    serve_app: ServeApp, settings: Settings, make_tenant: MakeTenant, receivers: Any,
    dial_to: Callable[[TestClient], Dial],
) -> None:
    receiver = await receivers(fail_first=2, refuse_all=True)  # refuses all until the restart
    first = await serve_app(settings)
    tenant = await make_tenant()
    webhook = await add_webhook(first, tenant, receiver.url)
    assert await short_call(dial_to(first), tenant) == (1000, "call ended")
    await finished_run(first.app[STORE], tenant)
    await until(lambda: {r.json["event"] for r in receiver.requests} >= {"run.started", "run.completed"})
    await first.close()  # the server stops between tries
    tries_before = len(receiver.requests)
    receiver.refuse_all = False  # from now on, the third try of each event is accepted

    second = await serve_app(settings)
    shown = await all_delivered(second, tenant, webhook["id"], 2)
    assert len(receiver.requests) > tries_before  # the second server tried again
    accepted = Counter(r.key for r in receiver.accepted())
    assert sorted(r.json["event"] for r in receiver.accepted()) == ["run.completed", "run.started"]
    assert set(accepted.values()) == {1}
    assert {r.key for r in receiver.requests} == set(accepted)  # one key per event, every try
    for received in receiver.requests:
        check_signature(received)
    for d in shown:
        tries = sum(r.key == received_key(receiver, d["event"]) for r in receiver.requests)
        assert tries >= 3 and 1 <= d["attempts"] <= tries  # a try cut off by the stop is not counted


def received_key(receiver: Receiver, event: str) -> str:
    return next(r.key for r in receiver.requests if r.json["event"] == event)


async def test_runs_a_crashed_server_left_are_reported_by_its_next_start(
    crash: Crash, serve_app: ServeApp, settings: Settings, receivers: Any
) -> None:
    receiver = await receivers()
    org_id = crash.workflow.organization_id
    await crash.store.create_webhook(org_id, url=receiver.url, events=ALL_EVENTS, secret=SECRET)
    run = await crash.open_run()  # running when the server died: run.started is queued
    now = utcnow()
    due = await crash.store.due_deliveries(
        now=now, max_claims_per_webhook=2, per_organization=delivery.MAX_IN_FLIGHT_PER_ORGANIZATION)
    claimed = await crash.store.claim_deliveries(  # it died sending it, claimed for long
        [d[0] for d in due], instance_id=settings.instance_id, now=now,
        until="9999-12-31T00:00:00.000+00:00")
    assert [c.delivery.event for c in claimed] == ["run.started"]
    await crash.store.close()

    await serve_app(settings)  # takes its claims back, fails the run and sends both events
    await until(lambda: len(receiver.accepted()) == 2)
    assert receiver.events() == ["run.failed", "run.started"]
    failed = next(r.json for r in receiver.accepted() if r.json["event"] == "run.failed")
    assert (failed["run"]["id"], failed["run"]["end_reason"]) == (run.id, "server_restarted")
    for received in receiver.accepted():
        check_signature(received)


async def due_now(store: Store, *, max_claims_per_webhook: int = 2) -> list[tuple[int, int, int]]:
    return await store.due_deliveries(now=utcnow(), max_claims_per_webhook=max_claims_per_webhook,
                                      per_organization=delivery.MAX_IN_FLIGHT_PER_ORGANIZATION)


async def test_the_sender_takes_new_events_first_and_never_a_retry_before_it_is_due(
    crash: Crash, receivers: Any
) -> None:
    """A receiver that keeps failing piles up retries: a new event of anyone goes before
    them; a webhook with its attempts under way is left for later; and a delivery another
    instance tried and failed after we read it is not claimed again before its backoff."""
    receiver = await receivers()
    store = crash.store
    await store.create_webhook(crash.workflow.organization_id, url=receiver.url,
                               events=["run.started"], secret=SECRET)
    await crash.open_run()
    (first,) = await due_now(store)
    seen_by_b = await due_now(store)
    now = utcnow()
    (taken,) = await store.claim_deliveries([first[0]], instance_id="a:1:0", now=now,
                                            until="9999-12-31T00:00:00.000+00:00")
    assert await store.record_attempt(  # failed: due again in an hour
        first[0], instance_id="a:1:0", state="pending",
        next_attempt_at="9999-01-01T00:00:00.000+00:00", status_code=503, latency_ms=3,
        error="HTTP 503", body="{}", at=now)
    assert await store.claim_deliveries([d[0] for d in seen_by_b], instance_id="b:1:0",
                                        now=utcnow(), until="9999-12-31T00:00:00.000+00:00") == []

    # the retry comes due again (older than any new event), then a new event arrives
    assert len(await store.claim_deliveries([first[0]], instance_id="a:1:0", now="9999-01-02",
                                            until="9999-12-31T00:00:00.000+00:00")) == 1
    await store.record_attempt(first[0], instance_id="a:1:0", state="pending",
                               next_attempt_at=taken.delivery.created_at, status_code=503,
                               latency_ms=3, error="HTTP 503", body="{}", at=now)
    await crash.open_run()
    due = await due_now(store)
    assert len(due) == 1 and due[0][0] != first[0]  # the webhook's next: the new event first

    # one attempt under way and one allowed per webhook: nothing more of it is due
    newest = due[0][0]
    assert await store.claim_deliveries([newest], instance_id="a:1:0", now=utcnow(),
                                        until="9999-12-31T00:00:00.000+00:00")
    assert await due_now(store, max_claims_per_webhook=1) == []
    assert [d[0] for d in await due_now(store)] == [first[0]]  # then the retry
    await store.close()


async def test_receivers_on_a_private_network_are_refused_unless_the_operator_allows_them(
    serve_app: ServeApp, settings: Settings, receivers: Any, emulator: CloudonixEmulator,
    dial_to: Callable[[TestClient], Dial],
) -> None:
    """By default a webhook cannot make the server POST into its own network: neither an
    address written out (127.0.0.1) nor a name resolving to one (localhost)."""
    client = await serve_app(replace(settings, webhooks_allow_private=False))  # the only one
    tenant = await create_tenant(client.app[STORE], emulator)
    receiver = await receivers()
    by_address = await add_webhook(client, tenant, receiver.url)
    by_name = await add_webhook(client, tenant, receiver.url.replace("127.0.0.1", "localhost"))
    assert await short_call(dial_to(client), tenant) == (1000, "call ended")

    for webhook, host in ((by_address, "127.0.0.1"), (by_name, "localhost")):
        tried = await tried_deliveries(client, tenant, webhook["id"], 2)
        for shown in tried:
            assert shown["status"] == "pending" and shown["status_code"] is None
            assert shown["error"] == (f"cannot connect: {host} is not a public address; "
                                      f"receivers on a private network need "
                                      f"AGENT_STREAM_WEBHOOKS_ALLOW_PRIVATE=1")
    assert receiver.requests == []  # nothing reached it


async def test_two_instances_on_one_database_send_each_event_once(
    client: TestClient, serve_app: ServeApp, settings: Settings, tenant: Tenant, dial: Dial,
    receivers: Any, dial_to: Callable[[TestClient], Dial],
) -> None:
    other = await serve_app(replace(settings, instance_name="other-host:8000:0"))
    receiver = await receivers()
    webhook = await add_webhook(client, tenant, receiver.url)
    calls = [short_call(dial, tenant) for _ in range(3)] + [
        short_call(dial_to(other), tenant) for _ in range(3)]
    assert await asyncio.gather(*calls) == [(1000, "call ended")] * 6
    await all_delivered(client, tenant, webhook["id"], 12)
    keys = Counter(r.key for r in receiver.requests)
    assert len(keys) == 12 and set(keys.values()) == {1}
    assert Counter(r.json["event"] for r in receiver.requests) == {
        "run.started": 6, "run.completed": 6}


# -- the admin -----------------------------------------------------------------------------


async def test_the_admin_adds_edits_pauses_and_deletes_webhooks_and_shows_deliveries(
    client: TestClient, store: Store, tenant: Tenant, dial: Dial, receivers: Any,
    make_tenant: MakeTenant,
) -> None:
    receiver = await receivers()
    operator: Operator = await make_operator(client, store, tenant)
    page = await operator.get("/webhooks")
    assert page.status == 200 and "No webhooks yet" in page.html

    bad = await operator.post("/webhooks", {"url": "ftp://x", "events": "run.started"})
    assert bad.status == 400 and "must start with http:// or https://" in bad.html

    added = await operator.post("/webhooks", {"url": receiver.url, "events": ALL_EVENTS})
    assert added.status == 200 and "shown only this once" in added.html
    (webhook,) = await store.list_webhooks(tenant.org_id)
    assert webhook.secret.startswith("whsec_") and webhook.secret in added.html

    listing = await operator.get("/webhooks")
    assert webhook.secret not in listing.html and "••••" + webhook.secret[-4:] in listing.html
    assert "query-secret-123" in listing.html  # the operator's own URL, shown to them

    await short_call(dial, tenant)
    await until(lambda: len(receiver.accepted()) == 2)
    check_signature(receiver.accepted()[0], webhook.secret)

    async def detail_page() -> Any:
        while True:
            detail = await operator.get(f"/webhooks/{webhook.id}")
            if detail.html.count(">Delivered<") == 2:
                return detail
            await asyncio.sleep(0.05)

    detail = await asyncio.wait_for(detail_page(), 10)
    assert "run.completed" in detail.html and "run.started" in detail.html
    assert webhook.secret not in detail.html

    saved = await operator.post(f"/webhooks/{webhook.id}", {
        "url": receiver.url, "events": ["run.failed"], "secret": SECRET,
        "revision": str(webhook.revision)})
    assert saved.status == 200 and "Webhook saved." in saved.html
    edited = await store.get_webhook(tenant.org_id, webhook.id)
    assert (edited.events, edited.secret) == (["run.failed"], SECRET)
    stale = await operator.post(f"/webhooks/{webhook.id}", {
        "url": receiver.url, "events": ["run.failed"], "revision": str(webhook.revision)})
    assert stale.status == 409

    paused = await operator.post(f"/webhooks/{webhook.id}/active", {"active": "0"})
    assert "Webhook paused" in paused.html and "Resume" in paused.html
    assert (await store.get_webhook(tenant.org_id, webhook.id)).active is False

    other = await make_tenant(name="Other", domain="other.cloudonix.net", token="other-token-1234")
    stranger = await make_operator(client, store, other)
    assert (await stranger.get(f"/webhooks/{webhook.id}")).status == 404
    assert (await stranger.get(f"/webhooks/{webhook.id}/delete")).status == 404
    assert (await stranger.post(f"/webhooks/{webhook.id}/delete")).status == 404

    operator = await make_operator(client, store, tenant, email="second-admin@example.com")
    asked = await operator.get(f"/webhooks/{webhook.id}/delete")  # asks first, deletes nothing
    assert asked.status == 200 and "Delete this webhook?" in asked.html
    assert "••••" + SECRET[-4:] in asked.html and len(await store.list_webhooks(tenant.org_id)) == 1
    deleted = await operator.post(f"/webhooks/{webhook.id}/delete")
    assert "Webhook deleted" in deleted.html
    assert await store.list_webhooks(tenant.org_id) == []
