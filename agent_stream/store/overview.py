"""The Overview page's figures: an organization's calls of the last 30 days by day and
outcome, their durations and reply latencies, failures by reason and provider, and the
calls live now. The database groups them (a busy organization's month is tens of
thousands of runs and hundreds of thousands of transcript lines, never read row by row);
Python turns the groups into the page's buckets and percentiles. Days are the first ten
characters of the ISO 8601 UTC text times are stored as, the same on both databases."""
from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from ..models import Bucket, LiveCall, Overview
from .base import StoreBase, iso
from .runs import OPEN_RUN_SQL

OVERVIEW_DAYS: Final = 30
# The outcomes a day's calls are counted by, in the order the chart stacks them.
OUTCOMES: Final = ("completed", "transferred", "failed", "live")
# Answered calls' durations (seconds) and reply latencies (milliseconds): bucket edges.
DURATION_EDGES: Final = (0, 15, 30, 60, 120, 300, 600)
LATENCY_EDGES: Final = (0, 300, 600, 900, 1200, 1600, 2000, 3000)
LIVE_LIMIT: Final = 100

# An organization's runs created in [since, until): the days shown, no later (a skewed
# clock's future run, a `now` in the past).
_ORG_RUNS: Final = """FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id
                      WHERE w.organization_id = ? AND r.created_at >= ? AND r.created_at < ?"""

# A reply: an agent line right after a caller line of the same run's transcript; its
# latency is the silence between them (an agent line that overlaps the caller's is none).
# Grouped by LATENCY_STEP_MS (floored: the buckets' edges stay exact).
LATENCY_STEP_MS: Final = 10
_REPLY_LATENCIES: Final = f"""
    SELECT (t.start_ms - t.previous_end) / {LATENCY_STEP_MS} AS step, COUNT(*) AS replies FROM (
        SELECT l.role, l.start_ms,
               LAG(l.role) OVER (PARTITION BY l.run_id ORDER BY l.seq) AS previous_role,
               LAG(l.end_ms) OVER (PARTITION BY l.run_id ORDER BY l.seq) AS previous_end
        FROM run_transcript_lines l JOIN workflow_runs r ON r.id = l.run_id
        JOIN workflows w ON w.id = r.workflow_id
        WHERE w.organization_id = ? AND r.created_at >= ? AND r.created_at < ?
    ) t
    WHERE t.role = 'agent' AND t.previous_role = 'caller' AND t.start_ms >= t.previous_end
    GROUP BY (t.start_ms - t.previous_end) / {LATENCY_STEP_MS}
"""
# Calls by day, state, end reason and provider.
_CALLS: Final = f"""
    SELECT substr(r.created_at, 1, 10) AS day, r.state, r.end_reason, r.mode, COUNT(*) AS calls
    {_ORG_RUNS}
    GROUP BY substr(r.created_at, 1, 10), r.state, r.end_reason, r.mode
"""


def outcome_of(state: str, end_reason: str | None) -> str:
    """How a run counts on the calls-per-day chart."""
    if state in ("pending", "running"):
        return "live"
    if state == "failed":
        return "failed"
    return "transferred" if end_reason == "transfer" else "completed"


def _label(low: float, high: float | None, unit: str) -> str:
    """A bucket's label in one unit: seconds for latencies (given in ms), minutes for
    durations from a minute on."""
    scale, shown = (1000, "s") if unit == "ms" else (60, "min") if (high or low) > 60 else (1, "s")
    low_text, high_text = f"{low / scale:g}", f"{(high or 0) / scale:g}"
    if high is None:
        return f"≥ {low_text} {shown}"
    if low == 0:
        return f"< {high_text} {shown}"
    return f"{low_text}–{high_text} {shown}"


Weighted = tuple[float, int]  # a value, and how many calls or replies had it


def histogram(values: Iterable[Weighted], edges: Sequence[float], unit: str) -> list[Bucket]:
    """Values counted into [edges[i], edges[i+1]) and a last, open bucket."""
    counts = [0] * len(edges)
    for value, count in values:
        counts[bisect_right(edges, value, lo=1) - 1] += count
    bounds = [*edges[1:], None]
    return [
        Bucket(_label(low, high, unit), low, high, count)
        for low, high, count in zip(edges, bounds, counts, strict=True)
    ]


def percentile(values: Sequence[Weighted], share: float) -> float | None:
    """The nearest-rank percentile (`share` of 1) of `values`, None of none."""
    ordered = sorted(values)
    total = sum(count for _, count in ordered)
    if not total:
        return None
    rank, seen = max(1, math.ceil(share * total)), 0
    for value, count in ordered:
        seen += count
        if seen >= rank:
            return value
    return ordered[-1][0]


def overview_days(now: datetime, days: int = OVERVIEW_DAYS) -> list[str]:
    """The last `days` UTC days up to `now`'s, oldest first."""
    today = now.astimezone(UTC).date()
    return [(today - timedelta(days=back)).isoformat() for back in range(days - 1, -1, -1)]


def summarize(
    calls: Iterable[dict[str, Any]],
    durations: Sequence[Weighted],
    latencies_ms: Sequence[Weighted],
    live: list[LiveCall],
    days: list[str],
) -> Overview:
    """The figures of `calls` (day, state, end_reason, mode and how many calls) on `days`,
    with the answered calls' durations (seconds) and their transcripts' reply latencies."""
    per_day = {outcome: [0] * len(days) for outcome in OUTCOMES}
    position = {day: index for index, day in enumerate(days)}
    failures: Counter[tuple[str, str]] = Counter()
    for group in calls:
        index = position.get(str(group["day"]))
        if index is None:
            continue
        outcome = outcome_of(group["state"], group["end_reason"])
        per_day[outcome][index] += group["calls"]
        if outcome == "failed":
            failures[(group["end_reason"] or "unknown", group["mode"] or "unknown")] += group["calls"]
    totals = {outcome: sum(counts) for outcome, counts in per_day.items()}
    totals["calls"] = sum(totals.values())
    return Overview(
        days=days,
        calls_per_day=per_day,
        totals=totals,
        durations=histogram(durations, DURATION_EDGES, "s"),
        duration_median=percentile(durations, 0.5),
        duration_p90=percentile(durations, 0.9),
        latencies=histogram(latencies_ms, LATENCY_EDGES, "ms"),
        latency_median=percentile(latencies_ms, 0.5),
        latency_p90=percentile(latencies_ms, 0.9),
        failures=[(reason, provider, count) for (reason, provider), count in sorted(
            failures.items(), key=lambda item: (-item[1], item[0]))],
        live=live,
    )


class OverviewStore(StoreBase):
    async def organization_overview(
        self, organization_id: int, *, now: datetime | None = None, days: int = OVERVIEW_DAYS
    ) -> Overview:
        """The organization's calls of the `days` UTC days up to `now` (today), and its
        calls live now."""
        shown = overview_days(now or datetime.now(UTC), days)
        since = iso(datetime.fromisoformat(shown[0]).replace(tzinfo=UTC))
        until = iso(datetime.fromisoformat(shown[-1]).replace(tzinfo=UTC) + timedelta(days=1))
        period = (organization_id, since, until)
        calls = await self._all(_CALLS, period)
        tenths = self._db.whole_part("r.duration_seconds * 10")
        durations = await self._all(
            f"""SELECT {tenths} AS tenths, COUNT(*) AS calls {_ORG_RUNS}
                AND r.started_at IS NOT NULL AND r.duration_seconds IS NOT NULL
                AND NOT {OPEN_RUN_SQL}
                GROUP BY {tenths}""",
            period,
        )
        latencies = await self._all(_REPLY_LATENCIES, period)
        return summarize(
            [{key: row[key] for key in ("day", "state", "end_reason", "mode", "calls")}
             for row in calls],
            [(int(row["tenths"]) / 10, int(row["calls"])) for row in durations],
            [(float(int(row["step"]) * LATENCY_STEP_MS), int(row["replies"])) for row in latencies],
            await self.live_calls(organization_id),
            shown,
        )

    async def live_calls(self, organization_id: int) -> list[LiveCall]:
        """The organization's pending and running runs (on every instance), newest first."""
        rows = await self._all(
            f"""SELECT r.id, r.name, r.mode, r.state, r.created_at, r.started_at,
                       w.name AS agent_name, w.uuid AS agent_uuid
                FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id
                WHERE w.organization_id = ? AND {OPEN_RUN_SQL}
                ORDER BY r.id DESC LIMIT {LIVE_LIMIT}""",
            (organization_id,),
        )
        return [
            LiveCall(row["id"], row["name"], row["agent_name"], row["agent_uuid"], row["mode"],
                     row["state"], row["created_at"], row["started_at"])
            for row in rows
        ]
