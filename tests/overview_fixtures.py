"""Calls of known outcomes, durations and reply latencies, stored through the store as a
call stores them, for the Overview's tests (store, page and browser)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agent_stream.models import Run, TranscriptLine
from agent_stream.store import Store
from tests.conftest import Tenant


@dataclass(frozen=True)
class Seeded:
    """What `seed_calls` stored (all created today, UTC)."""

    runs: list[Run]
    live: Run


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def lines(*spans: tuple[str, int, int]) -> list[TranscriptLine]:
    return [TranscriptLine(role, f"{role} line", start, end) for role, start, end in spans]


async def stored_call(
    store: Store,
    tenant: Tenant,
    *,
    provider: str = "cloudonix",
    state: str = "completed",
    end_reason: str = "caller_hangup",
    seconds: float | None = 10.0,
    transcript: list[TranscriptLine] | None = None,
) -> Run:
    """One call's run as its call leaves it: answered `seconds` long (None: never answered),
    ended with `state` and `end_reason`."""
    owner = await store.get_user(tenant.user_id)
    run = await store.start_run(
        tenant.workflow, owner, mode=provider, initial_context={"provider": provider},
        gathered_context={}, logs={},
    )
    started = datetime.now(UTC) - timedelta(seconds=seconds or 0)
    if seconds is not None:
        await store.mark_run_running(run.id, started_at=_at(started))
    ended = started + timedelta(seconds=seconds or 0)
    await store.finish_run(
        run.id, state=state, end_reason=end_reason, close_code=1000 if state == "completed"
        else 1011, error=None if state == "completed" else end_reason.replace("_", " "),
        transcript=transcript, ended_at=_at(ended),
    )
    return await store.get_run_by_id(run.id)


async def seed_calls(store: Store, tenant: Tenant) -> Seeded:
    """Seven calls: three completed (10, 45 and 200 s), one transferred (70 s), two failed
    (a provider timeout after 5 s on Cloudonix, an agent error before any answer on
    Twilio) and one running now; reply latencies 400, 1500 and 300 ms (an agent line that
    overlaps the caller's is no reply)."""
    runs = [
        await stored_call(store, tenant, seconds=10, transcript=lines(
            ("agent", 0, 2000), ("caller", 2500, 3000), ("agent", 3400, 5000),
            ("caller", 6000, 6500), ("agent", 8000, 9000))),
        await stored_call(store, tenant, seconds=45, transcript=lines(
            ("caller", 0, 500), ("agent", 800, 1500),
            ("caller", 2000, 3000), ("agent", 2800, 3500))),
        await stored_call(store, tenant, seconds=200, end_reason="agent_hangup"),
        await stored_call(store, tenant, seconds=70, end_reason="transfer"),
        await stored_call(store, tenant, state="failed", end_reason="provider_timeout", seconds=5),
        await stored_call(store, tenant, provider="twilio", state="failed",
                          end_reason="agent_error", seconds=None),
    ]
    owner = await store.get_user(tenant.user_id)
    live = await store.start_run(
        tenant.workflow, owner, mode="cloudonix", initial_context={}, gathered_context={},
        logs={},
    )
    await store.mark_run_running(live.id)
    return Seeded(runs, await store.get_run_by_id(live.id))


# What the Overview shows of `seed_calls` (the day's counts, the distributions' buckets).
EXPECTED: dict[str, Any] = {
    "totals": {"completed": 3, "transferred": 1, "failed": 2, "live": 1, "calls": 7},
    "durations": {"< 15 s": 2, "30–60 s": 1, "1–2 min": 1, "2–5 min": 1},
    "duration_median": 45.0,
    "duration_p90": 200.0,
    "latencies": {"< 0.3 s": 0, "0.3–0.6 s": 2, "1.2–1.6 s": 1},
    "latency_median": 400.0,
    "latency_p90": 1500.0,
    "failures": [("agent_error", "twilio", 1), ("provider_timeout", "cloudonix", 1)],
}
