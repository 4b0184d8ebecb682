"""`GET /metrics` (contract section 9): who may read it, and what real calls make of it.
The exposition is read with prometheus-client's own parser, as Prometheus would."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from agent_stream.config import Settings
from agent_stream.metrics import GAP_BUCKETS, add_sorted
from agent_stream.pipeline import transport
from agent_stream.server import create_app, runner_options
from agent_stream.simulator import SimulatedCall, connect, stream_url, tone_ulaw
from agent_stream.store import Store
from agent_stream.workflow import starter_definition
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import (
    DOMAIN,
    TOKEN,
    Dial,
    MakeTenant,
    ServeApp,
    Tenant,
    agent_over_api,
    answered,
    finished_run,
    short_call,
    until,
)
from tests.test_process import alive, run_cli
from tests.test_workers import START_TIMEOUT, Served

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
METRICS_TOKEN = "metrics-SECRET-token-0123456789"


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series not (yet) there, as Prometheus treats it."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: TestClient, headers: Mapping[str, str] | None = None) -> Samples:
    async with client.get("/metrics", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "text/plain"
        return parse(await response.text())


async def status_of(http: aiohttp.ClientSession, url: str, headers: Mapping[str, str]) -> tuple[int, Any]:
    async with http.get(url, headers=headers) as response:
        body = await response.json() if response.status == 401 else await response.text()
        return response.status, body


# -- who may read it ----------------------------------------------------------------------


async def test_loopback_reads_metrics_without_a_token(client: TestClient) -> None:
    samples = await scrape(client)
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_cpu_seconds_total") > 0
    assert any(name == "python_info" for name, _ in samples)


async def test_a_reverse_proxy_on_this_box_relays_no_free_metrics(
    client: TestClient, tenant: Tenant
) -> None:
    """nginx on the same machine connects from loopback for every client on the internet:
    what it relays (it says so in a forwarding header) wants an API key."""
    http, url = client.session, str(client.make_url("/metrics"))
    for relayed in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=203.0.113.9"},
                    {"X-Real-IP": "203.0.113.9"}):
        status, body = await status_of(http, url, relayed)
        assert status == 401 and "API key" in body["error"], relayed
        assert (await status_of(http, url, relayed | tenant.headers))[0] == 200


async def test_with_a_token_every_client_needs_it_or_an_api_key(
    serve_app: ServeApp, settings: Settings, make_tenant: MakeTenant, non_utf8_headers: str,
) -> None:
    guarded = dataclasses.replace(settings, metrics_token=METRICS_TOKEN)
    assert METRICS_TOKEN not in repr(guarded)
    client = await serve_app(guarded)
    tenant = await make_tenant()  # on the same database
    http, url = client.session, str(client.make_url("/metrics"))

    status, body = await status_of(http, url, {})
    assert status == 401 and "Authorization: Bearer" in body["error"]  # loopback included
    status, body = await status_of(http, url, {"Authorization": "Bearer wrong"})
    assert (status, body) == (401, {"error": "invalid metrics token or API key"})
    # a byte that is not UTF-8 (aiohttp reads it as a lone surrogate) is just another token
    status, body = await status_of(http, url, {"Authorization": f"Bearer {METRICS_TOKEN}{non_utf8_headers}"})
    assert (status, body) == (401, {"error": "invalid metrics token or API key"})
    assert (await status_of(http, url, {"Authorization": f"Bearer {METRICS_TOKEN}"}))[0] == 200
    assert (await status_of(http, url, tenant.headers))[0] == 200


def non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("203.0.113.1", 9))
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


async def test_a_client_from_elsewhere_needs_an_api_key_and_cannot_pose_as_loopback(
    settings: Settings, make_tenant: MakeTenant,
) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    server = TestServer(create_app(settings), host=address)
    await server.start_server(**runner_options(settings))
    try:
        tenant = await make_tenant()
        url = f"http://{address}:{server.port}/metrics"
        async with aiohttp.ClientSession() as http:
            status, body = await status_of(http, url, {})
            assert status == 401 and "non-loopback" in body["error"]
            forged = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1",
                      "Forwarded": "for=127.0.0.1"}
            assert (await status_of(http, url, forged))[0] == 401
            assert (await status_of(http, url, {"Authorization": "Bearer nope"}))[0] == 401
            assert (await status_of(http, url, tenant.headers))[0] == 200
    finally:
        await server.close()


# -- what calls make of it ----------------------------------------------------------------


async def test_a_call_shows_in_the_counters_gauge_and_histograms(
    client: TestClient, dial: Dial, tenant: Tenant, store: Store, emulator: CloudonixEmulator,
) -> None:
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: "utt-1" in call.marks)  # the greeting went out
    during = await scrape(client)
    assert value(during, "agent_stream_calls_live", provider="cloudonix") == 1
    assert value(during, "agent_stream_calls_started_total", provider="cloudonix") == 1

    await call.press("0")  # the starter agent's transfer: a reply, then the provider's API
    assert await call.wait_closed(timeout=20) == (1000, "call transferred")
    run = await finished_run(store, tenant)
    assert run.end_reason == "transfer"
    after = await scrape(client)
    assert not [name for name, _ in after if name.endswith("_created")]  # series of nothing
    cloudonix = {"provider": "cloudonix"}
    assert value(after, "agent_stream_calls_live", **cloudonix) == 0
    assert value(after, "agent_stream_calls_ended_total", provider="cloudonix",
                 state="completed", end_reason="transfer", close_code="1000") == 1
    # the same figures as the run's logs
    frames_out = run.logs["outbound_audio"]["media_frames_out"]
    assert value(after, "agent_stream_outbound_audio_gap_seconds_count", **cloudonix) == frames_out - 1
    assert value(after, "agent_stream_outbound_audio_gap_seconds_bucket", le="+Inf",
                 **cloudonix) == frames_out - 1
    # one reply: the key pressed, then "Connecting you now." as the transcript shows them
    caller_turn, reply = run.transcript[1], run.transcript[2]
    assert (caller_turn.role, reply.role) == ("caller", "agent")
    waited_ms = reply.start_ms - caller_turn.end_ms
    assert run.logs["reply_latency"] == {"replies": 1, "p50_ms": waited_ms, "max_ms": waited_ms}
    assert value(after, "agent_stream_reply_latency_seconds_count", **cloudonix) == 1
    assert value(after, "agent_stream_reply_latency_seconds_sum", **cloudonix) == pytest.approx(
        waited_ms / 1000)
    assert value(after, "agent_stream_handshake_seconds_count", **cloudonix) == 1
    assert value(after, "agent_stream_validation_seconds_count", **cloudonix) == 1
    assert value(after, "agent_stream_provider_api_requests_total", provider="cloudonix",
                 operation="validate", status="200") == 1
    assert value(after, "agent_stream_provider_api_requests_total", provider="cloudonix",
                 operation="transfer", status="200") == 1
    assert [r.method for r in emulator.requests].count("POST") == 1


async def test_a_long_call_s_gaps_past_those_it_keeps_still_reach_the_histogram_and_its_logs(
    client: TestClient, dial: Dial, tenant: Tenant, store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call keeps 100,000 gaps (33 minutes of agent audio) for its run's percentiles; the
    histogram stopped there, and the frame count with it. Here it keeps 20."""
    monkeypatch.setattr(transport, "KEPT_GAPS", 20)
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: "utt-1" in call.marks)  # the whole greeting went out: ~200 frames
    await call.press("0")
    assert await call.wait_closed(timeout=20) == (1000, "call transferred")
    run = await finished_run(store, tenant)
    frames_out = run.logs["outbound_audio"]["media_frames_out"]
    assert frames_out > 100  # all of them counted, not the 20 kept
    after = await scrape(client)
    assert value(after, "agent_stream_outbound_audio_gap_seconds_count",
                 provider="cloudonix") == frames_out - 1


async def test_a_failed_validation_counts_the_provider_s_answer_and_the_4400(
    client: TestClient, dial: Dial, tenant: Tenant, store: Store,
) -> None:
    call = await dial(tenant.workflow.uuid, live_session=False)  # the emulator answers 404
    call.start_reading()
    await call.handshake()
    code, _ = await call.wait_closed(timeout=20)
    assert code == 4400
    assert (await finished_run(store, tenant)).end_reason == "handshake_failed"
    samples = await scrape(client)
    assert value(samples, "agent_stream_provider_api_requests_total", provider="cloudonix",
                 operation="validate", status="404") == 1
    assert value(samples, "agent_stream_calls_ended_total", provider="cloudonix",
                 state="failed", end_reason="handshake_failed", close_code="4400") == 1
    assert value(samples, "agent_stream_validation_seconds_count", provider="cloudonix") == 1
    assert value(samples, "agent_stream_handshake_seconds_count", provider="cloudonix") == 0
    assert value(samples, "agent_stream_calls_live", provider="cloudonix") == 0


async def test_refused_connections_count_by_reason_with_known_providers_only(
    client: TestClient, dial: Dial, tenant: Tenant,
) -> None:
    unknown = await dial(tenant.workflow.uuid, provider="made-up-provider")
    assert (await unknown.wait_closed(timeout=10))[0] == 1008
    missing = await dial("00000000-0000-4000-8000-000000000000")
    assert (await missing.wait_closed(timeout=10))[0] == 1008
    samples = await scrape(client)
    assert value(samples, "agent_stream_stream_rejections_total", reason="unknown_provider",
                 provider="unknown") == 1
    assert value(samples, "agent_stream_stream_rejections_total", reason="workflow_not_found",
                 provider="cloudonix") == 1
    assert not any("made-up-provider" in str(labels) for _, labels in samples)
    assert value(samples, "agent_stream_calls_started_total", provider="cloudonix") == 0


async def test_a_caller_hanging_up_ends_the_live_call(
    client: TestClient, dial: Dial, tenant: Tenant, store: Store,
) -> None:
    assert await short_call(dial, tenant) == (1000, "call ended")
    await finished_run(store, tenant)
    samples = await scrape(client)
    assert value(samples, "agent_stream_calls_ended_total", provider="cloudonix",
                 state="completed", end_reason="caller_hangup", close_code="1000") == 1
    assert value(samples, "agent_stream_calls_live", provider="cloudonix") == 0


async def test_a_long_call_feeds_its_gaps_before_it_ends(
    client: TestClient, dial: Dial, tenant: Tenant, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent_stream.calls import call as call_module

    monkeypatch.setattr(call_module, "WATCHDOG_PERIOD", 0.2)
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: "utt-1" in call.marks)

    async def gaps_seen() -> float:
        return value(await scrape(client), "agent_stream_outbound_audio_gap_seconds_count",
                     provider="cloudonix")

    deadline = asyncio.get_running_loop().time() + 15
    while await gaps_seen() == 0:
        assert asyncio.get_running_loop().time() < deadline, "no gaps while the call is live"
        await call.send_audio(tone_ulaw(0.1), realtime=False)  # the line stays open
        await asyncio.sleep(0.1)
    await call.hang_up()
    await call.wait_closed(timeout=20)


# -- the batch that feeds the histograms ----------------------------------------------------


def test_a_sorted_batch_counts_as_its_observations_would() -> None:
    values = [0.005, 0.02, 0.02, 0.021, 0.03, 0.1, 0.7, 2.5, 0.0199]
    one, batched = CollectorRegistry(), CollectorRegistry()
    for registry, feed in ((one, "each"), (batched, "batch")):
        histogram = Histogram("gap_seconds", "", ["provider"], buckets=GAP_BUCKETS, registry=registry)
        child = histogram.labels("twilio")
        if feed == "each":
            for v in values:
                child.observe(v)
        else:
            add_sorted(child, sorted(values))
            add_sorted(child, [])
    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {(s.name, s.labels.get("le", "")): s.value
                for family in registry.collect() for s in family.samples
                if not s.name.endswith("_created")}
    assert samples(batched) == samples(one)
    assert samples(batched)[("gap_seconds_bucket", "0.02")] == 4


# -- several workers ------------------------------------------------------------------------


@pytest.fixture
def two_workers(tmp_path: Path, cloudonix: tuple[CloudonixEmulator, str]) -> Iterator[Served]:
    """`serve --workers 2` as an operator runs it, on the test's Cloudonix emulator."""
    db = tmp_path / "data" / "agent_stream.db"
    assert run_cli("create-user", "--email", "o@example.com", "--password", "pw", db=db).returncode == 0
    served = Served(tmp_path, "--workers", "2", env={"CLOUDONIX_API_BASE_URL": cloudonix[1]})
    try:
        yield served
    finally:
        orphans = served.workers().values()
        served.stop()
        for pid in orphans:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


async def test_any_worker_answers_for_all_of_them_and_a_dead_one_leaves_the_live_gauge(
    two_workers: Served, cloudonix: tuple[CloudonixEmulator, str],
) -> None:
    served, emulator = two_workers, cloudonix[0]
    emulator.add_domain(DOMAIN, TOKEN)
    api_key = run_cli("create-api-key", "--email", "o@example.com", db=served.db).stdout.split()[-1]
    headers = {"Authorization": f"Bearer {api_key}"}
    await served.answering({served.instance(0), served.instance(1)})
    pids = served.workers()
    definition = starter_definition()
    definition["settings"]["silence_timeout_seconds"] = 120  # the calls wait quietly
    fresh = aiohttp.TCPConnector(force_close=True)  # the kernel picks a worker per connection
    async with aiohttp.ClientSession(connector=fresh) as http:
        agent = await agent_over_api(http, served.base, headers, domain="acme", definition=definition)
        calls: dict[str, list[SimulatedCall]] = {served.instance(0): [], served.instance(1): []}
        while not all(calls.values()):
            assert sum(map(len, calls.values())) < 30, "every call went to one worker"
            call = await connect(http, stream_url(served.base, agent, domain="acme"))
            call.account_sid = DOMAIN
            emulator.add_session(DOMAIN, call.session)
            call.start_reading()
            await call.handshake()
            made = sum(map(len, calls.values())) + 1
            deadline = asyncio.get_running_loop().time() + START_TIMEOUT
            while True:  # until this call's run is there (newest first)
                async with http.get(f"{served.base}/api/v1/workflow-runs?workflow_uuid={agent}",
                                    headers=headers) as response:
                    runs = (await response.json())["runs"]
                if len(runs) == made and runs[0]["state"] == "running":
                    break
                assert asyncio.get_running_loop().time() < deadline, runs
                await asyncio.sleep(0.05)
            calls[runs[0]["instance_id"]].append(call)
        total = sum(map(len, calls.values()))

        async def scraped() -> Samples:
            async with http.get(f"{served.base}/metrics") as response:
                assert response.status == 200, await response.text()
                return parse(await response.text())

        for _ in range(6):  # whichever worker answers, it answers for both
            samples = await scraped()
            assert value(samples, "agent_stream_calls_live", provider="cloudonix") == total
            assert value(samples, "agent_stream_calls_started_total", provider="cloudonix") == total
            worker_pids = {dict(labels).get("pid") for name, labels in samples
                           if name == "agent_stream_worker_resident_memory_bytes"}
            assert worker_pids == {str(pid) for pid in pids.values()}

        os.kill(pids[1], signal.SIGKILL)  # its calls die with it; its counts stay
        left = calls[served.instance(0)]
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while value(samples := await scraped(), "agent_stream_calls_live", provider="cloudonix") != len(left):
            assert asyncio.get_running_loop().time() < deadline, "the dead worker's calls stay live"
            await asyncio.sleep(0.1)
        assert value(samples, "agent_stream_calls_started_total", provider="cloudonix") == total

        for call in left:
            await call.hang_up()
            assert await call.wait_closed(timeout=30) == (1000, "call ended")
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while value(samples := await scraped(), "agent_stream_calls_ended_total", provider="cloudonix",
                    state="completed", end_reason="caller_hangup", close_code="1000") != len(left):
            assert asyncio.get_running_loop().time() < deadline, "the ended calls are not counted"
            await asyncio.sleep(0.1)
        assert value(samples, "agent_stream_calls_live", provider="cloudonix") == 0


async def test_webhook_deliveries_count_by_outcome(
    client: TestClient, dial: Dial, tenant: Tenant, aiohttp_server: Any,
) -> None:
    received: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver)
    response = await client.post("/api/v1/webhooks", headers=tenant.headers, json={
        "url": str(server.make_url("/hook")), "events": ["run.completed"]})
    assert response.status == 201, await response.text()
    await short_call(dial, tenant)
    await until(lambda: len(received) == 1)
    deadline = asyncio.get_running_loop().time() + 15
    while value(samples := await scrape(client), "agent_stream_webhook_deliveries_total",
                outcome="delivered") != 1:
        assert asyncio.get_running_loop().time() < deadline, "the delivery is not counted"
        await asyncio.sleep(0.05)
    assert value(samples, "agent_stream_webhook_deliveries_total", outcome="failed") == 0
