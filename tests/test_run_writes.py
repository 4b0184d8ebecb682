"""The run writes of live calls (agent_stream/run_writes.py) on a real database: a run whose
call is over always ends, and holds no quota slot while its end waits."""
from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from agent_stream.calls.run_writes import RunRecord, RunWriteQueue
from agent_stream.errors import QuotaExceeded
from agent_stream.keys import RUN_WRITES
from agent_stream.models import User, Workflow
from agent_stream.store import Store
from tests.conftest import MakeTenant


async def open_record(store: Store, queue: RunWriteQueue, workflow: Workflow, owner: User) -> RunRecord:
    """A new run of `workflow`, created as a call creates it (quota checked)."""
    return await RunRecord.create(
        store, queue, workflow, owner, retry_seconds=1, mode="cloudonix",
        initial_context={}, gathered_context={}, logs={},
    )


async def test_an_end_that_cannot_be_stored_in_full_still_ends_the_run(
    client: TestClient, make_tenant: MakeTenant, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await make_tenant()
    owner = await store.get_user(tenant.user_id)
    record = await open_record(store, client.app[RUN_WRITES], tenant.workflow, owner)
    assert await record.running({})
    written = await record.finish(
        state="completed", end_reason="caller_hangup", close_code=1000, error=None,
        recording_path=None, gathered_context={"oops": object()},  # a bug: not JSON
        logs={}, transcript=None,
    )
    assert written
    run = await store.get_run_by_id(record.run.id)
    assert (run.state, run.end_reason, run.close_code) == ("failed", "caller_hangup", 1000)
    assert run.error == "the run's record could not be written in full (see the server log)"
    assert "writing it without what the call gathered" in caplog.text
    assert not client.app[RUN_WRITES].over


async def test_a_run_whose_call_is_over_holds_no_quota_slot_while_its_end_waits(
    client: TestClient, make_tenant: MakeTenant, store: Store
) -> None:
    tenant = await make_tenant(max_concurrent_calls=1)
    owner = await store.get_user(tenant.user_id)
    queue = RunWriteQueue(store)  # this process's knowledge of which calls are over
    first = await open_record(store, queue, tenant.workflow, owner)
    with pytest.raises(QuotaExceeded):  # one call at a time
        await open_record(store, queue, tenant.workflow, owner)
    queue.over.add(first.run.id)  # its call is over; the end is on its way to the database
    second = await open_record(store, queue, tenant.workflow, owner)
    assert second.run.id != first.run.id
    # the slot came from the queue's knowledge, not from the database: the first run is open there
    assert (await store.get_run_by_id(first.run.id)).state in ("pending", "running")
