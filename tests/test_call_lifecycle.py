"""One call lifecycle that always ends its run: load, a busy or failing database, bad luck.

Each test here reproduces something operators saw while testing the running server from
outside (issue 8): calls that broke off with garbage after their `101`, runs left
`pending` or `running` after the call was over, quota slots that never came back.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agent_stream.store import Store
from tests.admin_fixtures import Operator, operator
from tests.conftest import ENDED, Dial, Tenant, short_call, wait_for_state

__all__ = ["operator"]  # fixtures



@contextlib.asynccontextmanager
async def polling(request: Callable[[], Awaitable[Any]], workers: int = 3) -> AsyncIterator[list[int]]:
    """Keep `workers` loops re-reading something (the runs list, as an operator's open Runs
    tab does) for as long as the block runs; yields the count of reads made."""
    reads = [0]
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            await request()
            reads[0] += 1
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(loop()) for _ in range(workers)]
    try:
        yield reads
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def reading_runs(client: TestClient, tenant: Tenant, query: str = "") -> Callable[[], Awaitable[None]]:
    """An API client reading the runs list (filtered by `query`), as a dashboard does."""

    async def read() -> None:
        response = await client.get(f"/api/v1/workflow-runs{query}", headers=tenant.headers)
        assert response.status == 200, await response.text()

    return read


async def test_forty_calls_at_once_while_the_runs_list_is_polled_all_complete(
    client: TestClient, dial: Dial, tenant: Tenant, store: Store, operator: Operator
) -> None:
    async def runs_tab() -> None:  # an operator with the agent's Runs tab open
        page = await operator.get(f"/agents/{tenant.workflow.uuid}/runs")
        assert page.status == 200

    list_runs = reading_runs(client, tenant, f"?workflow_uuid={tenant.workflow.uuid}")
    async with polling(list_runs) as reads, polling(runs_tab, workers=2) as page_reads:
        closes = await asyncio.gather(*(short_call(dial, tenant) for _ in range(40)))
    assert reads[0] > 0 and page_reads[0] > 0
    assert closes == [(1000, "call ended")] * 40

    runs, total = await store.list_runs(tenant.org_id, limit=100)
    assert total == 40
    for run in runs:
        run = await wait_for_state(store, run.id, *ENDED)
        assert (run.state, run.end_reason, run.close_code) == ("completed", "caller_hangup", 1000)


async def test_objects_created_through_the_api_are_answered_while_others_read(
    client: TestClient, tenant: Tenant
) -> None:
    async def create(n: int) -> tuple[int, int]:
        workflow = await client.post(
            "/api/v1/workflows", json={"name": f"Agent {n}"}, headers=tenant.headers
        )
        config = await client.post(
            "/api/v1/telephony-configurations",
            json={"provider": "cloudonix", "domain_id": f"tenant{n}", "bearer_token": f"token-{n}-abcdef"},
            headers=tenant.headers,
        )
        return workflow.status, config.status

    async with polling(reading_runs(client, tenant), workers=4):
        answers = await asyncio.gather(*(create(n) for n in range(30)))
    assert answers == [(201, 201)] * 30


async def test_a_flood_of_junk_connections_leaves_no_run_open_and_no_garbage_after_the_101(
    client: TestClient, dial: Dial, tenant: Tenant, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent_stream")
    async def junk(kind: int) -> tuple[int | None, str]:
        call = await dial(tenant.workflow.uuid)
        call.start_reading()
        if kind == 0:
            await call.ws.close()  # gone before a word
        elif kind == 1:
            await call.ws.send_bytes(b"\x00\xff" * 100)
        elif kind == 2:
            await call.ws.send_str("{not json")
        elif kind == 3:
            await call.send_connected()
            await call.send_json({"event": "start", "start": "nonsense"})
        else:
            await call.ws.send_str("x" * (70 * 1024))  # over the 64 KiB message limit
        return await call.wait_closed(timeout=30)

    async with polling(reading_runs(client, tenant)):
        closes = await asyncio.gather(*(junk(n % 5) for n in range(60)))
    # every connection got a close frame from the server (never 1002: no HTTP after the 101)
    assert {code for code, _ in closes} <= {1000, 1009, 4400}, closes
    assert all(code == 4400 for code, _ in closes[1::5] + closes[2::5] + closes[3::5])
    assert all(code == 1009 for code, _ in closes[4::5])

    runs, total = await store.list_runs(tenant.org_id, limit=100)
    assert total == 60
    # the last runs end just after their sockets closed
    runs = [await wait_for_state(store, r.id, *ENDED) for r in runs]
    assert all(r.state == "failed" and r.end_reason and r.close_code for r in runs)
    assert await short_call(dial, tenant) == (1000, "call ended")
    # the callers' mistakes are theirs: no traceback, and never the agent's full uuid
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert tenant.workflow.uuid not in caplog.text
