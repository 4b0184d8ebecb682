"""A database that is busy or failing: calls are closed with a code and a reason, runs end,
quota slots come back, and the API answers 503 rather than 500 (issue 8)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from agent_stream.config import Settings
from agent_stream.errors import DatabaseUnavailable
from agent_stream.keys import STORE
from agent_stream.simulator import SimulatedCall, tone_ulaw
from agent_stream.store import Store, open_store
from agent_stream.workflow import starter_definition
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import (
    ENDED,
    Dial,
    MakeTenant,
    ServeApp,
    Tenant,
    answered,
    create_tenant,
    finished_run,
    handshake_done,
    latest_run_id,
    open_call,
    short_call,
    until,
    wait_for_state,
)

# -- a database that another process holds locked ----------------------------------------------


@contextlib.asynccontextmanager
async def database_locked(settings: Settings) -> AsyncIterator[None]:
    """Another process's write transaction on our SQLite file, for as long as the block runs."""
    other = await asyncio.to_thread(sqlite3.connect, settings.db_path, isolation_level=None)
    try:
        await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")
        yield
        await asyncio.to_thread(other.execute, "ROLLBACK")
    finally:
        await asyncio.to_thread(other.close)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The database gives up on a lock after 0.2 s; a new call waits 2 s for its run."""
    return replace(settings, db_busy_timeout=0.2, run_write_retry_seconds=2.0)


@pytest.mark.sqlite_only
async def test_a_caller_who_hangs_up_while_the_database_is_locked_ends_its_run_and_frees_the_slot(
    dial: Dial, make_tenant: MakeTenant, store: Store, settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant = await make_tenant(max_concurrent_calls=1)
    call = await answered(dial, tenant.workflow.uuid)
    run = await handshake_done(store, tenant)
    assert run.state == "running"
    run_id = run.id

    async with database_locked(settings):
        await call.hang_up()
        assert await call.wait_closed() == (1000, "call ended")  # the call does not wait
        await until(lambda: any("the end of the run not written yet" in r.getMessage()
                                for r in caplog.records))
        assert (await store.get_run_by_id(run_id)).state == "running"  # the end is queued
        # the owner's next call arrives while the end of the last one is still queued
        second = await answered(dial, tenant.workflow.uuid)
    # once the database takes writes, the queued end goes first: the slot is free for it
    await second.send_audio(tone_ulaw(0.2), realtime=False)
    await second.hang_up()
    assert await second.wait_closed() == (1000, "call ended")
    run = await wait_for_state(store, run_id, *ENDED)
    assert (run.state, run.end_reason, run.close_code) == ("completed", "caller_hangup", 1000)
    assert run.ended_at is not None and run.ended_at < (await finished_run(store, tenant)).created_at


@pytest.mark.sqlite_only
async def test_a_call_arriving_while_the_database_is_locked_is_refused_with_1011_and_a_reason(
    dial: Dial, tenant: Tenant, store: Store, settings: Settings
) -> None:
    async with database_locked(settings):
        call = await answered(dial, tenant.workflow.uuid)
        code, reason = await call.wait_closed()
    assert code == 1011
    assert reason.startswith("database unavailable")
    assert await latest_run_id(store, tenant.org_id) is None
    # once the lock is gone, calls go through again
    assert await short_call(dial, tenant) == (1000, "call ended")
    run = await finished_run(store, tenant)
    assert run.state == "completed"


@pytest.mark.sqlite_only
async def test_the_api_answers_503_not_500_while_the_database_is_locked(
    client: TestClient, tenant: Tenant, settings: Settings
) -> None:
    async with database_locked(settings):
        response = await client.post(
            "/api/v1/workflows", json={"name": "during the lock"}, headers=tenant.headers
        )
        assert response.status == 503
        assert (await response.json())["error"].startswith("database unavailable")
        assert response.headers["Retry-After"]
        # reading still works: SQLite lets readers in while another process writes
        listed = await client.get("/api/v1/workflows", headers=tenant.headers)
        assert listed.status == 200
    response = await client.post("/api/v1/workflows", json={"name": "after"}, headers=tenant.headers)
    assert response.status == 201


# -- a full disk under the database ----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB file system of its own (tmpfs; CI runs as root) for the database."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def full_disk_settings(settings: Settings, small_disk: Path) -> Settings:
    return replace(settings, db_path=small_disk / "agent_stream.db")


def fill(disk: Path) -> Path:
    """Write a file until the disk refuses more; delete it to make room again."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:  # unbuffered: nothing left to write at close
        for block in (65536, 1):  # then the last few bytes too
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * block)
    return filler


@pytest.mark.sqlite_only
async def test_a_full_disk_refuses_new_calls_with_1011_and_ends_live_runs_once_there_is_room(
    serve_app: ServeApp, full_disk_settings: Settings, small_disk: Path,
    emulator: CloudonixEmulator, caplog: pytest.LogCaptureFixture,
) -> None:
    client = await serve_app(full_disk_settings)
    store: Store = client.app[STORE]
    tenant = await create_tenant(store, emulator)
    base = str(client.make_url("/"))

    async def dial() -> SimulatedCall:
        call = await open_call(client.session, base, emulator, tenant.workflow.uuid)
        call.start_reading()
        await call.handshake()
        return call

    live = await dial()
    run_id = (await handshake_done(store, tenant)).id
    assert (await store.get_run_by_id(run_id)).state == "running"

    filler = await asyncio.to_thread(fill, small_disk)
    refused = await dial()
    code, reason = await refused.wait_closed()
    assert (code, reason) == (1011, "database unavailable: database or disk is full")
    response = await client.post(
        "/api/v1/workflows", json={"name": "x"}, headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    assert response.status == 503
    assert await response.json() == {"error": "database unavailable: database or disk is full"}

    await live.hang_up()
    assert await live.wait_closed() == (1000, "call ended")
    await until(lambda: any("the end of the run not written yet" in r.getMessage()
                            for r in caplog.records))
    assert (await store.get_run_by_id(run_id)).state == "running"  # its end waits for room
    await asyncio.to_thread(filler.unlink)
    run = await wait_for_state(store, run_id, *ENDED, timeout=10)
    assert (run.state, run.end_reason, run.close_code) == ("completed", "caller_hangup", 1000)
    runs, total = await store.list_runs(tenant.org_id)
    assert total == 1  # the refused call made no run


# -- what counts as the database being unavailable --------------------------------------------------


@pytest.mark.sqlite_only
async def test_only_a_database_that_cannot_take_a_statement_counts_as_unavailable(
    store: Store, tenant: Tenant, settings: Settings
) -> None:
    with pytest.raises(sqlite3.OperationalError, match="no such column"):  # our mistake
        await store._all("SELECT no_such_column FROM users")
    async with database_locked(settings):
        with pytest.raises(DatabaseUnavailable, match="database is locked"):
            await store.create_workflow(organization_id=tenant.org_id, owner_user_id=tenant.user_id,
                                        name="during the lock", definition=starter_definition())


@pytest.mark.sqlite_only
async def test_a_write_cancelled_while_waiting_for_the_lock_leaves_no_transaction_open(
    store: Store, tenant: Tenant, settings: Settings
) -> None:
    # a store that waits long enough in BEGIN for the cancel to find it there
    patient = await open_store(replace(settings, db_busy_timeout=10.0))
    try:
        async with database_locked(settings):
            write = asyncio.create_task(patient.create_workflow(
                organization_id=tenant.org_id, owner_user_id=tenant.user_id, name="cancelled",
                definition=starter_definition()))
            # the write now waits in BEGIN for the lock
            await until(patient._db._write_lock.locked)  # type: ignore[attr-defined]
            assert not write.done()
            write.cancel()
        # the lock is gone: the BEGIN that was waiting opens a transaction, which is rolled back
        with pytest.raises(asyncio.CancelledError):
            await write
        created = await patient.create_workflow(
            organization_id=tenant.org_id, owner_user_id=tenant.user_id, name="after",
            definition=starter_definition())
    finally:
        await patient.close()
    assert created.name == "after"
    assert [w.name for w in await store.list_workflows(tenant.org_id)] == ["after", tenant.workflow.name]


async def test_json_the_database_could_never_store_is_refused_where_it_arrives(
    client: TestClient, tenant: Tenant, dial: Dial, store: Store
) -> None:
    response = await client.post(
        "/api/v1/workflows", data='{"name": "x", "definition": {"version": NaN}}',
        headers=tenant.headers,
    )
    assert response.status == 400
    call = await dial(tenant.workflow.uuid)
    await call.send_connected()
    await call.ws.send_str('{"event": "start", "start": {"callSid": "CA1", "streamSid": "MZ1", "x": NaN}}')
    assert await call.wait_closed() == (4400, "malformed 'start' event: not JSON")
    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason) == ("failed", "handshake_failed")


@pytest.mark.sqlite_only
async def test_ready_is_503_while_the_database_is_locked_and_200_once_it_answers_again(
    client: TestClient, settings: Settings
) -> None:
    """A load balancer asks /api/v1/ready: no new calls while the database cannot take the
    run a call needs, and back in rotation without a restart; /health stays up meanwhile."""
    response = await client.get("/api/v1/ready")
    assert (response.status, await response.json()) == (200, {"status": "ready"})
    async with database_locked(settings):
        response = await client.get("/api/v1/ready")
        assert response.status == 503 and response.headers["Retry-After"]
        body = await response.json()
        assert body["status"] == "unavailable" and body["error"].startswith("database unavailable")
        assert (await client.get("/api/v1/health")).status == 200
    response = await client.get("/api/v1/ready")
    assert (response.status, await response.json()) == (200, {"status": "ready"})
