"""The admin in a real headless Chromium (Playwright): its scripts — copy to clipboard with a
toast, the ⋮ menu, live run updates — and the recording player, against the real app.

Set AGENT_STREAM_SCREENSHOTS=1 to (re)write the README's screenshots in docs/screenshots/.
"""

from __future__ import annotations

import asyncio
import os
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agent_stream.simulator import tone_ulaw
from agent_stream.speech.tts import EspeakSynthesizer
from agent_stream.store import Store
from tests.admin_fixtures import PASSWORD
from tests.conftest import Dial, Tenant, finished_run, latest_run_id, wait_for_state
from tests.conftest import until as eventually

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
TIMEOUT_MS = 10_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="browser tests need Debian's chromium at /usr/bin/chromium "
    "(apt-get install -y chromium; .ci/run installs it)",
)

if CHROMIUM.exists():
    from playwright.async_api import Browser, Page, async_playwright, expect

    expect.set_options(timeout=TIMEOUT_MS)


async def shot(page: Page, name: str, *, full_page: bool = True) -> None:
    """Keep a screenshot for the README, only when asked to."""
    if os.environ.get("AGENT_STREAM_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser, client: TestClient) -> AsyncIterator[Page]:
    """A fresh browser profile on the app under test, allowed to use the clipboard."""
    context = await browser.new_context(
        base_url=str(client.make_url("")).rstrip("/"),
        permissions=["clipboard-read", "clipboard-write"],
        viewport={"width": 1280, "height": 860},
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    yield page
    await context.close()


async def until(locator: Any, predicate: str, timeout: float = TIMEOUT_MS / 1000) -> bool:
    """Poll a predicate on an element from here: the admin's CSP (rightly) forbids the
    string evaluation that Playwright's in-page wait_for_function relies on."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await locator.evaluate(predicate):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def clipboard(page: Page) -> str:
    text: str = await page.evaluate("navigator.clipboard.readText()")
    return text


async def sign_in(
    page: Page, store: Store, tenant: Tenant, *, email: str = "ops@example.com"
) -> None:
    await store.create_user(
        organization_id=tenant.org_id, email=email, password=PASSWORD, is_admin=True
    )
    await page.goto("/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Agents", exact=True)).to_be_visible()


async def test_first_run_in_the_browser(page: Page) -> None:
    await page.goto("/")
    await expect(page.get_by_role("heading", name="Welcome to Agent Stream")).to_be_visible()
    await shot(page, "first-run", full_page=False)
    await page.get_by_label("Organization name").fill("Acme")
    await page.get_by_label("Your email").fill("first@acme.test")
    await page.get_by_label("Password", exact=True).fill("a good password")
    await page.get_by_label("Password again").fill("a good password")
    await page.get_by_role("button", name="Create organization").click()
    await expect(page.get_by_text("Welcome! Here is your starter agent.")).to_be_visible()
    await expect(page.get_by_role("heading", name="Front desk")).to_be_visible()


async def test_create_an_agent_and_copy_its_uuid_from_the_menu_and_from_settings(
    page: Page, store: Store, tenant: Tenant
) -> None:
    await sign_in(page, store, tenant)
    await page.locator("#new-agent-name").fill("Night line")
    await page.get_by_role("button", name="Create agent").click()
    await expect(page.get_by_role("heading", name="Night line")).to_be_visible()
    uuid = page.url.rsplit("/", 1)[1]
    assert (await store.get_workflow(tenant.org_id, uuid)).name == "Night line"

    # From the workflow editor: ⋮ (more options) → Copy Agent UUID → the toast confirms
    await page.get_by_role("button", name="More options").click()
    await expect(page.get_by_role("menu")).to_be_visible()
    await shot(page, "workflow-editor", full_page=False)
    await page.get_by_role("menuitem", name="Copy Agent UUID").click()
    await expect(page.locator("#toast")).to_have_text("Agent UUID copied")
    await expect(page.locator("#toast")).to_have_class("toast show")
    assert await clipboard(page) == uuid
    await expect(page.get_by_role("menu")).to_be_hidden()

    # From the agent's Settings page: the Agent UUID section, linked from the right-side nav
    await page.evaluate("navigator.clipboard.writeText('')")
    await page.get_by_role("navigation", name="Agent").get_by_role("link", name="Settings").click()
    await (
        page.get_by_role("navigation", name="Settings sections")
        .get_by_role("link", name="Agent UUID")
        .click()
    )
    assert page.url.endswith("/settings#agent-uuid")
    section = page.locator("section#agent-uuid")
    await expect(section.get_by_role("heading", name="Agent UUID")).to_be_in_viewport()
    await section.get_by_text(uuid, exact=True).click()
    await expect(page.locator("#toast")).to_have_text("Agent UUID copied")
    assert await clipboard(page) == uuid
    await page.evaluate("navigator.clipboard.writeText('')")
    await section.get_by_role("button", name="Copy UUID").click()
    assert await clipboard(page) == uuid
    await expect(section).to_contain_text(f"/api/v1/agent-stream/{uuid}?provider=cloudonix")
    await section.get_by_role("button", name="Copy CXML").click()
    assert (await clipboard(page)).startswith('<Response><Connect><Stream url="ws://')
    await page.goto(f"/agents/{uuid}/settings")
    await shot(page, "agent-settings")


async def test_runs_tab_follows_a_live_call_and_plays_its_recording(
    page: Page, store: Store, tenant: Tenant, dial: Dial
) -> None:
    await sign_in(page, store, tenant)
    dialled_at = time.monotonic()
    call = await dial(tenant.workflow.uuid)
    await call.handshake()
    run_id = await latest_run_id(store, tenant.org_id, wait=5)
    assert run_id is not None
    run = await wait_for_state(store, run_id, "running")
    assert run.state == "running"

    await page.get_by_role("link", name="Runs").first.click()
    row = page.get_by_role("row").filter(has_text=run.name)
    await expect(row).to_contain_text("Running")
    await row.get_by_role("link", name=run.name).click()
    await expect(page.get_by_text("This call is live")).to_be_visible()

    # the call goes on and ends; the open page notices by itself
    await call.send_audio(tone_ulaw(1.0), realtime=False)
    await call.hang_up()
    await call.wait_closed()
    call_seconds = time.monotonic() - dialled_at
    await expect(page.locator(".run-head .badge")).to_have_text("Completed")
    await expect(page.get_by_text("This call is live")).to_be_hidden()
    await expect(page.get_by_text("caller_hangup").first).to_be_visible()

    # the recording element loads over range requests and plays
    ranges: list[tuple[int, str | None]] = []

    def on_response(response: Any) -> None:
        if response.url.endswith(f"/runs/{run.id}/recording"):
            ranges.append((response.status, response.request.headers.get("range")))

    page.on("response", on_response)
    await page.reload()
    audio = page.locator("audio#recording")
    await expect(audio).to_be_visible()
    assert await until(audio, "a => a.readyState >= 1")  # metadata loaded
    duration = await audio.evaluate("a => a.duration")
    # the recording holds the call from its start: what passed before the tone (the page
    # opening, on a loaded machine a while), then the whole 1 s tone, sent faster than real
    # time so it may run past the hang-up; the player shows the file's own length
    ended = await wait_for_state(store, run.id, "completed")
    with wave.open(ended.recording_path) as wav:
        recorded = wav.getnframes() / wav.getframerate()
    assert 0.98 <= recorded <= call_seconds + 1.0
    assert duration == pytest.approx(recorded, abs=0.01)
    await audio.evaluate("a => { a.muted = true; return a.play(); }")
    assert await until(audio, "a => a.currentTime > 0 || a.ended")
    assert any(status == 206 and header for status, header in ranges), ranges
    await shot(page, "run-detail")
    await page.get_by_role("link", name="← All runs").click()
    await expect(page.get_by_role("row").filter(has_text=run.name)).to_contain_text("Completed")
    await shot(page, "runs")


async def test_add_edit_and_delete_a_telephony_configuration(
    page: Page, store: Store, tenant: Tenant
) -> None:
    await sign_in(page, store, tenant)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Telephony").click()
    token = "cx-browser-SECRET-token-4321"
    form = page.locator("section#add")
    await form.get_by_label("Name", exact=True).fill("Beta line")
    await form.get_by_label("Cloudonix domain").fill("Beta")
    await form.get_by_label("Bearer token").fill(token)
    await form.get_by_label("Application name").fill("beta-app")
    await form.get_by_label("From numbers").fill("+15555550100")
    await form.get_by_role("button", name="Add configuration").click()
    await expect(page.get_by_text("Telephony configuration added.")).to_be_visible()
    row = page.get_by_role("row").filter(has_text="Beta line")
    await expect(row).to_contain_text("beta.cloudonix.net")
    await expect(row).to_contain_text("••••4321")
    assert token not in await page.content()
    await shot(page, "telephony")

    await row.get_by_role("link", name="Edit").click()
    await page.get_by_label("Name", exact=True).fill("Beta")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_text("Telephony configuration saved.")).to_be_visible()
    config = next(c for c in await store.list_telephony_configs(tenant.org_id) if c.name == "Beta")
    assert config.value("bearer_token") == token  # kept: no new token was typed

    await (
        page.get_by_role("row")
        .filter(has_text="beta.cloudonix.net")
        .get_by_role("link", name="Delete")
        .click()
    )
    await expect(page.get_by_role("heading", name="Delete Beta?")).to_be_visible()
    await page.get_by_role("button", name="Delete configuration").click()
    await expect(page.get_by_text("Telephony configuration deleted.")).to_be_visible()
    await expect(page.get_by_role("row").filter(has_text="beta.cloudonix.net")).to_have_count(0)


async def test_a_new_api_key_is_shown_once_and_copies(
    page: Page, store: Store, tenant: Tenant
) -> None:
    await sign_in(page, store, tenant)
    await page.goto("/agents")
    await shot(page, "agents", full_page=False)
    await page.get_by_role("link", name="Users & API keys").click()
    await page.get_by_label("Name", exact=True).fill("deploy")
    await page.get_by_role("button", name="Create key").click()
    key = (await page.locator("#new-key-value").text_content() or "").strip()
    assert key.startswith("ask_")
    await page.get_by_role("button", name="Copy key").click()
    await expect(page.locator("#toast")).to_have_text("API key copied")
    assert await clipboard(page) == key
    assert await store.user_for_api_key(key) is not None
    await page.reload()  # shows the users page: the form is not posted again
    await expect(page.get_by_text("shown only this once")).to_have_count(0)
    assert key not in await page.content()
    assert [k.key.name for k in await store.list_api_keys(tenant.org_id)].count("deploy") == 1
    await shot(page, "users")


# -- Talk to this agent ---------------------------------------------------------------------------

# A call through the browser's microphone waits on speech, not on the page: the agent's
# greeting alone is five seconds, and a loaded two-core machine is slower still.
CALL_TIMEOUT_MS = 60_000


async def caller_wav(path: Path, text: str) -> Path:
    """`text` in OUR espeak (the caller's voice of the CLI test call), 16 kHz 16-bit mono,
    after a second of silence and followed by three: what Chromium's fake microphone plays."""
    pcm = await EspeakSynthesizer(sample_rate=16000).synthesize(text, voice="en-us+m3", rate=160)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(bytes(32000) + pcm + bytes(96000))
    return path


async def test_talk_to_this_agent_from_the_microphone(
    client: TestClient, store: Store, tenant: Tenant, tmp_path: Path
) -> None:
    wav = await caller_wav(tmp_path / "caller-yes.wav", "yes")
    microphone = [
        "--use-fake-ui-for-media-stream",  # allow the microphone without a prompt
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",  # say "yes" once, then silence
        "--autoplay-policy=no-user-gesture-required",
    ]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + microphone, headless=True
        )
        context = await browser.new_context(
            base_url=str(client.make_url("")).rstrip("/"), permissions=["microphone"],
            viewport={"width": 1280, "height": 860},
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        sent: list[str | bytes] = []  # what the page sent on its call socket

        def record(payload: str | bytes) -> None:
            sent.append(payload)

        page.on("websocket", lambda ws: ws.on("framesent", record))
        try:
            await sign_in(page, store, tenant)
            await page.get_by_role("link", name=tenant.workflow.name).click()
            await page.get_by_role("button", name="Talk to this agent").click()
            panel = page.locator("section#talk")
            state = panel.get_by_role("status")
            lines = panel.get_by_role("list", name="Live transcript")
            await expect(lines).to_contain_text("Would you like to book an appointment?",
                                                timeout=CALL_TIMEOUT_MS)
            await expect(panel.get_by_role("meter", name="Microphone")).to_be_visible()
            # the fake microphone says "yes": the agent goes on to the booking node
            await expect(lines).to_contain_text("You yes", timeout=CALL_TIMEOUT_MS)
            await expect(lines).to_contain_text("Agent Great. Which day suits you?",
                                                timeout=CALL_TIMEOUT_MS)
            await expect(state).to_have_text("Connected: speak now")
            await shot(page, "talk-to-this-agent", full_page=False)
            # the page's playback reached the end of that line: it echoes its mark
            await eventually(lambda: '{"event":"mark","name":"utt-2"}' in sent, timeout=30)
            assert sent[0].startswith('{"event":"start","token":')
            audio = [frame for frame in sent if isinstance(frame, bytes)]
            assert len(audio) > 100 and {len(frame) for frame in audio} == {640}

            await panel.get_by_role("button", name="Mute").click()
            await expect(state).to_have_text("Muted: the agent hears silence")
            await panel.get_by_role("button", name="Hang up").click()
            await expect(state).to_have_text("Call ended", timeout=CALL_TIMEOUT_MS)
            run = await finished_run(store, tenant)
            assert (run.state, run.end_reason, run.call_type, run.mode) == (
                "completed", "caller_hangup", "web", "web")
            said = [(line.role, line.text, line.interrupted) for line in run.transcript]
            assert said[1:] == [("caller", "yes", False),
                                ("agent", "Great. Which day suits you?", False)]

            await panel.get_by_role("link", name="See this call in Runs").click()
            row = page.get_by_role("row").filter(has_text=run.name)
            await expect(row).to_contain_text("Completed")
            await row.get_by_role("link", name=run.name).click()
            await expect(page.locator("audio#recording")).to_be_visible()
        finally:
            await context.close()
            await browser.close()
