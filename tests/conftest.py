"""Shared fixtures: the real app on a temp SQLite file or this session's own PostgreSQL
database (every test that takes `settings` runs on both), a Cloudonix emulator, seeded orgs."""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent_stream.config import Settings
from agent_stream.keys import STORE
from agent_stream.models import ConfigInput, Run, User, Workflow
from agent_stream.server import create_app, runner_options, server_event_loop
from agent_stream.simulator import SimulatedCall, connect, pcm16_to_ulaw, silence_ulaw, stream_url, tone_ulaw
from agent_stream.speech.tts import EspeakSynthesizer
from agent_stream.store import Store, open_store
from agent_stream.workflow import starter_definition
from tests.cloudonix_emulator import CloudonixEmulator, start_emulator

# Where the PostgreSQL runs of the suite make their own database (trust auth on CI).
POSTGRES_ADMIN_URL = os.environ.get(
    "AGENT_STREAM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
# Set by .ci/run: a PostgreSQL that does not answer fails the run instead of skipping.
POSTGRES_REQUIRED = os.environ.get("AGENT_STREAM_TEST_REQUIRE_POSTGRES") == "1"
# The PostgreSQL database outlives each test, so its secrets use one key for the session.
POSTGRES_SECRET_KEY = "b3V0LW9mLWJhbmQtdGVzdC1rZXktMzItYnl0ZXMhISE="
BACKENDS = ("sqlite", "postgresql")

TOKEN = "cx-bearer-SECRET-token-0123456789abcdef"
DOMAIN = "acme.cloudonix.net"


@dataclass
class Tenant:
    """One organization with a user, an API key, an agent and a Cloudonix configuration."""

    org_id: int
    user_id: int
    api_key: str
    workflow: Workflow
    domain: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@pytest.fixture
def non_utf8_headers(monkeypatch: pytest.MonkeyPatch) -> str:
    """Lets this test's client send header bytes that are not UTF-8, as a broken or hostile
    client may: the character returned ("\\udcff", how aiohttp's server reads the byte 0xff)
    goes out as that byte. Only the client's writing of request heads changes."""

    def serialize(status_line: str, headers: Any) -> bytes:
        lines = [status_line, *(f"{name}: {value}" for name, value in headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")

    monkeypatch.setattr(aiohttp.http_writer, "_serialize_headers", serialize)
    return "\udcff"


@pytest.fixture
async def cloudonix(aiohttp_server: Any) -> tuple[CloudonixEmulator, str]:
    return await start_emulator(aiohttp_server)


@pytest.fixture
def emulator(cloudonix: tuple[CloudonixEmulator, str]) -> CloudonixEmulator:
    return cloudonix[0]


def _url_of(database: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


@pytest.fixture(scope="session")
def postgres_database(worker_id: str) -> Iterator[str]:
    """This test session's own PostgreSQL database (one per xdist worker), dropped at the
    end; the tests of the session start from its tables emptied (`database_url`)."""
    name = f"agent_stream_test_{worker_id}_{uuid.uuid4().hex[:8]}"

    async def run(statement: str) -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    def admin(statement: str) -> None:
        # on a thread of its own: the first test to ask may be inside its event loop
        with concurrent.futures.ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, run(statement)).result()

    try:
        admin(f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL} does not answer: {exc}"
        if POSTGRES_REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    yield _url_of(name)
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Which database the test's app runs on."""
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None for SQLite; for PostgreSQL the session's database with every table emptied
    (ids starting at 1 again), as a new SQLite file would be."""
    if backend == "sqlite":
        return None
    url = str(request.getfixturevalue("postgres_database"))
    await empty_tables(url)
    return url


async def empty_tables(url: str) -> None:
    """Every table of the PostgreSQL database at `url` emptied, its ids starting at 1 again
    (the schema and its migrations stay)."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        tables = [r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename != 'schema_migrations'")]
        if tables:
            await conn.execute(
                "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `sqlite_only` (they open the SQLite file itself: its lock, a full disk,
    its bytes on disk) run on SQLite alone; `postgresql_only` ones on PostgreSQL alone."""
    items[:] = [
        item for item in items
        if not (item.get_closest_marker("sqlite_only") and "[postgresql" in item.name)
        and not (item.get_closest_marker("postgresql_only") and "[sqlite" in item.name)
    ]


@pytest.fixture
def settings(
    tmp_path: Path, cloudonix: tuple[CloudonixEmulator, str], database_url: str | None
) -> Settings:
    return Settings(
        db_path=tmp_path / "agent_stream.db",
        db_url=database_url,
        db_pool_sizes=(1, 5),  # several apps of several test processes on one server
        secret_key=POSTGRES_SECRET_KEY if database_url else None,
        api_base_urls={"cloudonix": cloudonix[1]},
        handshake_timeout=2.0,
        provider_api_timeout=1.0,
        webhooks_allow_private=True,  # the tests' webhook receivers listen on 127.0.0.1
        # Four test processes keep two cores busy: a decoder at idle priority could wait
        # past its timeout there (the default's own test: test_voice_agent.py).
        decoder_priority="normal",
    )


ServeApp = Callable[[Settings], Awaitable[TestClient]]


@pytest.fixture
def serve_app(aiohttp_client: Any) -> ServeApp:
    """Serve the real app with the options production serves it with (runner_options)."""

    async def serve(app_settings: Settings) -> TestClient:
        server = TestServer(create_app(app_settings))
        await server.start_server(**runner_options(app_settings))
        return await aiohttp_client(server)

    return serve


@pytest.fixture
async def client(serve_app: ServeApp, settings: Settings) -> TestClient:
    """The real app on a temp database, served like production."""
    return await serve_app(settings)


@pytest.fixture
def store(client: TestClient) -> Store:
    return client.app[STORE]


async def add_cloudonix_config(
    store: Store, organization_id: int, *, domain: str, token: str, name: str = "main"
) -> Any:
    """A Cloudonix configuration for `domain` (normalized), stored as the API stores it."""
    return await store.create_telephony_config(organization_id, "cloudonix", ConfigInput(
        name=name, account_id=domain, fields={"domain_id": domain},
        secrets={"bearer_token": token} if token else {},
    ), one_per_account=True)


MakeTenant = Callable[..., Awaitable[Tenant]]


async def create_tenant(
    store: Store, emulator: CloudonixEmulator, n: int = 1, *, name: str | None = None,
    domain: str = DOMAIN, token: str = TOKEN, definition: dict[str, Any] | None = None,
    **quota: Any,
) -> Tenant:
    """An organization with everything a call needs (its agent saying `definition`, the
    starter by default); the emulator knows its domain. `n` tells tenants of one database
    apart."""
    org = await store.get_or_create_organization(name or f"Org {n}")
    user = await store.create_user(
        organization_id=org.id, email=f"user{n}@example.com", password="pw", **quota
    )
    _, api_key = await store.create_api_key(user.id, "tests")
    workflow = await store.create_workflow(
        organization_id=org.id, owner_user_id=user.id, name=f"Agent {n}",
        definition=definition or starter_definition(),
    )
    await add_cloudonix_config(store, org.id, domain=domain, token=token)
    emulator.add_domain(domain, token)
    return Tenant(org.id, user.id, api_key, workflow, domain, token)


@pytest.fixture
def make_tenant(store: Store, emulator: CloudonixEmulator) -> MakeTenant:
    """`create_tenant` on the test's database, a new tenant each time."""
    counter = iter(range(1, 1000))

    async def make(**options: Any) -> Tenant:
        return await create_tenant(store, emulator, next(counter), **options)

    return make


@pytest.fixture
async def tenant(make_tenant: MakeTenant) -> Tenant:
    return await make_tenant()


Dial = Callable[..., Awaitable[SimulatedCall]]


async def open_call(
    http: aiohttp.ClientSession,
    base_url: str,
    emulator: CloudonixEmulator,
    agent_uuid: str,
    *,
    domain: str | None = "acme",
    provider: str | None = "cloudonix",
    newer_form: bool = False,
    live_session: bool = True,
    session_domain: str = DOMAIN,
    **url: Any,
) -> SimulatedCall:
    """Open an Agent Stream socket of the server at `base_url` like Cloudonix would; the
    session is live by default."""
    target = stream_url(base_url, agent_uuid, provider=provider, domain=domain,
                        newer_form=newer_form, **url)
    call = await connect(http, target)
    call.account_sid = session_domain  # Cloudonix puts the domain in accountSid
    if live_session:
        emulator.add_session(session_domain, call.session)
    return call


@pytest.fixture
def dial(client: TestClient, emulator: CloudonixEmulator) -> Dial:
    """`open_call` to the test's server, with the numbers and call id of the query form."""

    async def dial_agent(agent_uuid: str, **options: Any) -> SimulatedCall:
        url = {"call_id": "C-1", "caller": "+15555550100", "called": "+15555550199"}
        return await open_call(client.session, str(client.make_url("/")), emulator, agent_uuid,
                               **(url | options))

    return dial_agent


async def stored_bytes(settings: Settings) -> bytes:
    """Everything the database holds, as bytes: the SQLite files, or every PostgreSQL row
    as text (what a stolen disk or dump would show)."""
    if settings.db_url is None:
        return database_bytes(settings.db_path)
    conn = await asyncpg.connect(settings.db_url, timeout=5)
    try:
        tables = [r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        rows = [await conn.fetch(f'SELECT t::text FROM "{table}" t') for table in tables]
    finally:
        await conn.close()
    return "\n".join(r[0] for table_rows in rows for r in table_rows).encode()


async def agent_over_api(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str], *, domain: str,
    definition: dict[str, Any] | None = None,
) -> str:
    """Through a served process's API, as an operator would: a Cloudonix configuration of
    `domain` and an agent (`definition`, else the starter); the agent's uuid."""
    async with http.post(f"{base}/api/v1/telephony-configurations", headers=headers,
                         json={"provider": "cloudonix", "domain_id": domain,
                               "bearer_token": TOKEN}) as response:
        assert response.status == 201, await response.text()
    body: dict[str, Any] = {"name": "Front desk"}
    if definition is not None:
        body["definition"] = definition
    async with http.post(f"{base}/api/v1/workflows", headers=headers, json=body) as response:
        assert response.status == 201, await response.text()
        return str((await response.json())["uuid"])


async def stored_rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    """Rows read straight from the database of `settings`, past the store."""
    if settings.db_url is None:
        def read() -> list[tuple[Any, ...]]:
            with contextlib.closing(sqlite3.connect(settings.db_path)) as db:
                return [tuple(r) for r in db.execute(sql)]
        return await asyncio.to_thread(read)
    conn = await asyncpg.connect(settings.db_url, timeout=5)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def database_bytes(db_path: Path) -> bytes:
    """Everything SQLite keeps of the database on disk (the file, its WAL and shared memory):
    what a copy of the database would reveal."""
    return b"".join(p.read_bytes() for p in sorted(db_path.parent.glob(db_path.name + "*")))


async def answered(dial: Dial, agent_uuid: str, **options: Any) -> SimulatedCall:
    """A call to the agent, its replies being read, past its handshake."""
    call = await dial(agent_uuid, **options)
    call.start_reading()
    await call.handshake()
    return call


# The states of a run that has ended.
ENDED = ("completed", "failed")


async def short_call(dial: Dial, tenant: Tenant) -> tuple[int | None, str]:
    """Connect, handshake, a little audio, hang up: the close code and reason we got."""
    call = await answered(dial, tenant.workflow.uuid)
    await call.send_audio(tone_ulaw(0.2), realtime=False)
    await call.hang_up()
    return await call.wait_closed(timeout=30)


async def wait_for_state(store: Store, run_id: int, *states: str, timeout: float = 5.0) -> Any:
    """Poll the database until the run reaches one of `states` (runs finish after close)."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        run = await store.get_run_by_id(run_id)
        if run.state in states or asyncio.get_running_loop().time() > deadline:
            return run
        await asyncio.sleep(0.02)


async def latest_run_id(store: Store, org_id: int, *, wait: float = 0.0) -> int | None:
    """The newest run's id, polling up to `wait` seconds for one to appear."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + wait
    while True:
        runs, _ = await store.list_runs(org_id, limit=1)
        if runs or asyncio.get_running_loop().time() >= deadline:
            return runs[0].id if runs else None
        await asyncio.sleep(0.02)


# -- helpers for tests that place calls ------------------------------------------------------


@pytest.fixture(scope="session")
def caller_voice() -> EspeakSynthesizer:
    """The caller's side speaks with espeak too (a different voice from the agent's)."""
    return EspeakSynthesizer(sample_rate=8000)


async def say(call: SimulatedCall, voice: EspeakSynthesizer, text: str) -> None:
    """Speak `text` into the call in real time, then enough silence to end the turn."""
    pcm = await voice.synthesize(text, voice="en-us+m3", rate=160)
    await call.send_audio(pcm16_to_ulaw(pcm))
    with contextlib.suppress(aiohttp.ClientConnectionResetError):  # the agent may hang up
        await call.send_audio(silence_ulaw(0.8))


async def until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait for something the server sends, sending nothing meanwhile."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the agent")
        await asyncio.sleep(0.02)


async def keep_line_open(call: SimulatedCall, seconds: float) -> None:
    """A phone line sends (silent) media all the time, until it is hung up."""
    with contextlib.suppress(aiohttp.ClientConnectionResetError):
        await call.send_audio(silence_ulaw(seconds))


async def wait_for_handshake(store: Store, run_id: int, timeout: float = 10.0) -> Any:
    """The run once its call is past the handshake (running, the start event recorded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        run = await store.get_run_by_id(run_id)
        if run.state == "running" and "cloudonix_stream_sid" in run.gathered_context:
            return run
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run {run.name} is {run.state}, not past its handshake")
        await asyncio.sleep(0.02)


async def handshake_done(store: Store, tenant: Tenant) -> Any:
    """The tenant's newest run once its call is past the handshake."""
    run_id = await latest_run_id(store, tenant.org_id, wait=5)
    assert run_id is not None, "no run was created"
    return await wait_for_handshake(store, run_id)


async def finished_run(store: Store, tenant: Tenant | Any) -> Any:
    """The newest run of the tenant's organization (`org_id`: any tenant-like object) once
    it has ended (runs finish just after the close)."""
    run_id = await latest_run_id(store, tenant.org_id, wait=5)
    assert run_id is not None, "no run was created"
    return await wait_for_state(store, run_id, *ENDED, timeout=20)


def spawned_children(pid: int) -> set[int]:
    """Child processes that multiprocessing spawned: the speech decoder, not its resource
    tracker."""
    return {
        int(child)
        for children in Path(f"/proc/{pid}/task").glob("*/children")
        for child in children.read_text().split()
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    }


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests run on the event loop the server runs on (uvloop where it installs)."""
    return {"server_loop": server_event_loop}


def pytest_configure(config: pytest.Config) -> None:
    """pipecat logs through loguru at DEBUG by default; keep test output to warnings."""
    import sys

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


@dataclass
class Crash:
    """The database and recordings folder a killed server left: runs it never finished."""

    store: Store
    owner: User
    workflow: Workflow
    recordings: Path

    async def open_run(self, *, running: bool = True) -> Run:
        """A run the killed server had started (and marked running, unless not `running`)."""
        run = await self.store.start_run(self.workflow, self.owner, mode="cloudonix",
                                         initial_context={}, gathered_context={}, logs={})
        if running:
            await self.store.mark_run_running(run.id)
        return run

    def tracks(self, run_id: int, *, caller: bytes | None, agent: bytes | None) -> None:
        """The raw files a recorder was streaming to when the process died."""
        if caller is not None:
            (self.recordings / f"{run_id}.caller.pcm").write_bytes(caller)
        if agent is not None:
            (self.recordings / f"{run_id}.agent.pcm").write_bytes(agent)


@pytest.fixture
async def crash(settings: Settings) -> Crash:
    """A database of `settings` with an organization, an owner and an agent, opened as the
    killed server had it; close `crash.store` to play the crash."""
    store = await open_store(settings, instance_id=settings.instance_id)
    org = await store.get_or_create_organization("Crashed")
    user = await store.create_user(organization_id=org.id, email="c@example.com", password="pw")
    workflow = await store.create_workflow(
        organization_id=org.id, owner_user_id=user.id, name="C", definition={"nodes": []})
    settings.recordings_dir.mkdir(parents=True, exist_ok=True)
    return Crash(store, await store.get_user(user.id), workflow, settings.recordings_dir)
