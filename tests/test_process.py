"""The product as an operator runs it: `python app.py` in a real process, real signals."""
from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import unused_port
from cryptography.fernet import Fernet

from agent_stream.config import Settings
from agent_stream.crypto import KEY_ENV
from agent_stream.simulator import connect, stream_url, tone_ulaw
from agent_stream.store import MIGRATIONS, Store
from agent_stream.workflow import starter_definition
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import (
    DOMAIN,
    TOKEN,
    Dial,
    MakeTenant,
    add_cloudonix_config,
    agent_over_api,
    answered,
    handshake_done,
    spawned_children,
    until,
    wait_for_state,
)

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "app.py", *args, "--db", str(db)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )


def test_create_user_and_api_key_commands(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    made = run_cli("create-user", "--email", "ops@example.com", "--password", "pw",
                   "--org", "Acme", "--admin", "--monthly-minutes", "100",
                   "--max-concurrent-calls", "2", db=db)
    assert made.returncode == 0, made.stderr
    assert "ops@example.com" in made.stdout
    again = run_cli("create-user", "--email", "ops@example.com", "--password", "x", db=db)
    assert again.returncode == 1 and "already exists" in again.stderr
    # what the admin's forms refuse, the command refuses too, and creates nothing
    for flags, said in ((("--email", "ops"), "--email: Enter an email address."),
                        (("--email", "o\nps@example.com"), "--email: Enter an email address: one line"),
                        (("--email", "x@example.com", "--org", "A\tcme"), "--org: name the organization")):
        refused = run_cli("create-user", "--password", "pw", *flags, db=db)
        assert refused.returncode == 2 and f"error: {said}" in refused.stderr, refused.stderr
    assert run_cli("create-api-key", "--email", "x@example.com", db=db).returncode == 1

    key = run_cli("create-api-key", "--email", "ops@example.com", "--name", "deploy", db=db)
    assert key.returncode == 0, key.stderr
    plaintext = key.stdout.strip().splitlines()[-1]
    assert plaintext.startswith("ask_") and len(plaintext) > 40
    missing = run_cli("create-api-key", "--email", "nobody@example.com", db=db)
    assert missing.returncode == 1 and "no user" in missing.stderr

    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT u.is_admin, u.monthly_minutes_limit, u.max_concurrent_calls, o.name "
            "FROM users u JOIN organizations o ON o.id = u.organization_id").fetchone()
        assert row == (1, 100, 2, "Acme")
        stored = conn.execute("SELECT key_hash, key_prefix FROM api_keys").fetchone()
        assert plaintext not in stored and stored[1] == plaintext[:8]
        applied = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
        assert applied == MIGRATIONS[-1].number


async def wait_healthy(http: aiohttp.ClientSession, base: str, proc: subprocess.Popen[str]) -> None:
    for _ in range(300):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            async with http.get(f"{base}/api/v1/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("server did not become healthy")


async def serve_one_call(
    tmp_path: Path, cloudonix: tuple[CloudonixEmulator, str], **env: str
) -> tuple[Path, str, str, str]:
    """`python app.py` (with `env`) on a new database, one Cloudonix call into it, then
    SIGTERM while the call talks: (the database, the agent uuid, the API key, stderr)."""
    emulator, api_base = cloudonix
    emulator.add_domain(DOMAIN, TOKEN)
    db = tmp_path / "data" / "agent_stream.db"
    assert run_cli("create-user", "--email", "o@example.com", "--password", "pw", db=db).returncode == 0
    api_key = run_cli("create-api-key", "--email", "o@example.com", db=db).stdout.split()[-1]
    port = unused_port()
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, text=True,
        env=os.environ | env | {
            "AGENT_STREAM_PORT": str(port), "AGENT_STREAM_HOST": "127.0.0.1",
            "AGENT_STREAM_DB": str(db), "CLOUDONIX_API_BASE_URL": api_base,
        },
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, base, proc)
            agent_uuid = await agent_over_api(
                http, base, {"Authorization": f"Bearer {api_key}"}, domain="acme"
            )
            call = await connect(http, stream_url(base, agent_uuid, domain="acme", call_id="C-9"))
            call.account_sid = DOMAIN
            emulator.add_session(DOMAIN, call.session)
            call.start_reading()
            await call.handshake()
            await call.send_audio(tone_ulaw(0.3))
            proc.send_signal(signal.SIGTERM)
            assert await call.wait_closed() == (1001, "server shutting down")
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    return db, agent_uuid, api_key, stderr


async def test_serve_then_sigterm_closes_live_calls_and_finishes_runs(
    tmp_path: Path, cloudonix: tuple[CloudonixEmulator, str]
) -> None:
    db, agent_uuid, api_key, stderr = await serve_one_call(tmp_path, cloudonix)

    with sqlite3.connect(db) as conn:
        state, end_reason, close_code, ended = conn.execute(
            "SELECT state, end_reason, close_code, ended_at FROM workflow_runs").fetchone()
    assert (state, end_reason, close_code) == ("completed", "server_shutdown", 1001)
    assert ended is not None
    assert (db.parent / "recordings" / "1.wav").exists()
    assert "shutting down: no new calls" in stderr and "closing 1 live call(s)" in stderr

    # the logs name the agent only by its first block, and never the token or key
    assert f"/api/v1/agent-stream/{agent_uuid[:8]}…?provider=cloudonix" in stderr
    assert agent_uuid not in stderr
    assert TOKEN not in stderr and api_key not in stderr
    assert "Pipecat" not in stderr  # the import banner is kept out of operators' logs


def alive(pid: int) -> bool:
    """Running, not gone and not a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def test_restart_after_a_crash_fails_open_runs(
    tmp_path: Path, cloudonix: tuple[CloudonixEmulator, str], aiohttp_client: Any
) -> None:
    """SIGKILL leaves a running run and its raw recording tracks behind; the next start
    marks the run failed and merges the tracks into its recording."""
    emulator, api_base = cloudonix
    emulator.add_domain(DOMAIN, TOKEN)
    db = tmp_path / "agent_stream.db"
    run_cli("create-user", "--email", "o@example.com", "--password", "pw", db=db)
    api_key = run_cli("create-api-key", "--email", "o@example.com", db=db).stdout.split()[-1]
    port = unused_port()
    env = os.environ | {"CLOUDONIX_API_BASE_URL": api_base}
    command = [sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port), "--db", str(db)]
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {api_key}"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, base, proc)
            await http.post(f"{base}/api/v1/telephony-configurations", headers=headers,
                            json={"provider": "cloudonix", "domain_id": DOMAIN, "bearer_token": TOKEN})
            async with http.post(f"{base}/api/v1/workflows", headers=headers,
                                 json={"name": "A"}) as response:
                assert response.status == 201, await response.text()
                agent_uuid = (await response.json())["uuid"]
            call = await connect(http, stream_url(base, agent_uuid, domain=DOMAIN))
            call.account_sid = DOMAIN
            emulator.add_session(DOMAIN, call.session)
            await call.handshake()
            await call.send_audio(tone_ulaw(1.2))  # a second of it is handed to the disk
            recordings = tmp_path / "recordings"
            caller_track = recordings / "1.caller.pcm"
            # the writer thread appends the caller's first second
            await until(lambda: caller_track.exists() and caller_track.stat().st_size > 0, timeout=5)
            assert sorted(p.name for p in recordings.iterdir()) == ["1.agent.pcm", "1.caller.pcm"]
            assert caller_track.stat().st_size > 0
            decoders = spawned_children(proc.pid)
            assert decoders, "serving starts the speech decoder process"
            proc.kill()
            proc.wait(timeout=10)
            for _ in range(50):  # the decoder notices within a second that its server died
                if not any(alive(pid) for pid in decoders):
                    break
                await asyncio.sleep(0.1)
            assert not any(alive(pid) for pid in decoders), "an orphaned decoder lives on"

        proc = subprocess.Popen(command, cwd=ROOT, env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, base, proc)
            async with http.get(f"{base}/api/v1/workflow-runs?workflow_uuid={agent_uuid}",
                                headers=headers) as response:
                (run,) = (await response.json())["runs"]
        assert (run["state"], run["end_reason"], run["error"]) == (
            "failed", "server_restarted", "server restarted")
        assert run["logs"]["recording_recovered"] is True and run["has_recording"]
        assert sorted(p.name for p in recordings.iterdir()) == ["1.wav"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


async def cli_agent(db: Path, greeting: str, *, cloudonix: bool) -> tuple[int, str]:
    """A user made by the CLI, a starter agent saying `greeting`; the organization id and
    the agent's uuid (with a Cloudonix configuration, if asked)."""
    run_cli("create-user", "--email", "o@example.com", "--password", "pw", db=db)
    store = await Store.open(db)
    try:
        user = await store.get_user_by_email("o@example.com")
        definition = starter_definition()
        definition["nodes"][0]["say"] = greeting
        workflow = await store.create_workflow(organization_id=user.organization_id,
                                               owner_user_id=user.id, name="A", definition=definition)
        if cloudonix:
            await add_cloudonix_config(store, user.organization_id, domain=DOMAIN, token=TOKEN)
    finally:
        await store.close()
    return user.organization_id, workflow.uuid


async def test_call_command_places_a_test_call_and_prints_the_conversation(tmp_path: Path) -> None:
    db = tmp_path / "agent_stream.db"
    _, agent = await cli_agent(db, "Hi. Press zero for a human.", cloudonix=True)
    out = tmp_path / "call.wav"
    done = await asyncio.to_thread(run_cli, "call", agent, "--dtmf", "0", "--out", str(out), db=db)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line.split(maxsplit=1)[1] for line in done.stdout.splitlines()
             if line.strip()[:1].isdigit()]
    assert lines == ["agent   Hi. Press zero for a human.", "caller  (pressed 0)",
                     "agent   Connecting you now."]
    assert "provider API: POST /calls/acme.cloudonix.net/sessions/" in done.stdout
    assert "<Response><Dial>+15555550123</Dial></Response>" in done.stdout
    assert "completed, transfer" in done.stdout
    with wave.open(str(out)) as wav:
        assert wav.getnchannels() == 2
    bad = run_cli("call", agent, "--dtmf", "x", db=db)
    assert bad.returncode == 2 and "--dtmf takes one of" in bad.stderr


async def test_the_call_command_speaks_any_provider_with_no_configuration_at_all(
    tmp_path: Path,
) -> None:
    db = tmp_path / "agent_stream.db"
    org_id, agent = await cli_agent(db, "Hi.", cloudonix=False)
    done = await asyncio.to_thread(
        run_cli, "call", agent, "--provider", "twilio", "--dtmf", "9", "--dtmf", "9", db=db)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed, agent_hangup (close 1000 'agent hung up')" in done.stdout
    assert f"provider API: POST /2010-04-01/Accounts/AC{'0' * 32}/Calls/" in done.stdout
    assert "Status=completed" in done.stdout
    store = await Store.open(db)
    try:
        assert await store.list_telephony_configs(org_id) == []  # nothing stored
    finally:
        await store.close()
    unknown = run_cli("call", agent, "--provider", "skype", db=db)
    assert unknown.returncode == 2 and "no provider 'skype'" in unknown.stdout


async def test_the_call_command_talks_to_an_agent_as_its_owner_would_from_the_browser(
    tmp_path: Path,
) -> None:
    db = tmp_path / "agent_stream.db"
    org_id, agent = await cli_agent(db, "Hi. Press zero for a human.", cloudonix=False)
    done = await asyncio.to_thread(run_cli, "call", agent, "--provider", "web", "--dtmf", "0", db=db)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "completed, transfer_unsupported" in done.stdout
    lines = [line.split(maxsplit=1)[1] for line in done.stdout.splitlines()
             if line.strip()[:1].isdigit()]
    assert lines == ["agent   Hi. Press zero for a human.", "caller  (pressed 0)",
                     "agent   Connecting you now."]
    store = await Store.open(db)
    try:
        (run,), _ = await store.list_runs(org_id)
        assert (run.call_type, run.mode) == ("web", "web")
        assert run.gathered_context["transfer_destination"] == "+15555550123"
    finally:
        await store.close()


async def test_the_cli_test_call_leaves_live_calls_of_the_same_database_alone(
    dial: Dial, make_tenant: MakeTenant, store: Store, settings: Settings
) -> None:
    definition = starter_definition()
    definition["nodes"][0]["say"] = "Hi."
    tenant = await make_tenant(definition=definition)
    live = await answered(dial, tenant.workflow.uuid)
    live_run = await handshake_done(store, tenant)
    assert live_run.state == "running"

    cli = await asyncio.create_subprocess_exec(
        sys.executable, "app.py", "call", tenant.workflow.uuid, "--db", settings.database,
        env=os.environ | ({KEY_ENV: settings.secret_key} if settings.secret_key else {}),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0, err.decode()
    summary = out.decode().splitlines()[0]
    assert summary.startswith("WR-AGS-") and live_run.name not in summary
    assert ": completed, caller_hangup (close 1000 'call ended')" in summary
    assert (await store.get_run_by_id(live_run.id)).state == "running"  # untouched

    await live.hang_up()
    assert await live.wait_closed() == (1000, "call ended")
    ended = await wait_for_state(store, live_run.id, "completed", "failed")
    assert (ended.state, ended.end_reason) == ("completed", "caller_hangup")


def test_serving_with_a_key_that_is_not_the_database_s_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "agent_stream.db"
    assert run_cli("create-user", "--email", "k@example.com", "--password", "pw", db=db).returncode == 0
    other_key = subprocess.run([sys.executable, "app.py", "new-secret-key"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    served = subprocess.run(
        [sys.executable, "app.py", "--port", str(unused_port()), "--db", str(db)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=os.environ | {"AGENT_STREAM_SECRET_KEY": other_key},
    )
    assert served.returncode == 2
    assert ("error: the secret key from AGENT_STREAM_SECRET_KEY does not open this database's "
            "secrets") in served.stderr
    assert "Traceback" not in served.stderr


async def test_the_call_command_speaks_exotel_with_the_stand_in_s_basic_credentials(
    tmp_path: Path,
) -> None:
    """Exotel's end sends the stand-in's API key and token on the upgrade (refused
    otherwise); its hang-up is the socket closing, its transfer not offered: nothing but
    the validation is asked of the API."""
    db = tmp_path / "agent_stream.db"
    _, agent = await cli_agent(db, "Hi.", cloudonix=False)
    for key, ended in (("9", "completed, agent_hangup (close 1000 'agent hung up')"),
                       ("0", "completed, transfer_unsupported (close 1000 "
                             "'transfer not offered by the provider')")):
        done = await asyncio.to_thread(
            run_cli, "call", agent, "--provider", "exotel", "--dtmf", key, "--dtmf", key, db=db)
        assert done.returncode == 0, done.stdout + done.stderr
        assert ended in done.stdout
        assert "provider API:" not in done.stdout


def test_an_unknown_decoder_priority_is_a_clear_error(tmp_path: Path) -> None:
    served = subprocess.run(
        [sys.executable, "app.py", "--port", str(unused_port()), "--db", str(tmp_path / "a.db")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=os.environ | {"AGENT_STREAM_DECODER_PRIORITY": "lowest"},
    )
    assert served.returncode == 2
    assert served.stderr.strip() == (
        "error: AGENT_STREAM_DECODER_PRIORITY must be one of idle, batch, normal, not 'lowest'")
    assert not (tmp_path / "a.db").exists()  # refused before anything was created


def test_postgresql_without_its_key_or_its_server_is_a_clear_error(tmp_path: Path) -> None:
    url = "postgresql://agent:hunter2@127.0.0.1:1/agent_stream"  # nothing listens on port 1
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    keyless = subprocess.run([sys.executable, "app.py", "create-user", "--email", "a@b.c",
                              "--password", "pw", "--db", url],
                             cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert keyless.returncode == 2
    assert keyless.stderr.strip() == (
        "error: AGENT_STREAM_SECRET_KEY is required with PostgreSQL: every instance must seal "
        "and open secrets with the same key (python app.py new-secret-key prints one)")
    served = subprocess.run([sys.executable, "app.py", "--port", str(unused_port()), "--db", url],
                            cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env=env | {KEY_ENV: Fernet.generate_key().decode()})
    assert served.returncode == 2
    assert ("error: postgresql://127.0.0.1:1/agent_stream: database unavailable: "
            "ConnectionRefusedError") in served.stderr
    assert "hunter2" not in served.stderr and "Traceback" not in served.stderr
