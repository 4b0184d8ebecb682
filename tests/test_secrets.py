"""Secret hygiene: bearer tokens, API keys and full agent uuids never reach the logs."""
from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from agent_stream.security import hash_password, mask_secret, redact_uuids, verify_password
from agent_stream.store import Store
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import TOKEN, Dial, Tenant


async def test_logs_of_calls_and_api_use_hold_no_secret(
    caplog: pytest.LogCaptureFixture, client: Any, dial: Dial, tenant: Tenant,
    emulator: CloudonixEmulator, store: Store,
) -> None:
    caplog.set_level(logging.DEBUG)
    # a good call, a refused validation, a handshake error and API traffic
    call = await dial(tenant.workflow.uuid)
    await call.handshake()
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")
    emulator.status_override = 401
    call = await dial(tenant.workflow.uuid)
    await call.handshake()
    assert (await call.wait_closed())[0] == 4400
    emulator.status_override = None
    call = await dial(tenant.workflow.uuid, domain=None)
    assert (await call.wait_closed())[0] == 4400
    call = await dial(tenant.workflow.uuid, provider="skype")
    assert (await call.wait_closed())[0] == 1008
    await client.get(f"/api/v1/workflows/{tenant.workflow.uuid}", headers=tenant.headers)
    await client.get("/api/v1/telephony-configurations", headers=tenant.headers)
    await client.get("/api/v1/workflows", headers={"Authorization": "Bearer ask_wrong-key"})

    text = caplog.text
    # the access log shortens uuids in paths (stream sockets are checked in test_process.py)
    assert f'"GET /api/v1/workflows/{tenant.workflow.uuid[:8]}…" 200' in text
    assert "running" in text and "handshake done" in text
    assert TOKEN not in text
    assert tenant.api_key not in text
    assert "ask_wrong-key" not in text
    assert tenant.workflow.uuid not in text
    assert tenant.workflow.uuid[:8] + "…" in text


def test_redact_uuids_shortens_every_uuid() -> None:
    line = 'GET /api/v1/agent-stream/0b7f6c1e-1111-4222-8333-123456789abc?provider=cloudonix'
    assert redact_uuids(line) == "GET /api/v1/agent-stream/0b7f6c1e…?provider=cloudonix"


def test_mask_secret_shows_only_the_last_four() -> None:
    assert mask_secret("cx-bearer-abcdef1234") == "••••1234"
    assert mask_secret("short") == "••••"
    assert mask_secret("") == ""


def test_passwords_are_salted_scrypt_hashes() -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second and first.startswith("scrypt$")
    assert verify_password("pw", first) and not verify_password("PW", first)
    assert not verify_password("pw", "garbage")


async def test_database_stores_api_keys_and_passwords_hashed(tenant: Tenant, store: Store,
                                                            settings: Any) -> None:
    raw = b"".join(p.read_bytes() for p in settings.db_path.parent.glob("agent_stream.db*"))
    assert tenant.api_key.encode() not in raw
    assert re.search(rb"scrypt\$16384\$8\$1\$", raw), "password hash not found"
