"""An agent's Runs tab: the list with filters, one run in detail, its live state and its
recording (only for signed-in users of the agent's organization)."""

from __future__ import annotations

import logging
from datetime import date, timedelta

from aiohttp import web

from ..api import RUN_STATES
from ..errors import NotFound
from ..keys import RECORDINGS
from ..models import Run, Workflow
from ..recordings.serving import recording_response
from ..urls import stream_base
from .common import RUNS_PAGE_SIZE, int_id, page, render, store_of, url, user_of

log = logging.getLogger(__name__)

REJECTIONS_SHOWN = 20


def _day(raw: str | None) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


async def _run(request: web.Request) -> tuple[Workflow, Run]:
    """The run in the path, of the agent in the path, of the user's organization."""
    user = user_of(request)
    store = store_of(request)
    workflow = await store.get_workflow(user.organization_id, request.match_info["uuid"])
    run = await store.get_run(user.organization_id, int_id(request, "run_id"))
    if run.workflow_id != workflow.id:
        raise NotFound("run not found")
    return workflow, run


async def has_recording(request: web.Request, run: Run) -> bool:
    """Whether the recordings store has the run's recording (a store that does not
    answer shows the page without the player)."""
    if not run.recording_path:
        return False
    recordings = request.app[RECORDINGS]
    try:
        return await recordings.exists(run.recording_path)
    except Exception as exc:  # noqa: BLE001 - the page still shows the run
        log.warning("recording of %s not found in %s: %s: %s",
                    run.name, recordings.describe(), type(exc).__name__, exc)
        return False


@page()
async def runs(request: web.Request) -> web.StreamResponse:
    """Newest first, filtered by state and by day (UTC, both ends included)."""
    user = user_of(request)
    store = store_of(request)
    workflow = await store.get_workflow(user.organization_id, request.match_info["uuid"])
    state = request.query.get("state") or None
    notes = []
    if state is not None and state not in RUN_STATES:
        notes.append(f"Unknown state {state!r}: showing every state.")
        state = None
    first, last = _day(request.query.get("from")), _day(request.query.get("to"))
    for key, parsed in (("from", first), ("to", last)):
        if request.query.get(key) and parsed is None:
            notes.append(f"{request.query[key]!r} is not a date (YYYY-MM-DD): ignored.")
    try:
        page_number = max(1, min(int(request.query.get("page", "1")), 10**6))
    except ValueError:
        page_number = 1
    found, total = await store.list_runs(
        user.organization_id,
        workflow_uuid=workflow.uuid,
        state=state,
        since=first.isoformat() if first else None,
        until=(last + timedelta(days=1)).isoformat() if last else None,
        limit=RUNS_PAGE_SIZE,
        offset=(page_number - 1) * RUNS_PAGE_SIZE,
    )
    pages = max(1, -(-total // RUNS_PAGE_SIZE))
    filters = {
        "state": state or "",
        "from": first.isoformat() if first else "",
        "to": last.isoformat() if last else "",
    }
    rejections = await store.list_rejections(
        organization_id=user.organization_id, workflow_id=workflow.id, limit=REJECTIONS_SHOWN
    )
    return render(
        request,
        "runs.html",
        {
            "agent": workflow,
            "tab": "runs",
            "runs": found,
            "total": total,
            "page": page_number,
            "pages": pages,
            "prev_url": url(
                request, "admin_runs", filters | {"page": page_number - 1}, uuid=workflow.uuid
            )
            if page_number > 1
            else None,
            "next_url": url(
                request, "admin_runs", filters | {"page": page_number + 1}, uuid=workflow.uuid
            )
            if page_number < pages
            else None,
            "filters": filters,
            "filtered": any(filters.values()),
            "states": RUN_STATES,
            "notes": notes,
            "rejections": rejections,
            "stream_url": f"{stream_base(request)}/api/v1/agent-stream/PROVIDER/{workflow.uuid}",
            "nav": "agents",
        },
    )


@page()
async def run_detail(request: web.Request) -> web.StreamResponse:
    workflow, run = await _run(request)
    return render(
        request,
        "run_detail.html",
        {
            "agent": workflow,
            "tab": "runs",
            "run": run,
            "has_recording": await has_recording(request, run),
            "live": run.state in ("pending", "running"),
            "nav": "agents",
        },
    )


@page()
async def run_status(request: web.Request) -> web.StreamResponse:
    """What the run page polls while a run is live (small, no contexts)."""
    _, run = await _run(request)
    return web.json_response(
        {
            "id": run.id,
            "state": run.state,
            "ended_at": run.ended_at,
            "duration_seconds": run.duration_seconds,
            "end_reason": run.end_reason,
        },
        headers={"Cache-Control": "no-store"},
    )


@page()
async def run_recording(request: web.Request) -> web.StreamResponse:
    """The WAV from the recordings store, answering Range requests so players can seek."""
    _, run = await _run(request)
    return await recording_response(request, request.app[RECORDINGS], run.recording_path,
                                    headers={"Cache-Control": "private, no-store"})
