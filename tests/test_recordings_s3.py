"""Recordings in an S3 bucket (moto's S3 server on a loopback port): a call's finished WAV
lands in the bucket, any instance on the database serves it, a bucket that refuses costs
the recording and never the call, and the next start stores what a refusal or a crash left."""
from __future__ import annotations

import array
import asyncio
import dataclasses
import io
import logging
import socket
import uuid
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session
from aiohttp import web
from aiohttp.test_utils import TestClient
from moto.server import ThreadedMotoServer

from agent_stream.audio import ulaw_to_pcm16
from agent_stream.calls import call as call_module
from agent_stream.calls import run_writes
from agent_stream.config import Settings
from agent_stream.keys import STORE
from agent_stream.recordings.location import LocalLocation, S3Location, parse_location
from agent_stream.simulator import tone_ulaw
from agent_stream.store import Store
from tests.admin_fixtures import Operator, operator
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import Crash, Dial, ServeApp, Tenant, answered, finished_run, open_call

__all__ = ["operator"]  # fixtures

PREFIX = "calls/2026"
TONE_SECONDS = 0.5  # what the caller sends: 25 frames of 20 ms at 8 kHz


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in this process, on a free loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, tmp_path: Path) -> str:
    """What an operator sets for a MinIO-like store; nothing from this machine's AWS setup."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION",
                 "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3_endpoint


class Bucket:
    """A bucket of the S3 server, read as a person checking it would."""

    def __init__(self, endpoint: str, name: str) -> None:
        self.endpoint = endpoint
        self.name = name

    def _client(self) -> Any:
        return get_session().create_client("s3", region_name="us-east-1",
                                           endpoint_url=self.endpoint)

    async def create(self) -> None:
        async with self._client() as s3:
            await s3.create_bucket(Bucket=self.name)

    async def keys(self) -> list[str]:
        async with self._client() as s3:
            listing = await s3.list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    async def get(self, key: str) -> bytes:
        async with self._client() as s3:
            answer = await s3.get_object(Bucket=self.name, Key=key)
            async with answer["Body"] as body:
                data: bytes = await body.read()
        return data

    async def delete(self, key: str) -> None:
        async with self._client() as s3:
            await s3.delete_object(Bucket=self.name, Key=key)


@pytest.fixture
async def bucket(aws_env: str) -> Bucket:
    """A new bucket for each test (moto's state lives as long as the process)."""
    made = Bucket(aws_env, f"recordings-{uuid.uuid4().hex[:12]}")
    await made.create()
    return made


@pytest.fixture
def settings(settings: Settings, bucket: Bucket) -> Settings:
    """The app of every fixture (client, dial, tenant, crash) records to the bucket."""
    return dataclasses.replace(settings, recordings=f"s3://{bucket.name}/{PREFIX}/")


def stereo(wav_bytes: bytes) -> tuple[bytes, bytes, int]:
    """The left and right channels of a recorder's WAV and its rate, after its format."""
    with wave.open(io.BytesIO(wav_bytes)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (2, 2)
        frames = array.array("h", wav.readframes(wav.getnframes()))
        rate = wav.getframerate()
    return frames[0::2].tobytes(), frames[1::2].tobytes(), rate


async def tone_call(dial: Dial, tenant: Tenant) -> tuple[int | None, str]:
    call = await answered(dial, tenant.workflow.uuid)
    await call.send_audio(tone_ulaw(TONE_SECONDS), realtime=False)
    await call.hang_up()
    return await call.wait_closed(timeout=30)


def spooled(settings: Settings) -> list[str]:
    """What the spool folder holds (raw tracks of calls not stored yet)."""
    directory = settings.recordings_dir
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def test_a_calls_wav_lands_in_the_bucket_and_every_instance_serves_it(
    dial: Dial, tenant: Tenant, store: Store, settings: Settings, bucket: Bucket,
    client: TestClient, serve_app: ServeApp, operator: Operator, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent_stream")
    assert await tone_call(dial, tenant) == (1000, "call ended")
    run = await finished_run(store, tenant)
    key = f"{PREFIX}/{run.id}.wav"
    assert (run.state, run.recording_path) == ("completed", f"s3://{bucket.name}/{key}")
    assert "recording_error" not in run.logs
    assert await bucket.keys() == [key]
    stored = await bucket.get(key)
    left, right, rate = stereo(stored)
    assert rate == 8000
    caller = ulaw_to_pcm16(tone_ulaw(TONE_SECONDS))
    assert len(caller) == TONE_SECONDS * 8000 * 2
    assert left[: len(caller)] == caller  # the caller on the left, as sent
    assert left[len(caller):] == bytes(len(left) - len(caller))  # then silence
    assert spooled(settings) == []  # tracks and WAV gone from local disk: the bucket has it

    path = f"/api/v1/workflow-runs/{run.id}/recording"
    response = await client.get(path, headers=tenant.headers)
    assert response.status == 200
    assert response.headers["Content-Type"] == "audio/wav"
    assert await response.read() == stored
    response = await client.get(path, headers=tenant.headers | {"Range": "bytes=0-3"})
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes 0-3/{len(stored)}"
    assert await response.read() == b"RIFF"
    response = await client.get(path, headers=tenant.headers | {"Range": "bytes=-4"})
    assert (response.status, await response.read()) == (206, stored[-4:])
    for unsatisfiable in ("bytes=-0", f"bytes={len(stored)}-"):
        response = await client.get(path, headers=tenant.headers | {"Range": unsatisfiable})
        assert response.status == 416, unsatisfiable
        assert response.headers["Content-Range"] == f"bytes */{len(stored)}"
    detail = await (await client.get(f"/api/v1/workflow-runs/{run.id}", headers=tenant.headers)).json()
    assert detail["has_recording"] is True

    # the admin's player plays it from the bucket (the operator is of the tenant's organization)
    src = f"/agents/{tenant.workflow.uuid}/runs/{run.id}/recording"
    page = await operator.get(f"/agents/{tenant.workflow.uuid}/runs/{run.id}")
    assert f'<audio controls preload="metadata" src="{src}"' in page.html
    response = await operator.client.get(src, headers={"Range": "bytes=0-99"})
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes 0-99/{len(stored)}"
    assert await response.read() == stored[:100]

    # another instance on the same database and bucket serves the first call's recording
    other = await serve_app(settings)
    response = await other.get(path, headers=tenant.headers)
    assert response.status == 200
    assert await response.read() == stored
    started = f"recordings go to bucket s3://{bucket.name}/{PREFIX}/ at {bucket.endpoint}"
    assert started in caplog.text
    assert "testing-secret" not in caplog.text


async def test_a_recording_missing_from_the_bucket_is_404_and_a_dead_store_503(
    dial: Dial, tenant: Tenant, store: Store, settings: Settings, bucket: Bucket,
    client: TestClient, serve_app: ServeApp, monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert await tone_call(dial, tenant) == (1000, "call ended")
    run = await finished_run(store, tenant)
    assert run.recording_path == f"s3://{bucket.name}/{PREFIX}/{run.id}.wav"
    path = f"/api/v1/workflow-runs/{run.id}/recording"

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    unreachable = await serve_app(settings)
    response = await unreachable.get(path, headers=tenant.headers)
    assert response.status == 503
    assert "recordings store" in (await response.json())["error"]

    await bucket.delete(f"{PREFIX}/{run.id}.wav")
    response = await client.get(path, headers=tenant.headers)
    assert response.status == 404
    assert "missing" in (await response.json())["error"]


async def test_a_bucket_that_refuses_costs_the_recording_not_the_call(
    tenant: Tenant, settings: Settings, aws_env: str, emulator: CloudonixEmulator,
    serve_app: ServeApp,
) -> None:
    absent = Bucket(aws_env, f"not-made-{uuid.uuid4().hex[:12]}")
    refused = dataclasses.replace(settings, recordings=f"s3://{absent.name}/{PREFIX}")
    refusing = await serve_app(refused)
    store = refusing.app[STORE]
    assert await tone_call_into(refusing, emulator, tenant) == (1000, "call ended")

    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason, run.recording_path) == ("completed", "caller_hangup", None)
    assert run.logs["recording_error"].startswith("NoSuchBucket: ")
    # the tracks stay for the next start; the merged WAV does not
    assert spooled(refused) == [f"{run.id}.agent.pcm", f"{run.id}.caller.pcm"]
    await refusing.close()

    await absent.create()  # the operator fixes the bucket and restarts
    restarted = await serve_app(refused)
    recovered = await restarted.app[STORE].get_run_by_id(run.id)
    key = f"{PREFIX}/{run.id}.wav"
    assert recovered.recording_path == f"s3://{absent.name}/{key}"
    assert recovered.logs["recording_recovered"] is True
    left, _, _ = stereo(await absent.get(key))
    assert left.startswith(ulaw_to_pcm16(tone_ulaw(TONE_SECONDS)))
    assert spooled(refused) == []


async def test_the_start_stores_what_a_killed_call_left_in_the_bucket(
    serve_app: ServeApp, settings: Settings, crash: Crash, bucket: Bucket
) -> None:
    run = await crash.open_run()
    caller = array.array("h", [i % 2000 - 1000 for i in range(20000)]).tobytes()
    agent = array.array("h", [7 - i % 300 for i in range(12000)]).tobytes()
    crash.tracks(run.id, caller=caller, agent=agent)
    await crash.store.close()

    client = await serve_app(settings)
    recovered = await client.app[STORE].get_run_by_id(run.id)
    key = f"{PREFIX}/{run.id}.wav"
    assert (recovered.state, recovered.recording_path) == ("failed", f"s3://{bucket.name}/{key}")
    assert recovered.logs["recording_recovered_seconds"] == 2.5
    assert await bucket.keys() == [key]
    left, right, rate = stereo(await bucket.get(key))
    assert (left, right, rate) == (caller, agent + bytes(16000), 8000)
    assert list(crash.recordings.iterdir()) == []  # nothing left on local disk


def test_the_recordings_setting() -> None:
    default = Path("/data/recordings")
    assert parse_location(None, default=default) == LocalLocation(default)
    assert parse_location("/mnt/calls", default=default) == LocalLocation(Path("/mnt/calls"))
    assert parse_location("s3://calls/eu/2026/", default=default) == S3Location("calls", "eu/2026")
    assert parse_location("s3://calls", default=default) == S3Location("calls", "")
    for bad in ("s3://", "s3:///prefix", "https://calls.example.com/x"):
        with pytest.raises(ValueError):
            parse_location(bad, default=default)
    settings = Settings(db_path=Path("/srv/db/a.db"), recordings="s3://b/p")
    assert settings.recordings_location == S3Location("b", "p")
    assert settings.recordings_dir == Path("/srv/db/recordings")  # the spool stays local
    assert Settings(db_path=Path("/srv/db/a.db")).recordings_dir == Path("/srv/db/recordings")
    assert Settings(recordings="/mnt/calls").recordings_dir == Path("/mnt/calls")


async def test_a_start_whose_bucket_refuses_keeps_every_leftover_and_asks_once(
    serve_app: ServeApp, settings: Settings, crash: Crash, aws_env: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent_stream")
    runs = [await crash.open_run() for _ in range(3)]
    for run in runs:
        crash.tracks(run.id, caller=array.array("h", [5] * 800).tobytes(), agent=None)
    await crash.store.close()
    before = sorted(p.name for p in crash.recordings.iterdir())

    absent = f"not-made-{uuid.uuid4().hex[:12]}"
    client = await serve_app(dataclasses.replace(settings, recordings=f"s3://{absent}/x"))
    for run in runs:
        ended = await client.app[STORE].get_run_by_id(run.id)
        assert (ended.state, ended.recording_path) == ("failed", None)
    assert sorted(p.name for p in crash.recordings.iterdir()) == before  # all kept, no WAV
    refusals = [r.getMessage() for r in caplog.records if "not stored" in r.getMessage()]
    assert len(refusals) == 1 and "NoSuchBucket" in refusals[0]
    assert "the other leftovers wait for the next start" in caplog.text
    assert (await client.get("/api/v1/health")).status == 200


class HoldingProxy:
    """The bucket behind a slow link: S3 requests pass through to moto, but uploads (PUT)
    wait until `release()`, as a bucket that stopped answering would make them."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.held = asyncio.Event()  # an upload arrived and waits
        self.answered = False  # an upload got its answer
        self._release = asyncio.Event()

    def release(self) -> None:
        self._release.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "PUT":
            self.held.set()
            await self._release.wait()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with aiohttp.ClientSession() as http, http.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as answer:
            payload = await answer.read()
            kept = {k: v for k, v in answer.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "content-encoding",
                                         "connection", "server", "date")}
        if request.method == "PUT":
            self.answered = True
        return web.Response(status=answer.status, body=payload, headers=kept)


@pytest.fixture
async def slow_bucket(
    aws_env: str, settings: Settings, serve_app: ServeApp, aiohttp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[HoldingProxy, TestClient]:
    """An app whose bucket is behind a HoldingProxy; a call's end waits 0.2 s for it."""
    proxy = HoldingProxy(aws_env)
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", proxy.handle)
    monkeypatch.setenv("AWS_ENDPOINT_URL", str((await aiohttp_server(app)).make_url("")).rstrip("/"))
    monkeypatch.setattr(call_module, "RECORDING_WAIT_SECONDS", 0.2)  # instead of 5 s
    return proxy, await serve_app(settings)


async def tone_call_into(
    app: TestClient, emulator: CloudonixEmulator, tenant: Tenant
) -> tuple[int | None, str]:
    """A call of `tone_call`'s into another app than the fixtures' one."""
    call = await open_call(app.session, str(app.make_url("/")), emulator, tenant.workflow.uuid,
                           call_id="C-1", caller="+15555550100", called="+15555550199")
    call.start_reading()
    await call.handshake()
    await call.send_audio(tone_ulaw(TONE_SECONDS), realtime=False)
    await call.hang_up()
    return await call.wait_closed(timeout=30)


async def test_a_slow_bucket_neither_keeps_the_caller_on_the_line_nor_loses_the_recording(
    tenant: Tenant, settings: Settings, bucket: Bucket, emulator: CloudonixEmulator,
    slow_bucket: tuple[HoldingProxy, TestClient],
) -> None:
    proxy, slow = slow_bucket
    store = slow.app[STORE]
    assert await tone_call_into(slow, emulator, tenant) == (1000, "call ended")

    # the caller was let go while the upload still waited for the bucket
    assert proxy.held.is_set() and not proxy.answered
    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason, run.recording_path) == ("completed", "caller_hangup", None)

    proxy.release()  # the bucket answers: the run gets its recording, nothing was lost
    key = f"{PREFIX}/{run.id}.wav"

    async def recorded() -> None:
        while True:
            if (await store.get_run_by_id(run.id)).recording_path is not None:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(recorded(), 20)
    stored = await store.get_run_by_id(run.id)
    assert stored.recording_path == f"s3://{bucket.name}/{key}"
    assert "recording_error" not in stored.logs
    left, _, _ = stereo(await bucket.get(key))
    assert left.startswith(ulaw_to_pcm16(tone_ulaw(TONE_SECONDS)))
    assert spooled(settings) == []


async def test_a_recording_still_uploading_at_shutdown_is_stored_by_the_next_start(
    tenant: Tenant, settings: Settings, bucket: Bucket, emulator: CloudonixEmulator,
    serve_app: ServeApp, slow_bucket: tuple[HoldingProxy, TestClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_writes, "AFTER_CALL_GRACE_SECONDS", 0.2)  # instead of 10 s
    proxy, slow = slow_bucket
    assert await tone_call_into(slow, emulator, tenant) == (1000, "call ended")
    run = await finished_run(slow.app[STORE], tenant)
    await proxy.held.wait()
    await slow.close()  # the upload still waits for the bucket: it is given up, tracks kept
    assert not proxy.answered
    assert {f"{run.id}.agent.pcm", f"{run.id}.caller.pcm"} <= set(spooled(settings))

    proxy.release()  # the bucket is back: the next start merges and uploads them
    restarted = await serve_app(settings)
    recovered = await restarted.app[STORE].get_run_by_id(run.id)
    assert recovered.recording_path == f"s3://{bucket.name}/{PREFIX}/{run.id}.wav"
    assert recovered.logs["recording_recovered"] is True
    assert spooled(settings) == []
