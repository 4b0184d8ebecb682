"""The Runs tab and run detail through the real app, after real simulated Cloudonix calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp.test_utils import TestClient

from agent_stream.models import Run, TranscriptLine
from agent_stream.simulator import tone_ulaw
from agent_stream.store import Store
from tests.admin_fixtures import Operator, make_operator, operator
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import Dial, MakeTenant, Tenant, latest_run_id, wait_for_state

__all__ = ["operator"]  # fixtures


async def finished_call(dial: Dial, store: Store, tenant: Tenant) -> Run:
    """One real simulated call: handshake, half a second of audio, hang up."""
    call = await dial(tenant.workflow.uuid)
    await call.handshake()
    await call.send_audio(tone_ulaw(0.5), realtime=False)
    await call.hang_up()
    await call.wait_closed()
    run_id = await latest_run_id(store, tenant.org_id, wait=5)
    assert run_id is not None
    return await wait_for_state(store, run_id, "completed", "failed")


async def stored_run(store: Store, tenant: Tenant, **finish: object) -> Run:
    """A run made through the Store as the stream endpoint makes it (no socket needed)."""
    owner = await store.get_user(tenant.user_id)
    run = await store.start_run(
        tenant.workflow,
        owner,
        mode="cloudonix",
        initial_context={
            "caller_number": "+15555550111",
            "called_number": "+15555550122",
            "provider": "cloudonix",
            "direction": "inbound",
        },
        gathered_context={},
        logs={"inbound_webhook": {"domain": "acme"}},
    )
    await store.mark_run_running(run.id)
    if finish:
        await store.finish_run(run.id, **finish)  # type: ignore[arg-type]
    return await store.get_run_by_id(run.id)


async def test_a_real_call_in_the_runs_tab_and_its_detail(
    dial: Dial, store: Store, operator: Operator, client: TestClient
) -> None:
    tenant = operator.tenant
    run = await finished_call(dial, store, tenant)
    assert run.state == "completed"
    uuid = tenant.workflow.uuid

    page = await operator.get(f"/agents/{uuid}/runs")
    assert page.status == 200
    for text in (
        run.name,
        "Completed",
        "+15555550100",
        "+15555550199",
        "caller_hangup",
        "Name",
        "State",
        "Caller",
        "Called",
        "Started",
        "Duration",
        "End reason",
    ):
        assert text in page.html, text
    assert f'href="/agents/{uuid}/runs/{run.id}"' in page.html
    agents = await operator.get("/agents")
    row = agents.html.split(tenant.workflow.name)[1].split("</tr>")[0]
    assert '<td class="num">1</td>' in row  # runs today
    assert datetime.now(UTC).strftime("%Y-%m-%d") in row  # last run

    page = await operator.get(f"/agents/{uuid}/runs/{run.id}")
    assert page.status == 200
    for text in (
        "Summary",
        "Initial context",
        "Gathered context",
        "Logs",
        "Transcript",
        "<dt>Caller number</dt>",
        "<dt>Call id</dt>",
        "C-1",
        "<dt>Inbound webhook</dt>",
        "<dt>Close code</dt><dd>1000</dd>",
        "caller_hangup",
    ):
        assert text in page.html, text
    src = f"/agents/{uuid}/runs/{run.id}/recording"
    assert f'<audio controls preload="metadata" src="{src}"' in page.html
    assert "This call is live" not in page.html

    # the recording answers range requests, only with a session of that organization
    response = await client.get(src, headers={"Range": "bytes=0-99"})
    assert response.status == 206
    assert response.headers["Content-Type"] == "audio/wav"
    assert response.headers["Content-Range"].startswith("bytes 0-99/")
    assert (await response.read())[:4] == b"RIFF"
    status = await client.get(f"/agents/{uuid}/runs/{run.id}/status")
    assert (await status.json())["state"] == "completed"
    client.session.cookie_jar.clear()
    response = await client.get(src, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/login")


async def test_a_run_from_another_organization_is_not_served(
    dial: Dial,
    store: Store,
    client: TestClient,
    make_tenant: MakeTenant,
    emulator: CloudonixEmulator,
) -> None:
    victim = await make_tenant(name="Victim")
    run = await finished_call(dial, store, victim)
    intruder_org = await make_tenant(name="Intruder", domain="intruder.cloudonix.net")
    intruder = await make_operator(client, store, intruder_org)
    mine = intruder_org.workflow.uuid
    for path in (
        f"/agents/{victim.workflow.uuid}/runs/{run.id}",
        f"/agents/{victim.workflow.uuid}/runs/{run.id}/recording",
        f"/agents/{mine}/runs/{run.id}/recording",
    ):
        page = await intruder.get(path, headers={"Range": "bytes=0-99"})
        assert page.status == 404, path


async def test_a_running_run_says_so_and_can_be_polled_until_it_ends(
    operator: Operator, store: Store
) -> None:
    tenant = operator.tenant
    run = await stored_run(store, tenant)
    uuid = tenant.workflow.uuid
    page = await operator.get(f"/agents/{uuid}/runs/{run.id}")
    assert "This call is live" in page.html
    assert (
        f'data-live-status="/agents/{uuid}/runs/{run.id}/status" data-state="running"' in page.html
    )
    assert '<noscript><meta http-equiv="refresh" content="5"></noscript>' in page.html
    runs = await operator.get(f"/agents/{uuid}/runs")
    assert 'data-state="running"' in runs.html and "Running" in runs.html
    status = await operator.client.get(f"/agents/{uuid}/runs/{run.id}/status")
    assert (await status.json())["state"] == "running"

    await store.finish_run(run.id, state="completed", end_reason="caller_hangup", close_code=1000)
    status = await operator.client.get(f"/agents/{uuid}/runs/{run.id}/status")
    body = await status.json()
    assert body["state"] == "completed" and body["end_reason"] == "caller_hangup"
    page = await operator.get(f"/agents/{uuid}/runs/{run.id}")
    assert "This call is live" not in page.html


async def test_a_failed_run_shows_its_close_code_and_error(
    dial: Dial, store: Store, operator: Operator, emulator: CloudonixEmulator
) -> None:
    emulator.status_override = 401
    tenant = operator.tenant
    call = await dial(tenant.workflow.uuid)
    await call.handshake()
    assert (await call.wait_closed())[0] == 4400
    run_id = await latest_run_id(store, tenant.org_id, wait=5)
    assert run_id is not None
    run = await wait_for_state(store, run_id, "failed")
    page = await operator.get(f"/agents/{tenant.workflow.uuid}/runs/{run.id}")
    assert "Failed with close code 4400" in page.html
    assert run.error and run.error in page.html.replace("&#39;", "'")
    assert "<dt>Error</dt>" in page.html


async def test_transcript_is_a_conversation_with_interruptions_marked(
    operator: Operator, store: Store
) -> None:
    run = await stored_run(
        store,
        operator.tenant,
        state="completed",
        end_reason="agent_hangup",
        close_code=1000,
        transcript=[
            TranscriptLine("agent", "Hello, thanks for calling Acme. Would you", 0, 1800, True),
            TranscriptLine("caller", "book an appointment", 1700, 2900),
            TranscriptLine("agent", "Great. Which day suits you?", 3000, 4500),
        ],
        logs={
            "events": [{"at_ms": 0, "what": "greeting"}, {"at_ms": 1700, "what": "barge-in"}],
            "protocol_errors": {},
        },
    )
    page = await operator.get(f"/agents/{operator.tenant.workflow.uuid}/runs/{run.id}")
    html = page.html
    assert '<li class="turn agent interrupted">' in html
    assert '<span class="badge state-interrupted">interrupted</span>' in html
    assert '<li class="turn caller">' in html and "book an appointment" in html
    assert html.index("Hello, thanks") < html.index("book an appointment") < html.index("Which day")
    # logs: a list of records is a table, an empty object says so
    assert '<th scope="col">At ms</th><th scope="col">What</th>' in html
    assert "<td>barge-in</td>" in html
    assert "<dt>Protocol errors</dt>" in html and "empty" in html


async def test_runs_are_newest_first_paginated_and_filtered_by_state_and_day(
    operator: Operator, store: Store
) -> None:
    tenant = operator.tenant
    runs = []
    for n in range(27):
        state = "failed" if n % 9 == 0 else "completed"
        runs.append(
            await stored_run(store, tenant, state=state, end_reason=f"reason-{n}", close_code=1000)
        )
    uuid = tenant.workflow.uuid
    page = await operator.get(f"/agents/{uuid}/runs")
    assert page.html.count('<a href="/agents/') >= 25
    assert "27 runs, newest first." in page.html and "Page 1 of 2" in page.html
    assert page.html.index(runs[-1].name) < page.html.index(runs[-2].name)
    assert runs[0].name not in page.html and "Older →" in page.html
    page = await operator.get(f"/agents/{uuid}/runs?page=2")
    assert runs[0].name in page.html and runs[1].name in page.html and "← Newer" in page.html

    page = await operator.get(f"/agents/{uuid}/runs?state=failed")
    assert "3 runs match these filters" in page.html
    assert runs[9].name in page.html and runs[1].name not in page.html
    today = datetime.now(UTC).date()
    page = await operator.get(f"/agents/{uuid}/runs?from={today}&to={today}")
    assert "27 runs match these filters" in page.html
    page = await operator.get(f"/agents/{uuid}/runs?from={today + timedelta(days=1)}")
    assert "No runs match these filters." in page.html
    page = await operator.get(f"/agents/{uuid}/runs?to={today - timedelta(days=1)}")
    assert "No runs match these filters." in page.html
    page = await operator.get(f"/agents/{uuid}/runs?from=yesterday&state=bogus")
    assert page.status == 200
    assert "is not a date" in page.html and "Unknown state" in page.html


async def test_rejected_connections_are_listed_with_time_code_and_reason(
    dial: Dial, store: Store, client: TestClient, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant(monthly_minutes_limit=0)
    op = await make_operator(client, store, tenant)
    call = await dial(tenant.workflow.uuid)
    code, reason = await call.wait_closed()
    assert code == 1008
    page = await op.get(f"/agents/{tenant.workflow.uuid}/runs")
    section = page.html.split("Rejected connections")[1]
    assert '<td class="num">1008</td>' in section and reason in section
    assert datetime.now(UTC).strftime("%Y-%m-%d") in section
    assert "No runs yet" in page.html
