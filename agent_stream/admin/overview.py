"""The organization's Overview: its last 30 days of calls charted (by day and outcome,
durations, reply latencies, failures by reason and provider) and its calls live now. The
figures are in the page as tables, and as JSON for `static/overview.js` to chart."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..models import Overview
from ..store.overview import OUTCOMES, OVERVIEW_DAYS
from .common import page, render, store_of, user_of


def chart_data(overview: Overview) -> dict[str, Any]:
    """What the charts draw: the same numbers as the page's tables."""
    return {
        "days": overview.days,
        "outcomes": list(OUTCOMES),
        "calls_per_day": overview.calls_per_day,
        "durations": [[b.label, b.count] for b in overview.durations],
        "latencies": [[b.label, b.count] for b in overview.latencies],
        "failures": [list(row) for row in overview.failures],
    }


@page()
async def overview(request: web.Request) -> web.StreamResponse:
    """How the organization's calls went lately, for anyone signed in to it."""
    data = await store_of(request).organization_overview(user_of(request).organization_id)
    return render(
        request,
        "overview.html",
        {
            "overview": data,
            "chart_data": chart_data(data),
            "busy_days": [  # the days with calls, for the table beside the chart
                i for i in range(len(data.days)) if any(c[i] for c in data.calls_per_day.values())
            ],
            "outcomes": OUTCOMES,
            "period_days": OVERVIEW_DAYS,
            "nav": "overview",
        },
    )
