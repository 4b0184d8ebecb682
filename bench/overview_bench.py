"""What the Overview page's figures cost a busy organization: a month of runs, eight
transcript lines each, then `Store.organization_overview` timed while a ticker on the
event loop measures how late it wakes (every 5 ms: what live calls' audio would feel).
The runs and lines are seeded straight into the database (the store's own writes would
take minutes for this many); everything timed goes through the store.
Prints the figures; decides nothing.

    python bench/overview_bench.py [--runs 50000] [--rounds 5] [--db postgresql://...]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from common import TICK_SECONDS, ticker  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from agent_stream.crypto import SecretKey  # noqa: E402
from agent_stream.store import Store  # noqa: E402
from agent_stream.workflow import starter_definition  # noqa: E402

LINES_PER_RUN = 8
RUN_COLUMNS = ("id", "workflow_id", "name", "call_type", "mode", "state", "created_at",
               "started_at", "ended_at", "duration_seconds", "end_reason")
LINE_COLUMNS = ("run_id", "seq", "role", "text", "start_ms", "end_ms")


def month_of_calls(workflow_id: int, count: int) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """`count` answered calls spread over the last 29 days, and their transcripts: caller
    and agent taking turns, replies 200-1600 ms after the caller's line."""
    now = datetime.now(UTC)
    spread = 29 * 24 * 3600 / count
    runs, lines = [], []
    for n in range(count):
        at = now - timedelta(seconds=n * spread)
        stamp = at.isoformat(timespec="milliseconds")
        state, reason = ("failed", "agent_error") if n % 20 == 0 else ("completed", "caller_hangup")
        runs.append((n + 1, workflow_id, f"WR-BENCH-{n:08d}", "inbound",
                     ("cloudonix", "twilio", "telnyx")[n % 3], state, stamp, stamp, stamp,
                     float(20 + n % 400) + (n % 7) / 10, reason))
        clock = 0
        for seq in range(LINES_PER_RUN):
            role = "agent" if seq % 2 == 0 else "caller"
            start = clock + (200 + (n * 37 + seq * 11) % 1400 if role == "agent" else 300)
            lines.append((n + 1, seq, role, "words of the line", start, start + 1500))
            clock = start + 1500
    return runs, lines


async def seed(store: Store, target: str, count: int) -> int:
    organization = await store.get_or_create_organization("Busy")
    owner = await store.create_user(organization_id=organization.id, email="busy@example.com",
                                    password="bench-password-1")
    workflow = await store.create_workflow(organization_id=organization.id,
                                           owner_user_id=owner.id, name="Front desk",
                                           definition=starter_definition())
    runs, lines = month_of_calls(workflow.id, count)
    insert_runs = (f"INSERT INTO workflow_runs ({', '.join(RUN_COLUMNS)}) VALUES "
                   f"({', '.join('?' * len(RUN_COLUMNS))})")
    insert_lines = (f"INSERT INTO run_transcript_lines ({', '.join(LINE_COLUMNS)}) VALUES "
                    f"({', '.join('?' * len(LINE_COLUMNS))})")
    if target.startswith("postgresql"):
        connection = await asyncpg.connect(target)
        try:
            await connection.copy_records_to_table("workflow_runs", records=runs, columns=RUN_COLUMNS)
            await connection.copy_records_to_table("run_transcript_lines", records=lines,
                                                   columns=LINE_COLUMNS)
            await connection.execute("SELECT setval(pg_get_serial_sequence('workflow_runs', 'id'), "
                                     "(SELECT MAX(id) FROM workflow_runs))")
            await connection.execute("ANALYZE")
        finally:
            await connection.close()
    else:
        with sqlite3.connect(target) as connection:
            connection.executemany(insert_runs, runs)
            connection.executemany(insert_lines, lines)
            connection.execute("ANALYZE")
        connection.close()
    return organization.id


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--db", help="a postgresql:// URL of an empty database (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        target = args.db or os.path.join(scratch, "bench.db")
        key = SecretKey(Fernet.generate_key(), "bench") if args.db else None
        store = await Store.open(target if args.db else Path(target), secret_key=key)
        try:
            began = time.monotonic()
            organization_id = await seed(store, target, args.runs)
            print(f"{args.runs} runs, {args.runs * LINES_PER_RUN} transcript lines seeded in "
                  f"{time.monotonic() - began:.1f} s ({'PostgreSQL' if args.db else 'SQLite'})")
            seconds, worst_lags = [], []
            for _ in range(args.rounds):
                lags: list[float] = []
                stop = asyncio.Event()
                ticking = asyncio.create_task(ticker(lags, stop))
                began = time.perf_counter()
                overview = await store.organization_overview(organization_id)
                seconds.append(time.perf_counter() - began)
                stop.set()
                await ticking
                worst_lags.append(max(lags, default=0.0))
            print(f"overview: {overview.totals['calls']} calls, median duration "
                  f"{overview.duration_median} s, median reply {overview.latency_median} ms")
            print(f"organization_overview: median {statistics.median(seconds) * 1000:.0f} ms, "
                  f"best {min(seconds) * 1000:.0f} ms over {args.rounds} rounds")
            print(f"event loop woken late by at most: median {statistics.median(worst_lags) * 1000:.1f} ms, "
                  f"worst {max(worst_lags) * 1000:.1f} ms (ticks every {TICK_SECONDS * 1000:.0f} ms)")
        finally:
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
