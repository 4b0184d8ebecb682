"""The Overview page's figures: an organization's calls of the last 30 days by day and
outcome, their durations and reply latencies, failures by reason and provider, and the
calls live now. Bounded reads (one organization, 30 days) summed up in Python, so the day
buckets are the same on SQLite and PostgreSQL (times are stored as ISO 8601 UTC text)."""
from __future__ import annotations

import math
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

_ORG_RUNS: Final = """FROM workflow_runs r JOIN workflows w ON w.id = r.workflow_id
                      WHERE w.organization_id = ? AND r.created_at >= ?"""

# A reply: an agent line right after a caller line of the same run's transcript; its
# latency is the silence between them (an agent line that overlaps the caller's is none).
_REPLY_LATENCIES: Final = """
    SELECT t.start_ms - t.previous_end AS latency_ms FROM (
        SELECT l.role, l.start_ms,
               LAG(l.role) OVER (PARTITION BY l.run_id ORDER BY l.seq) AS previous_role,
               LAG(l.end_ms) OVER (PARTITION BY l.run_id ORDER BY l.seq) AS previous_end
        FROM run_transcript_lines l JOIN workflow_runs r ON r.id = l.run_id
        JOIN workflows w ON w.id = r.workflow_id
        WHERE w.organization_id = ? AND r.created_at >= ?
    ) t
    WHERE t.role = 'agent' AND t.previous_role = 'caller' AND t.start_ms >= t.previous_end
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


def histogram(values: Iterable[float], edges: Sequence[float], unit: str) -> list[Bucket]:
    """Values counted into [edges[i], edges[i+1]) and a last, open bucket."""
    counts = [0] * len(edges)
    for value in values:
        index = max(0, sum(1 for edge in edges[1:] if value >= edge))
        counts[index] += 1
    bounds = [*edges[1:], None]
    return [
        Bucket(_label(low, high, unit), low, high, count)
        for low, high, count in zip(edges, bounds, counts, strict=True)
    ]


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (`share` of 1) of `values`, None of none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def overview_days(now: datetime, days: int = OVERVIEW_DAYS) -> list[str]:
    """The last `days` UTC days up to `now`'s, oldest first."""
    today = now.astimezone(UTC).date()
    return [(today - timedelta(days=back)).isoformat() for back in range(days - 1, -1, -1)]


def summarize(
    runs: Iterable[dict[str, Any]],
    latencies_ms: Iterable[float],
    live: list[LiveCall],
    days: list[str],
) -> Overview:
    """The figures of `runs` (created_at, state, end_reason, mode, started_at,
    duration_seconds) on `days`, with the reply latencies of their transcripts."""
    per_day = {outcome: [0] * len(days) for outcome in OUTCOMES}
    position = {day: index for index, day in enumerate(days)}
    durations: list[float] = []
    failures: Counter[tuple[str, str]] = Counter()
    for run in runs:
        index = position.get(str(run["created_at"])[:10])
        if index is None:
            continue
        outcome = outcome_of(run["state"], run["end_reason"])
        per_day[outcome][index] += 1
        if outcome == "failed":
            failures[(run["end_reason"] or "unknown", run["mode"] or "unknown")] += 1
        if run["started_at"] and run["duration_seconds"] is not None and outcome != "live":
            durations.append(float(run["duration_seconds"]))
    latencies = [float(value) for value in latencies_ms]
    totals = {outcome: sum(counts) for outcome, counts in per_day.items()}
    totals["calls"] = sum(totals.values())
    return Overview(
        days=days,
        calls_per_day=per_day,
        totals=totals,
        durations=histogram(durations, DURATION_EDGES, "s"),
        duration_median=percentile(durations, 0.5),
        duration_p90=percentile(durations, 0.9),
        latencies=histogram(latencies, LATENCY_EDGES, "ms"),
        latency_median=percentile(latencies, 0.5),
        latency_p90=percentile(latencies, 0.9),
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
        rows = await self._all(
            f"""SELECT r.created_at, r.state, r.end_reason, r.mode, r.started_at,
                       r.duration_seconds {_ORG_RUNS}""",
            (organization_id, since),
        )
        latencies = await self._all(_REPLY_LATENCIES, (organization_id, since))
        return summarize(
            ({key: row[key] for key in ("created_at", "state", "end_reason", "mode",
                                        "started_at", "duration_seconds")} for row in rows),
            (row["latency_ms"] for row in latencies),
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
