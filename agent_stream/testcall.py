"""`python app.py call`: a test call from the command line, no phone and no internet.

The real app is served on a loopback port; the provider's REST API is played by a
loopback stand-in that accepts every call and records what the agent asked of it. The
call simulator speaks the chosen provider's framing, with espeak-synthesized caller audio,
through the real socket, turn by turn, and the conversation is printed from the run's
transcript. The organization's configuration of that provider is used when it has one;
otherwise a stand-in configuration that exists only in this process. Nothing is written
but the call's own run: the CLI is not the server of the database.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_plus

import aiohttp
from aiohttp import web

from . import call_tokens
from .calls.selection import StoredConfigs
from .config import Settings
from .keys import CONFIG_SOURCE, RECORDINGS, STORE
from .models import Run, TelephonyConfig, Workflow
from .providers import DEFAULT_PROVIDER, PROVIDERS, provider_named
from .providers.base import CONFIG_PARAMETER, Provider
from .recordings import RecordingFile
from .security import hash_session_token
from .simulator import SimulatedCall, connect, pcm16_to_ulaw, silence_ulaw, stream_url
from .speech.tts import EspeakSynthesizer
from .store import Store, utcnow

CALLER_VOICE = "en-us+m3"
# How long a browser test call's sign-in may last (it is deleted when the call ends).
SIGN_IN_SECONDS = 300
QUIET_SECONDS = 0.8  # the agent has finished its turn after this long without audio


@dataclass
class LoopbackProviderApi:
    """Answers whatever a provider's REST API is asked: every call is live (in the words of
    the provider's `live_call_answer`), every action done."""

    live_call_answer: Mapping[str, Any]
    actions: list[str] = field(default_factory=list)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._answer)
        return app

    async def _answer(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            return web.json_response(dict(self.live_call_answer))
        body = await request.text()
        if request.content_type == "application/x-www-form-urlencoded":
            body = unquote_plus(body)
        self.actions.append(f"{request.method} {unquote(request.path_qs)} {body}".rstrip())
        return web.json_response({"ok": True})


@dataclass(frozen=True)
class StandInConfigs:
    """The stored configurations and, where the organization has none of the provider, a
    stand-in that exists only in this process (so a test call needs no account at all).
    A stored configuration that names its own API URL (Asterisk's ARI) is pointed at the
    loopback stand-in too: a test call never reaches a real PBX."""

    store: Callable[[], Store]
    stand_in: TelephonyConfig
    api_url_field: str | None = None

    async def configs(
        self, organization_id: int, provider: str, *, account_id: str | None = None
    ) -> list[TelephonyConfig]:
        stored = await StoredConfigs(self.store()).configs(
            organization_id, provider, account_id=account_id
        )
        if self.api_url_field and provider == self.stand_in.provider:
            loopback = {self.api_url_field: self.stand_in.fields[self.api_url_field]}
            stored = [replace(config, fields={**config.fields, **loopback}) for config in stored]
        if stored or provider != self.stand_in.provider:
            return stored
        if account_id not in (None, self.stand_in.account_id):
            return []
        return [replace(self.stand_in, organization_id=organization_id)]


def stand_in_config(provider: Provider, api_base_url: str) -> TelephonyConfig:
    """A configuration of `provider` for a test call: its stand-in account (and whatever
    else points it at the loopback API at `api_base_url`), dummy secrets."""
    fields = provider.stand_in_fields(api_base_url)
    now = utcnow()
    return TelephonyConfig(0, 0, provider.name, "test call (stand-in)", provider.stand_in_account,
                           fields, provider.stand_in_secrets(), [], now, now)


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
                        out: Path | None, provider_name: str | None = None) -> int:
    """Place the call, print the conversation; returns a process exit code."""
    provider_name = provider_name or DEFAULT_PROVIDER
    provider = provider_named(provider_name)
    if provider is None:
        print(f"error: no provider {provider_name!r}; one of: {', '.join(PROVIDERS)}")
        return 2
    loopback = LoopbackProviderApi(provider.live_call_answer)
    provider_api = web.AppRunner(loopback.make_app(), access_log=None)
    await provider_api.setup()
    provider_site = web.TCPSite(provider_api, "127.0.0.1", 0)
    await provider_site.start()
    from .server import create_app, runner_options  # imports pipecat: only when a call is placed

    # Not the server of this database: a live one may be serving calls from it right now.
    app_settings = replace(
        settings, api_base_urls={provider.name: _site_url(provider_site)}, recover_at_start=False,
        instance_name=f"{socket.gethostname()}:call:{os.getpid()}",
    )
    app = create_app(app_settings)
    stand_in = stand_in_config(provider, _site_url(provider_site))
    app[CONFIG_SOURCE] = StandInConfigs(lambda: app[STORE], stand_in, provider.api_url_field)
    runner = web.AppRunner(app, **(runner_options(app_settings) | {"access_log": None}))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    credentials: dict[str, str] = {}
    try:
        store = app[STORE]
        workflow = await store.find_stream_workflow(agent_uuid)
        if workflow is None:
            print(f"error: no agent {agent_uuid[:8]}… in {store.description}")
            return 1
        stored = await store.find_telephony_configs(workflow.organization_id, provider.name)
        config = stored[0] if stored else stand_in
        call_id = str(uuidlib.uuid4())  # finds this call's run, no other
        credentials = {**config.fields, **config.secrets}
        if not provider.needs_configuration:  # the browser's call: the owner signs in
            credentials, call_id = await _signed_in(store, workflow, settings.public_url
                                                    or _site_url(site))
        url = stream_url(_site_url(site), agent_uuid, provider=provider.name, newer_form=True)
        async with aiohttp.ClientSession() as http:
            call = await connect(
                http, url, provider=provider.name, secrets=credentials,
                account_sid=config.account_id, call_sid=call_id, caller="+15555550100",
                called="+15555550199",
                custom_parameters={CONFIG_PARAMETER: str(config.id)} if stored else None,
            )
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
        recording = None
        if out is not None and run.recording_path:
            recording = await app[RECORDINGS].open(run.recording_path)
        if out is not None and recording is not None:
            if isinstance(recording, RecordingFile):
                await asyncio.to_thread(shutil.copyfile, recording.path, out)
            else:
                await asyncio.to_thread(out.write_bytes, recording.data)
            print(f"recording (caller left, agent right): {out}")
        return 0 if run.state == "completed" else 1
    finally:
        if "session" in credentials:  # the browser call's sign-in ends with it
            await app[STORE].delete_session(hash_session_token(credentials["session"]))
        await runner.cleanup()
        await provider_api.cleanup()


async def _signed_in(store: Store, workflow: Workflow, origin: str) -> tuple[dict[str, str], str]:
    """What the admin's page holds for a browser test call by the agent's owner: a session
    of a few minutes (deleted after the call) and a call token. Returns the browser's end's
    secrets and the call's id."""
    session = await store.create_session(workflow.owner_user_id, seconds=SIGN_IN_SECONDS)
    token, call_id = await call_tokens.mint(store, agent_uuid=workflow.uuid, user_id=workflow.owner_user_id)
    return {"session": session, "token": token, "origin": origin}, call_id


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
        print(f"  provider API: {action}")
    if run.error:
        print(f"  error: {run.error}")


def parse_steps(raw: list[tuple[str, str]] | None) -> list[Step]:
    return [Step(kind, value) for kind, value in raw or []]

