"""Several instances on one database (CONTRACT section 8), on SQLite and PostgreSQL alike:
exact quotas across instances, run owners, heartbeats, lost instances, and a PostgreSQL
connection that goes away under live calls."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from agent_stream.config import Settings
from agent_stream.keys import STORE
from agent_stream.simulator import SimulatedCall, tone_ulaw
from agent_stream.store import Store, open_store
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import (
    ENDED,
    MakeTenant,
    ServeApp,
    Tenant,
    handshake_done,
    open_call,
    until,
    wait_for_state,
)
from tests.test_metrics import scrape, value


async def _dial_all(
    http: aiohttp.ClientSession, servers: list[TestClient], emulator: CloudonixEmulator,
    agent_uuid: str, count: int,
) -> list[SimulatedCall]:
    """`count` calls at the same moment, spread over `servers` in turn."""
    return list(await asyncio.gather(*(
        open_call(http, str(servers[i % len(servers)].make_url("/")), emulator, agent_uuid)
        for i in range(count)
    )))


async def test_an_owner_limited_to_10_calls_gets_exactly_10_of_50_spread_over_two_instances(
    client: TestClient, serve_app: ServeApp, settings: Settings, make_tenant: MakeTenant,
    store: Store, emulator: CloudonixEmulator,
) -> None:
    other = await serve_app(replace(settings, instance_name="other-host:8000:0"))
    tenant = await make_tenant(max_concurrent_calls=10)
    async with aiohttp.ClientSession() as http:
        calls = await _dial_all(http, [client, other], emulator, tenant.workflow.uuid, 50)
        await asyncio.gather(*(call.handshake() for call in calls))
        readers = {call.start_reading(): call for call in calls}
        refused: set[asyncio.Task[Any]] = set()
        pending = set(readers)
        while len(refused) < 40:  # the refused ones close; the admitted ones stay open
            done, pending = await asyncio.wait(pending, timeout=20, return_when=asyncio.FIRST_COMPLETED)
            assert done, f"only {len(refused)} refusals came"
            refused |= done
        live = [readers[reader] for reader in pending]
        for reader in refused:
            assert await readers[reader].wait_closed() == (
                1008, "quota exceeded: 10 concurrent calls already running")
        assert len(live) == 10
        runs, total = await store.list_runs(tenant.org_id)
        assert total == 10 and {r.state for r in runs} <= {"pending", "running"}
        owners = {r.instance_id for r in runs}
        assert owners <= {settings.instance_id, "other-host:8000:0"}
        for call in live:
            await call.hang_up()
        for call in live:
            assert await call.wait_closed() == (1000, "call ended")


async def test_a_live_instance_fails_the_runs_of_a_lost_one_and_never_a_live_one_s(
    serve_app: ServeApp, settings: Settings, make_tenant: MakeTenant, store: Store,
) -> None:
    tenant = await make_tenant()
    workflow, owner = tenant.workflow, await store.get_user(tenant.user_id)

    async def instance_with_a_run(name: str) -> tuple[Store, int]:
        other = await open_store(settings, instance_id=name)
        await other.register_instance()
        run = await other.start_run(workflow, owner, mode="cloudonix", initial_context={},
                                    gathered_context={}, logs={})
        await other.mark_run_running(run.id)
        return other, run.id

    lost, lost_run = await instance_with_a_run("lost-host:8000:0")
    alive, alive_run = await instance_with_a_run("alive-host:8000:0")
    await lost.close()  # killed: no heartbeat from now on
    watcher_settings = replace(settings, instance_name="watcher:8000:0",
                               heartbeat_interval=0.1, instance_timeout=1.0)
    beating = True

    async def keep_alive() -> None:
        while beating:
            await alive.heartbeat()
            await asyncio.sleep(0.1)

    beats = asyncio.create_task(keep_alive())
    try:
        watcher = await serve_app(watcher_settings)
        assert watcher.app[STORE].instance_id == "watcher:8000:0"
        run = await wait_for_state(store, lost_run, *ENDED, timeout=10)
        assert (run.state, run.end_reason) == ("failed", "instance_lost")
        assert run.error == "the instance serving this call stopped answering"
        assert run.duration_seconds is not None and run.ended_at is not None
        # the watcher counts the lost call as ended, with no close code
        lost_calls = {"provider": "cloudonix", "state": "failed", "end_reason": "instance_lost",
                      "close_code": "none"}
        assert value(await scrape(watcher), "agent_stream_calls_ended_total", **lost_calls) == 1
        # the live instance's run, older than the timeout, is untouched
        assert (await store.get_run_by_id(alive_run)).state == "running"
        await alive.finish_run(alive_run, state="completed", end_reason="caller_hangup",
                               close_code=1000)
        assert (await store.get_run_by_id(alive_run)).end_reason == "caller_hangup"
    finally:
        beating = False
        await beats
        await alive.close()


async def test_a_restarted_instance_fails_only_its_own_open_runs(
    serve_app: ServeApp, settings: Settings, make_tenant: MakeTenant, store: Store,
) -> None:
    tenant = await make_tenant()
    workflow, owner = tenant.workflow, await store.get_user(tenant.user_id)
    restarting = replace(settings, instance_name="restarting:8000:0")
    runs = {}
    for name in ("restarting:8000:0", "neighbour:8000:0"):
        other = await open_store(settings, instance_id=name)
        await other.heartbeat()
        run = await other.start_run(workflow, owner, mode="cloudonix", initial_context={},
                                    gathered_context={}, logs={})
        await other.mark_run_running(run.id)
        runs[name] = run.id
        await other.close()
    restarted = await serve_app(restarting)
    assert restarted.app[STORE].instance_id == "restarting:8000:0"
    own = await store.get_run_by_id(runs["restarting:8000:0"])
    assert (own.state, own.end_reason, own.error) == ("failed", "server_restarted", "server restarted")
    assert own.instance_id == "restarting:8000:0"
    neighbour = await store.get_run_by_id(runs["neighbour:8000:0"])
    assert (neighbour.state, neighbour.end_reason) == ("running", None)
    restarted_calls = {"provider": "cloudonix", "state": "failed", "end_reason": "server_restarted",
                       "close_code": "none"}
    assert value(await scrape(restarted), "agent_stream_calls_ended_total", **restarted_calls) == 1


async def test_a_run_names_the_instance_serving_its_call_in_the_api(
    client: TestClient, tenant: Tenant, dial: Any, store: Store, settings: Settings
) -> None:
    call = await dial(tenant.workflow.uuid)
    await call.handshake()
    run = await handshake_done(store, tenant)
    await call.hang_up()
    await call.wait_closed()
    answer = await (await client.get(f"/api/v1/workflow-runs/{run.id}", headers=tenant.headers)).json()
    assert answer["instance_id"] == settings.instance_id


async def ready_again(app: TestClient, timeout: float = 10.0) -> bool:
    """Whether /api/v1/ready answers 200 within `timeout` (polled)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if (await app.get("/api/v1/ready")).status == 200:
            return True
        await asyncio.sleep(0.1)
    return False


# -- a PostgreSQL server that goes away ------------------------------------------------------------


class Cuttable:
    """A TCP relay between the app and PostgreSQL that can be cut (every connection
    dropped, new ones refused) and restored, as a lost network or a restarted server is."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._pipes |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


@pytest.fixture
async def relay(settings: Settings) -> AsyncIterator[Cuttable]:
    if settings.db_url is None:
        pytest.skip("a network between the app and its database is PostgreSQL's")
    relay = Cuttable("127.0.0.1", 5432)
    await relay.start()
    yield relay


@pytest.mark.postgresql_only
async def test_a_lost_postgresql_connection_is_survived_without_a_restart(
    relay: Cuttable, serve_app: ServeApp, settings: Settings, make_tenant: MakeTenant,
    store: Store, emulator: CloudonixEmulator,
) -> None:
    """Live calls keep their audio and finish, their run writes land once the database is
    back, new calls and /ready are refused with a reason meanwhile, and the process serves
    again without a restart. (`store` is the test's own view, not through the relay.)"""
    assert settings.db_url is not None
    through_relay = settings.db_url.replace(":5432/", f":{relay.port}/")
    app = await serve_app(replace(settings, db_url=through_relay, instance_name="relayed:1:0",
                                  db_busy_timeout=1.0, run_write_retry_seconds=2.0))
    base = str(app.make_url("/"))
    tenant = await make_tenant()
    async with aiohttp.ClientSession() as http:
        call = await open_call(http, base, emulator, tenant.workflow.uuid)
        call.start_reading()
        await call.handshake()
        run = await handshake_done(store, tenant)
        assert run.state == "running" and run.instance_id == "relayed:1:0"

        await relay.cut()
        heard = call.received_media_bytes
        await call.send_audio(tone_ulaw(0.5), realtime=True)
        await until(lambda: call.received_media_bytes > heard)  # the agent still speaks
        ready = await app.get("/api/v1/ready")
        assert ready.status == 503 and ready.headers["Retry-After"]
        assert (await ready.json())["error"].startswith("database unavailable")
        refused = await open_call(http, base, emulator, tenant.workflow.uuid)
        refused.start_reading()
        code, reason = await refused.wait_closed(timeout=15)
        assert code == 1011 and reason.startswith("database unavailable"), reason
        await call.hang_up()
        assert await call.wait_closed() == (1000, "call ended")
        assert (await store.get_run_by_id(run.id)).state == "running"  # its end is queued

        await relay.start()  # the database answers again
        ended = await wait_for_state(store, run.id, *ENDED, timeout=20)
        assert (ended.state, ended.end_reason, ended.close_code) == ("completed", "caller_hangup", 1000)
        assert await ready_again(app)
        again = await open_call(http, base, emulator, tenant.workflow.uuid)
        again.start_reading()
        await again.handshake()
        await again.hang_up()
        assert await again.wait_closed() == (1000, "call ended")


async def test_run_json_merges_keep_nested_keys_on_every_database(
    make_tenant: MakeTenant, store: Store
) -> None:
    """RFC 7396, as SQLite's json_patch does it: `jsonb ||` would replace `timing` whole."""
    tenant = await make_tenant()
    owner = await store.get_user(tenant.user_id)
    run = await store.start_run(tenant.workflow, owner, mode="cloudonix", initial_context={},
                                gathered_context={}, logs={"timing": {"accept_ms": 1.5}, "gone": 1})
    await store.mark_run_running(run.id, {"timing": {"running_ms": 2.5}})
    await store.merge_run_context(run.id, logs={"timing": {"handshake_ms": 3.5}, "gone": None},
                                  gathered_context={"a": {"b": {"c": 1}}})
    await store.merge_run_context(run.id, gathered_context={"a": {"b": {"d": 2}}, "list": [1, 2]})
    await store.finish_run(run.id, state="completed", end_reason="caller_hangup", close_code=1000,
                           logs={"timing": {"ended_ms": 4.5}})
    ended = await store.get_run_by_id(run.id)
    assert ended.logs == {"timing": {"accept_ms": 1.5, "running_ms": 2.5, "handshake_ms": 3.5,
                                     "ended_ms": 4.5}}
    assert ended.gathered_context == {"a": {"b": {"c": 1, "d": 2}}, "list": [1, 2]}
    # and keys keep their order, as an operator reads them (the run page's log tables)
    assert list(ended.logs["timing"]) == ["accept_ms", "running_ms", "handshake_ms", "ended_ms"]
