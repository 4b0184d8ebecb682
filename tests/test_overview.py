"""The Overview: an organization's last 30 days of calls, summed up by the store on both
databases, and the page that shows them (top navigation, figures in tables and as JSON)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html import unescape

from aiohttp.test_utils import TestClient

from agent_stream.store import Store
from agent_stream.store.overview import OUTCOMES, overview_days, summarize
from tests.admin_fixtures import Operator, operator, other_tenant
from tests.conftest import Dial, Tenant, finished_run, short_call
from tests.overview_fixtures import EXPECTED, lines, seed_calls, stored_call

__all__ = ["operator", "other_tenant"]  # fixtures


def _counts(buckets: list[object]) -> dict[str, int]:
    return {b.label: b.count for b in buckets if b.count}  # type: ignore[attr-defined]


async def test_the_overview_sums_up_the_organizations_calls_of_today(
    store: Store, tenant: Tenant, other_tenant: Tenant
) -> None:
    seeded = await seed_calls(store, tenant)
    await stored_call(store, other_tenant, state="failed", end_reason="agent_error")

    overview = await store.organization_overview(tenant.org_id)

    today = datetime.now(UTC).date().isoformat()
    assert len(overview.days) == 30 and overview.days[-1] == today
    assert overview.totals == EXPECTED["totals"]
    assert {o: counts[-1] for o, counts in overview.calls_per_day.items()} == {
        "completed": 3, "transferred": 1, "failed": 2, "live": 1}
    assert all(sum(counts[:-1]) == 0 for counts in overview.calls_per_day.values())
    assert _counts(overview.durations) == EXPECTED["durations"]
    assert (overview.duration_median, overview.duration_p90) == (45.0, 200.0)
    assert _counts(overview.latencies) == {k: v for k, v in EXPECTED["latencies"].items() if v}
    assert (overview.latency_median, overview.latency_p90) == (400.0, 1500.0)
    assert overview.failures == EXPECTED["failures"]
    assert [(c.run_id, c.run_name, c.state, c.provider, c.agent_uuid) for c in overview.live] == [
        (seeded.live.id, seeded.live.name, "running", "cloudonix", tenant.workflow.uuid)]


async def test_the_overview_counts_days_in_utc_and_only_the_last_thirty(
    store: Store, tenant: Tenant
) -> None:
    await stored_call(store, tenant, seconds=20,
                      transcript=lines(("caller", 0, 1000), ("agent", 1400, 2000)))
    now = datetime.now(UTC)

    # seen from three days before, today's call is after the days shown: in no figure
    days_before = await store.organization_overview(tenant.org_id, now=now - timedelta(days=3))
    assert days_before.totals["calls"] == 0
    assert sum(b.count for b in days_before.durations) == 0 and days_before.duration_median is None
    assert sum(b.count for b in days_before.latencies) == 0 and days_before.latency_median is None

    three_days_on = await store.organization_overview(tenant.org_id, now=now + timedelta(days=3))
    assert three_days_on.calls_per_day["completed"][-4:] == [1, 0, 0, 0]
    assert three_days_on.days[-4] == now.date().isoformat()

    month_on = await store.organization_overview(tenant.org_id, now=now + timedelta(days=30))
    assert month_on.totals["calls"] == 0
    assert month_on.duration_median is None and month_on.latency_median is None
    assert month_on.failures == []


async def test_a_real_call_shows_on_the_overview(
    dial: Dial, store: Store, tenant: Tenant
) -> None:
    await short_call(dial, tenant)
    run = await finished_run(store, tenant)
    overview = await store.organization_overview(tenant.org_id)
    assert overview.totals["calls"] == 1
    outcome = "completed" if run.state == "completed" else "failed"
    assert overview.calls_per_day[outcome][-1] == 1
    assert sum(b.count for b in overview.durations) == 1
    assert overview.live == []


def test_summarize_buckets_calls_by_their_utc_day_and_outcome() -> None:
    days = overview_days(datetime(2026, 3, 3, 23, 59, tzinfo=UTC), 3)
    assert days == ["2026-03-01", "2026-03-02", "2026-03-03"]
    calls = [
        {"day": "2026-02-28", "state": "completed", "end_reason": "caller_hangup",
         "mode": "twilio", "calls": 4},  # before the period
        {"day": "2026-03-01", "state": "completed", "end_reason": "transfer", "mode": "twilio",
         "calls": 1},
        {"day": "2026-03-03", "state": "failed", "end_reason": None, "mode": "plivo", "calls": 2},
        {"day": "2026-03-03", "state": "pending", "end_reason": None, "mode": "plivo", "calls": 1},
    ]
    overview = summarize(calls, [(61.0, 1)], [(290.0, 1), (300.0, 2), (3000.0, 1)], [], days)
    assert overview.calls_per_day == {
        "completed": [0, 0, 0], "transferred": [1, 0, 0], "failed": [0, 0, 2], "live": [0, 0, 1]}
    assert list(overview.calls_per_day) == list(OUTCOMES)
    assert overview.totals["calls"] == 4
    assert _counts(overview.durations) == {"1–2 min": 1}
    assert _counts(overview.latencies) == {"< 0.3 s": 1, "0.3–0.6 s": 2, "≥ 3 s": 1}
    # nearest rank over the groups: the 2nd and the 4th of 4 replies
    assert (overview.latency_median, overview.latency_p90) == (300.0, 3000.0)
    assert overview.failures == [("unknown", "plivo", 2)]


async def test_durations_and_latencies_are_floored_so_a_bucket_s_edge_stays_exact(
    store: Store, tenant: Tenant
) -> None:
    """The database groups durations by tenths of a second and latencies by 10 ms,
    rounding down: 14.99 s is under 15 s, 299 ms under 300 ms, on both databases."""
    await stored_call(store, tenant, seconds=14.99, transcript=lines(
        ("caller", 0, 1000), ("agent", 1299, 2000), ("caller", 3000, 3500), ("agent", 3800, 4000)))
    await stored_call(store, tenant, seconds=15.0)
    overview = await store.organization_overview(tenant.org_id)
    assert _counts(overview.durations) == {"< 15 s": 1, "15–30 s": 1}
    assert overview.duration_median == 14.9
    assert _counts(overview.latencies) == {"< 0.3 s": 1, "0.3–0.6 s": 1}
    assert overview.latency_median == 290.0


# -- the page --------------------------------------------------------------------------------


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


async def test_the_overview_page_shows_the_figures_and_carries_them_for_the_charts(
    operator: Operator, store: Store, other_tenant: Tenant, client: TestClient
) -> None:
    tenant = operator.tenant
    seeded = await seed_calls(store, tenant)
    await stored_call(store, other_tenant, state="failed", end_reason="secret_reason_of_other")

    agents = await operator.get("/agents")
    assert re.search(r'<a href="/overview"[^>]*>Overview</a>', agents.html)
    page = await operator.get("/overview")
    assert page.status == 200
    assert re.search(r'<a href="/overview" aria-current="page">Overview</a>', page.html)
    text = _text(page.html)
    for stat, value in (("calls", 7), ("completed", 3), ("transferred", 1), ("failed", 2),
                        ("live", 1)):
        assert re.search(rf'id="stat-{stat}"><span class="stat-value">{value}</span>', page.html)
    assert "median 45.0 s · 90th percentile 3m 20s" in text
    assert "median 400 ms · 90th percentile 1.50 s" in text
    today = datetime.now(UTC).date().isoformat()
    assert f"{today} 3 1 2 1" in text  # the day's row: completed, transferred, failed, live
    assert "agent_error twilio 1" in text and "provider_timeout cloudonix 1" in text
    assert "secret_reason_of_other" not in page.html
    assert seeded.live.name in text
    assert f'href="/agents/{tenant.workflow.uuid}/runs/{seeded.live.id}"' in page.html

    raw = re.search(
        r'<script type="application/json" id="overview-data">(.*?)</script>', page.html, re.S)
    assert raw
    data = json.loads(raw.group(1))
    assert data["days"][-1] == today and len(data["days"]) == 30
    assert {o: data["calls_per_day"][o][-1] for o in OUTCOMES} == {
        "completed": 3, "transferred": 1, "failed": 2, "live": 1}
    assert {label: n for label, n in data["durations"] if n} == EXPECTED["durations"]
    assert {label: n for label, n in data["latencies"] if n} == {
        k: v for k, v in EXPECTED["latencies"].items() if v}
    assert [tuple(row) for row in data["failures"]] == EXPECTED["failures"]
    assert '/static/vendor/chart-4.6.1.umd.min.js' in page.html

    chart_lib = await client.get("/static/vendor/chart-4.6.1.umd.min.js")
    assert chart_lib.status == 200 and "Chart.js v4.6.1" in await chart_lib.text()


async def test_an_empty_overview_says_so(operator: Operator) -> None:
    page = await operator.get("/overview")
    assert page.status == 200
    text = _text(page.html)
    assert "No calls in these 30 days." in text
    assert "No failed calls in these 30 days." in text
    assert "No calls right now." in text


async def test_the_overview_wants_a_sign_in(client: TestClient) -> None:
    response = await client.get("/overview", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"].startswith("/login?next=")
