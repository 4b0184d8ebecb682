"""The admin's Webhooks page in a real headless Chromium: add a webhook (its generated secret
shown once), pause and resume it, see a real call's deliveries, delete it — under the admin's
Content-Security-Policy, with nothing going wrong in the page's console.

Set AGENT_STREAM_SCREENSHOTS=1 to (re)write webhooks.png in docs/screenshots/.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from agent_stream.store import Store
from tests.conftest import Dial, Tenant, finished_run, short_call, until
from tests.test_browser import CHROMIUM, TIMEOUT_MS, browser, clipboard, page, shot, sign_in

__all__ = ["browser", "page"]  # fixtures

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="browser tests need Debian's chromium at /usr/bin/chromium "
    "(apt-get install -y chromium; .ci/run installs it)",
)

if CHROMIUM.exists():
    from playwright.async_api import ConsoleMessage, Page, expect

# Every Content-Security-Policy violation of every page, reported to the test as it happens
# (an init script runs before the page's own and is not subject to its CSP).
REPORT_VIOLATIONS = """
document.addEventListener('securitypolicyviolation', e => window.reportViolation(
    `${location.pathname}: ${e.violatedDirective} ${e.blockedURI || 'inline'} ${e.sourceFile}`));
"""


class Troubles:
    """What went wrong in the browser: console errors, uncaught exceptions, CSP violations."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.violations: list[str] = []

    @classmethod
    async def of(cls, page: Page) -> Troubles:
        troubles = cls()
        page.on("console", troubles.console)
        page.on("pageerror", lambda error: troubles.errors.append(f"uncaught: {error}"))
        await page.expose_function("reportViolation", troubles.violation)
        await page.add_init_script(REPORT_VIOLATIONS)
        return troubles

    def violation(self, report: str) -> None:
        self.violations.append(report)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.location.get('url')}: {message.text}")


@pytest.fixture
async def receiver(aiohttp_server: Any) -> tuple[str, list[dict[str, Any]]]:
    """A webhook receiver that accepts everything: its URL and the bodies it got."""
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    return str(server.make_url("/hook")), received


async def cells(row: Any) -> list[str]:
    """A table row's cells as a person reads them."""
    text: list[str] = await row.evaluate("r => [...r.cells].map(c => c.textContent.trim())")
    return text


async def test_add_pause_resume_see_deliveries_and_delete_a_webhook(
    page: Page, store: Store, tenant: Tenant, dial: Dial,
    receiver: tuple[str, list[dict[str, Any]]],
) -> None:
    hook_url, received = receiver
    troubles = await Troubles.of(page)
    await sign_in(page, store, tenant)

    # Webhooks, from the top navigation: none yet, every event ticked for the first one
    nav = page.get_by_role("navigation", name="Main")
    await nav.get_by_role("link", name="Webhooks").click()
    await expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    await expect(nav.get_by_role("link", name="Webhooks")).to_have_attribute(
        "aria-current", "page")
    await expect(page.get_by_text("No webhooks yet")).to_be_visible()
    policy = (await page.request.get("/webhooks")).headers["content-security-policy"]
    assert "script-src 'self';" in policy  # no 'unsafe-inline': the checks below mean something

    form = page.locator("section#add")
    for event in ("run.started", "run.completed", "run.failed"):
        await expect(form.get_by_label(event)).to_be_checked()
    await form.get_by_label("Receiver URL").fill(hook_url)
    await expect(form.get_by_label("Signing secret")).to_have_value("")
    await form.get_by_role("button", name="Add webhook").click()

    # the generated secret, shown this once, copies
    shown = page.get_by_role("region", name=f"Signing secret of the webhook to {hook_url}")
    await expect(shown).to_contain_text("Copy it now: it is shown only this once.")
    (webhook,) = await store.list_webhooks(tenant.org_id)
    assert webhook.secret.startswith("whsec_")
    await expect(shown.locator("code")).to_have_text(webhook.secret)
    await shown.get_by_role("button", name="Copy secret").click()
    await expect(page.locator("#toast")).to_have_text("Secret copied")
    assert await clipboard(page) == webhook.secret
    row = page.get_by_role("row").filter(has_text=hook_url)
    hint = "••••" + webhook.secret[-4:]
    assert (await cells(row))[1:4] == ["run.started, run.completed, run.failed", hint, "Active"]

    # a reload shows the list as it is: no secret, the same one webhook
    await page.reload()
    await expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    await expect(page.get_by_text("shown only this once")).to_have_count(0)
    await expect(row).to_contain_text(hint)
    assert webhook.secret not in await page.content()
    assert [w.id for w in await store.list_webhooks(tenant.org_id)] == [webhook.id]

    # its page: nothing delivered yet; pause, then resume
    await row.get_by_role("link", name=f"Deliveries and settings of {hook_url}").click()
    await expect(page.get_by_role("heading", name=hook_url)).to_be_visible()
    head = page.locator(".page-head .badge")
    await expect(head).to_have_text("Active")
    await expect(page.get_by_text("No deliveries yet")).to_be_visible()
    assert webhook.secret not in await page.content()
    await expect(page.get_by_label("Signing secret")).to_have_attribute("placeholder", hint)

    await page.get_by_role("button", name="Pause").click()
    await expect(page.get_by_role("status").first).to_have_text(
        "Webhook paused: run events are not sent to it until you resume it.")
    await expect(head).to_have_text("Paused")
    await expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    assert (await store.get_webhook(tenant.org_id, webhook.id)).active is False
    await page.get_by_role("link", name="Webhooks").first.click()
    await expect(row).to_contain_text("Paused")
    await row.get_by_role("link", name=f"Deliveries and settings of {hook_url}").click()
    await page.get_by_role("button", name="Resume").click()
    await expect(page.get_by_role("status").first).to_have_text("Webhook resumed.")
    await expect(head).to_have_text("Active")
    await expect(page.get_by_role("button", name="Pause")).to_be_visible()
    assert (await store.get_webhook(tenant.org_id, webhook.id)).active is True

    # a real call: its start and its end are delivered, and the page shows both
    assert await short_call(dial, tenant) == (1000, "call ended")
    run = await finished_run(store, tenant)
    await until(lambda: len(received) == 2)
    assert sorted(body["event"] for body in received) == ["run.completed", "run.started"]
    deliveries = page.get_by_role("table", name="Recent deliveries, newest first")
    delivered = deliveries.get_by_role("row").filter(has_text="Delivered")
    deadline = asyncio.get_running_loop().time() + TIMEOUT_MS / 1000
    while True:  # the receiver has answered; the page shows it once the answer is recorded
        await page.reload()
        if await delivered.count() == 2 or asyncio.get_running_loop().time() > deadline:
            break
    await expect(delivered).to_have_count(2)
    assert [await cells(h) for h in await deliveries.locator("thead tr").all()] == [[
        "Event", "Run", "Status", "HTTP", "Attempts", "Latency", "Error", "Last attempt",
        "Next attempt"]]
    rows = [await cells(r) for r in await deliveries.locator("tbody tr").all()]
    assert sorted(r[0] for r in rows) == ["run.completed", "run.started"]
    for event, run_id, status, code, attempts, latency, error, last, after in rows:
        assert (run_id, status, code, attempts, error, after) == (
            str(run.id), "Delivered", "200", "1", "—", "—"), event
        assert latency.endswith(" ms") and latency[:-3].isdigit(), latency
        assert last and last != "—"
    await page.evaluate("window.scrollTo(0, 0)")
    await shot(page, "webhooks", full_page=False)

    # delete it, confirming first
    await page.get_by_role("link", name="Delete webhook").click()
    await expect(page.get_by_role("heading", name="Delete this webhook?")).to_be_visible()
    await expect(page.get_by_text(hook_url, exact=True)).to_be_visible()
    assert (await store.list_webhooks(tenant.org_id)) != []  # asking deleted nothing
    await page.get_by_role("button", name="Delete webhook").click()
    await expect(page.get_by_role("status").first).to_have_text(
        "Webhook deleted with its deliveries.")
    await expect(page.get_by_text("No webhooks yet")).to_be_visible()
    assert await store.list_webhooks(tenant.org_id) == []

    # and on none of the pages did anything go wrong
    assert troubles.violations == [], troubles.violations
    assert troubles.errors == [], troubles.errors
