"""`python app.py call`: a test call from the command line, no phone and no internet.

The real app is served on a loopback port with a stand-in for the Cloudonix REST API
(it accepts the session and records hang-ups and transfers); the call simulator speaks
espeak-synthesized caller audio through the real socket, turn by turn, and the
conversation is printed from the run's transcript.
"""
from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp
from aiohttp import web

from .config import Settings
from .keys import STORE
from .models import Run
from .simulator import SimulatedCall, connect, pcm16_to_ulaw, silence_ulaw, stream_url
from .speech.tts import EspeakSynthesizer
from .store import Store

CALLER_VOICE = "en-us+m3"
QUIET_SECONDS = 0.8  # the agent has finished its turn after this long without audio


@dataclass
class LoopbackCloudonix:
    """Answers the three Cloudonix calls an agent makes, for any token and session."""

    actions: list[str] = field(default_factory=list)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/customers/self/domains/{domain}/sessions/{session}", self._ok)
        app.router.add_delete("/customers/self/domains/{domain}/sessions/{session}", self._hangup)
        app.router.add_post("/calls/{domain}/sessions/{session}/application", self._transfer)
        return app

    async def _ok(self, request: web.Request) -> web.Response:
        return web.json_response({"token": request.match_info["session"]})

    async def _hangup(self, request: web.Request) -> web.Response:
        self.actions.append("hangup")
        return web.Response(status=204)

    async def _transfer(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.actions.append(f"transfer {body.get('cxml', '')}")
        return web.json_response({"ok": True})


@dataclass(frozen=True)
class Step:
    kind: str  # "say" or "dtmf"
    value: str


async def wait_for_agent_turn(call: SimulatedCall, *, timeout: float = 20.0) -> None:
    """Until the agent has spoken (a new mark) and gone quiet, or hung up."""
    marks = len(call.marks)
    deadline = time.monotonic() + timeout
    last_media = len(call.received)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and not call.ws.closed:
        await asyncio.sleep(0.05)
        if len(call.received) != last_media:
            last_media, quiet_since = len(call.received), time.monotonic()
        if len(call.marks) > marks and time.monotonic() - quiet_since > QUIET_SECONDS:
            return


async def speak(call: SimulatedCall, voice: EspeakSynthesizer, text: str) -> None:
    """Caller speech in real time, then the silence that ends the turn."""
    pcm = await voice.synthesize(text, voice=CALLER_VOICE, rate=160)
    with contextlib.suppress(aiohttp.ClientConnectionResetError):
        await call.send_audio(pcm16_to_ulaw(pcm))
        await call.send_audio(silence_ulaw(QUIET_SECONDS))


async def run_test_call(settings: Settings, agent_uuid: str, steps: list[Step],
                        out: Path | None) -> int:
    """Place the call, print the conversation; returns a process exit code."""
    loopback = LoopbackCloudonix()
    provider = web.AppRunner(loopback.make_app(), access_log=None)
    await provider.setup()
    provider_site = web.TCPSite(provider, "127.0.0.1", 0)
    await provider_site.start()
    provider_url = _site_url(provider_site)
    from .server import create_app, runner_options  # imports pipecat: only when a call is placed

    # Not the server of this database: a live one may be serving calls from it right now.
    app_settings = replace(
        settings, api_base_urls={"cloudonix": provider_url}, recover_at_start=False
    )
    app = create_app(app_settings)
    runner = web.AppRunner(app, **(runner_options(app_settings) | {"access_log": None}))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        store = app[STORE]
        workflow = await store.find_stream_workflow(agent_uuid)
        if workflow is None:
            print(f"error: no agent {agent_uuid[:8]}… in {settings.db_path}")
            return 1
        configs = await store.list_telephony_configs(workflow.organization_id)
        cloudonix = [c for c in configs if c.provider == "cloudonix"]
        if not cloudonix:
            print("error: add a Cloudonix telephony configuration first; the test call uses its domain")
            return 1
        domain = cloudonix[0].account_id
        call_id = f"testcall-{secrets.token_hex(8)}"  # finds this call's run, no other
        async with aiohttp.ClientSession() as http:
            call = await connect(http, stream_url(_site_url(site), agent_uuid, domain=domain,
                                                  call_id=call_id, caller="+15555550100",
                                                  called="+15555550199"))
            call.account_sid = domain
            call.start_reading()
            await call.handshake()
            voice = EspeakSynthesizer()
            await wait_for_agent_turn(call)
            for step in steps:
                if call.ws.closed:
                    break
                if step.kind == "dtmf":
                    await call.press(step.value)
                else:
                    await speak(call, voice, step.value)
                await wait_for_agent_turn(call)
            if not call.ws.closed:
                await call.hang_up()
            code, reason = await call.wait_closed(timeout=15)
        run = await _finished_run(store, workflow.id, call_id)
        if run is None:
            print("error: the call made no run (see the close code above)")
            print(f"close {code} {reason!r}")
            return 1
        _print_run(run, code, reason, loopback.actions)
        if out is not None and run.recording_path:
            shutil.copyfile(run.recording_path, out)
            print(f"recording (caller left, agent right): {out}")
        return 0 if run.state == "completed" else 1
    finally:
        await runner.cleanup()
        await provider.cleanup()


def _site_url(site: web.TCPSite) -> str:
    server = site._server  # the bound port of an ephemeral site
    assert isinstance(server, asyncio.Server) and server.sockets
    host, port = server.sockets[0].getsockname()[:2]
    return f"http://{host}:{port}"


async def _finished_run(store: Store, workflow_id: int, call_id: str) -> Run | None:
    """This call's run once it has ended (runs end just after the socket closes)."""
    run = None
    for _ in range(200):
        run = await store.find_run_by_call_id(workflow_id, call_id)
        if run is not None and run.state in ("completed", "failed"):
            return run
        await asyncio.sleep(0.05)
    return run


def _print_run(run: Run, code: int | None, reason: str, actions: list[str]) -> None:
    print(f"{run.name}: {run.state}, {run.end_reason} (close {code} {reason!r}), "
          f"{run.duration_seconds or 0:.1f} s")
    for line in run.transcript:
        who = "agent " if line.role == "agent" else "caller"
        cut = "  [interrupted]" if line.interrupted else ""
        print(f"  {line.start_ms / 1000:6.1f}s  {who}  {line.text}{cut}")
    for action in actions:
        print(f"  provider: {action}")
    if run.error:
        print(f"  error: {run.error}")


def parse_steps(raw: list[tuple[str, str]] | None) -> list[Step]:
    return [Step(kind, value) for kind, value in raw or []]

