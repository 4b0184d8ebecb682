"""The admin's pictures in a real headless Chromium: the workflow editor's drawing (dagre,
SVG) and the Overview's charts (Chart.js) render, say what the data says, and follow it.

Set AGENT_STREAM_SCREENSHOTS=1 to (re)write editor-graph.png and overview.png in
docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from agent_stream.config import Settings
from agent_stream.store import Store
from agent_stream.workflow import starter_definition
from tests.conftest import Tenant
from tests.overview_fixtures import EXPECTED, lines, seed_calls, stored_call
from tests.test_browser import CHROMIUM, browser, page, shot, sign_in

__all__ = ["browser", "page"]  # fixtures

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="browser tests need Debian's chromium at /usr/bin/chromium "
    "(apt-get install -y chromium; .ci/run installs it)",
)

if CHROMIUM.exists():
    from playwright.async_api import Page, expect

# how many pixels of a canvas are painted (not transparent)
PAINTED = """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
DATASETS = "c => window.Chart.getChart(c).data.datasets.map(d => [d.label, d.data])"
LABELS = "c => window.Chart.getChart(c).data.labels"


async def drawing(page: Page) -> dict[str, Any]:
    """What the editor's SVG shows: node ids with their kind, edges and their labels."""
    result: dict[str, Any] = await page.locator("#workflow-graph svg").evaluate(
        """svg => ({
            nodes: [...svg.querySelectorAll('.graph-node')].map(
                n => [n.dataset.node, n.getAttribute('class').replace('graph-node kind-', '')]),
            edges: [...svg.querySelectorAll('.graph-edges .graph-edge')].map(
                e => [e.dataset.from, e.dataset.to, e.querySelector('path').getAttribute('d').length > 10]),
            labels: Object.fromEntries([...svg.querySelectorAll('[data-edge-label]')].map(
                g => [g.dataset.edgeLabel,
                      [...g.querySelectorAll('text')].map(t => t.textContent).join(' ')])),
            titles: Object.fromEntries([...svg.querySelectorAll('[data-edge-label]')].map(
                g => [g.dataset.edgeLabel, g.querySelector('title').textContent])),
            fallback: [...svg.querySelectorAll('.graph-edges .graph-edge.fallback')].map(
                e => e.dataset.edge),
            width: svg.getBoundingClientRect().width,
        })"""
    )
    return result


async def test_the_editor_draws_the_workflow_and_a_click_brings_a_form_into_view(
    page: Page, store: Store, tenant: Tenant
) -> None:
    await sign_in(page, store, tenant)
    await page.goto(f"/agents/{tenant.workflow.uuid}")
    await expect(page.locator("#workflow-graph svg .graph-node")).to_have_count(4)

    shown = await drawing(page)
    assert shown["nodes"] == [["start", "start"], ["book", "agent"], ["human", "transfer"],
                              ["bye", "end"]]
    assert shown["edges"] == [["start", "book", True], ["start", "human", True],
                              ["start", "bye", True], ["book", "bye", True]]
    # each edge's label drawn, and its whole story in its title (the tooltip)
    assert shown["labels"] == {"0": "“yes” “book an appointment” press 1",
                               "1": "“talk to a human” “representative” press 0",
                               "2": "“no” “goodbye” fallback", "3": "“goodbye” fallback"}
    assert shown["titles"]["0"] == ("Edge start → book: says “yes”, “book an appointment”; "
                                    "presses 1; if the caller wants to book")
    assert shown["fallback"] == ["2", "3"]
    assert shown["width"] > 300
    await page.evaluate("window.scrollTo(0, 0)")
    await shot(page, "editor-graph", full_page=False)

    # a click on a node brings its form into view, its first field focused
    node_form = page.locator("#node-3")
    await expect(node_form).not_to_be_in_viewport()
    await page.locator('#workflow-graph [data-node="bye"]').click()
    await expect(node_form).to_be_in_viewport()
    await expect(page.locator("#node-3-id")).to_be_focused()
    await expect(node_form).to_have_class("card node-form graph-target")

    # and so does a click on an edge's label, and Enter on a node
    await page.evaluate("window.scrollTo(0, 0)")
    await page.locator('#workflow-graph [data-edge-label="1"] a').click()
    await expect(page.locator("#edge-1")).to_be_in_viewport()
    await expect(page.locator("#edge-1-from")).to_be_focused()
    await page.evaluate("window.scrollTo(0, 0)")
    await page.locator('#workflow-graph [data-node="human"]').focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#node-2-id")).to_be_focused()
    await expect(page.locator("#node-2")).to_be_in_viewport()

    # saving an edge redraws it as saved
    await page.locator("#edge-1-phrases").fill("operator please")
    await page.locator("#edge-1-dtmf").fill("9")
    await page.locator("#edge-1").get_by_role("button", name="Save edge").click()
    await expect(page.get_by_text("Saved as a new draft version.")).to_be_visible()
    await expect(page.locator('#workflow-graph [data-edge-label="1"] text').first).to_have_text(
        "“operator please”")
    assert (await drawing(page))["labels"]["1"] == "“operator please” press 9"

    # adding a node (with the edge that reaches it) draws both
    add = page.locator("#add-node")
    await add.get_by_label("Id").fill("hours")
    await add.get_by_label("Say (spoken verbatim)").fill("We open at nine.")
    await add.get_by_label("Reached from").select_option("book")
    await add.get_by_label("When the caller says").fill("opening hours")
    await add.get_by_role("button", name="Add node").click()
    await expect(page.locator("#workflow-graph svg .graph-node")).to_have_count(5)
    shown = await drawing(page)
    assert ["hours", "agent"] in shown["nodes"]
    assert ["book", "hours", True] in shown["edges"]
    assert "“opening hours”" in shown["labels"]["4"]
    saved = await store.get_workflow(tenant.org_id, tenant.workflow.uuid)
    assert [n["id"] for n in saved.definition["nodes"]] == ["start", "book", "human", "bye",
                                                            "hours"]

    # a node deleted goes from the drawing with its edges
    await page.locator('#workflow-graph [data-node="hours"]').click()
    await page.locator("#node-4").get_by_role("button", name="Delete node").click()
    await expect(page.locator("#workflow-graph svg .graph-node")).to_have_count(4)
    assert [e[:2] for e in (await drawing(page))["edges"]] == [
        [e["from"], e["to"]] for e in starter_definition()["edges"]]


async def test_node_ids_that_are_names_of_javascript_s_object_are_drawn_too(
    page: Page, store: Store, tenant: Tenant
) -> None:
    """The layout library keeps nodes in plain objects: an id like "constructor" broke
    the layout (a TypeError) and "__proto__" vanished from it."""
    definition = starter_definition()
    renamed = {"start": "constructor", "book": "__proto__", "human": "toString",
               "bye": "hasOwnProperty"}
    for node in definition["nodes"]:
        node["id"] = renamed[node["id"]]
    for edge in definition["edges"]:
        edge["from"], edge["to"] = renamed[edge["from"]], renamed[edge["to"]]
    await store.update_workflow(tenant.org_id, tenant.workflow.uuid, definition=definition)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await sign_in(page, store, tenant)
    await page.goto(f"/agents/{tenant.workflow.uuid}")
    await expect(page.locator("#workflow-graph svg .graph-node")).to_have_count(4)
    shown = await drawing(page)
    assert shown["nodes"] == [["constructor", "start"], ["__proto__", "agent"],
                              ["toString", "transfer"], ["hasOwnProperty", "end"]]
    assert shown["edges"] == [[e["from"], e["to"], True] for e in definition["edges"]]
    assert shown["width"] > 300 and errors == []
    await page.locator('#workflow-graph [data-node="hasOwnProperty"]').click()
    await expect(page.locator("#node-3-id")).to_be_focused()


# -- the Overview ------------------------------------------------------------------------------


async def backdate(settings: Settings, run_ids: list[int], days: int) -> None:
    """Move runs `days` back in time, as if made then (the store only makes runs now)."""
    moment = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="milliseconds")
    sql = "UPDATE workflow_runs SET created_at = {} WHERE id = {}"
    if settings.db_url is None:
        def write() -> None:
            with contextlib.closing(sqlite3.connect(settings.db_path)) as db, db:
                db.executemany(sql.format("?", "?"), [(moment, i) for i in run_ids])
        await asyncio.to_thread(write)
        return
    conn = await asyncpg.connect(settings.db_url, timeout=5)
    try:
        await conn.executemany(sql.format("$1", "$2"), [(moment, i) for i in run_ids])
    finally:
        await conn.close()


async def earlier_calls(store: Store, tenant: Tenant, settings: Settings) -> dict[int, int]:
    """A few calls on some of the last 29 days (for a chart with a history): days back ->
    calls completed that day."""
    history = {d: 1 + (d * 7) % 4 for d in (1, 2, 3, 5, 6, 8, 9, 12, 13, 15, 19, 20, 22, 26)}
    for days, count in history.items():
        runs = [
            await stored_call(store, tenant, seconds=20 + 17 * ((days + i) % 9), transcript=lines(
                ("caller", 0, 900), ("agent", 900 + 120 * ((days * 3 + i) % 11), 4000)))
            for i in range(count)
        ]
        await backdate(settings, [r.id for r in runs], days)
    return history


async def test_the_overview_charts_the_organizations_calls(
    page: Page, store: Store, tenant: Tenant, settings: Settings
) -> None:
    await seed_calls(store, tenant)
    history = await earlier_calls(store, tenant, settings)
    await sign_in(page, store, tenant)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview").click()
    await expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    await expect(page.locator("#stat-calls .stat-value")).to_have_text(
        str(EXPECTED["totals"]["calls"] + sum(history.values())))
    await expect(page.locator("#stat-live .stat-value")).to_have_text("1")

    charts = {name: page.locator(f"#chart-{name}")
              for name in ("calls", "durations", "latency", "failures")}
    for canvas in charts.values():
        await expect(canvas).to_be_visible()
        assert await canvas.evaluate("c => c.width > 100 && c.height > 100")
        assert await canvas.evaluate(PAINTED) > 500, "the chart drew nothing"

    # calls per day: today's stack is the seeded outcomes, earlier days the history
    calls = dict((label, data) for label, data in await charts["calls"].evaluate(DATASETS))
    assert list(calls) == ["Completed", "Transferred", "Failed", "Live"]
    assert [calls[o][-1] for o in calls] == [3, 1, 2, 1]
    assert {29 - i: n for i, n in enumerate(calls["Completed"][:-1]) if n} == history
    assert sum(map(sum, calls.values())) == EXPECTED["totals"]["calls"] + sum(history.values())
    labels = await charts["calls"].evaluate(LABELS)
    assert len(labels) == 30

    # the distributions are the page's tables, and the tables the figures seeded
    for name, table in (("durations", "#durations-table"), ("latency", "#latency-table")):
        (_, counts), = await charts[name].evaluate(DATASETS)
        buckets = await charts[name].evaluate(LABELS)
        rows = await page.locator(f"{table} tbody tr").evaluate_all(  # in a closed <details>
            "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()).join('\\t'))")
        assert [f"{b}\t{n}" for b, n in zip(buckets, counts, strict=True)] == rows
    (_, durations), = await charts["durations"].evaluate(DATASETS)
    assert sum(durations) == 5 + sum(history.values())
    (_, latencies), = await charts["latency"].evaluate(DATASETS)
    assert sum(latencies) == 3 + sum(history.values())

    failures = await charts["failures"].evaluate(DATASETS)
    assert sorted(failures) == [["cloudonix", [0, 1]], ["twilio", [1, 0]]]
    assert await charts["failures"].evaluate(LABELS) == ["agent_error", "provider_timeout"]
    await expect(page.locator("#live-table")).to_contain_text("Running")

    await page.evaluate("window.scrollTo(0, 0)")
    await shot(page, "overview")
