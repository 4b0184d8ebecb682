"""Secret hygiene: bearer tokens, API keys and full agent uuids never reach the logs."""
from __future__ import annotations

import logging
import re
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from agent_stream.crypto import SecretKeyError, load_secret_key, new_secret_key
from agent_stream.security import (
    SECRET_ROUTE_VARIABLE,
    hash_password,
    mask_secret,
    redact_path,
    redact_uuids,
    verify_password,
)
from agent_stream.store import Store
from agent_stream.store.migrations import MIGRATIONS_DIR
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import TOKEN, Dial, Tenant, add_cloudonix_config, database_bytes, stored_bytes


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


def test_redact_path_cuts_a_route_s_one_time_token_to_its_start() -> None:
    path = "/api/v1/providers/plivo/transfer/Zk3vQ9-_tokenTOKENtoken"
    assert redact_path(path, {SECRET_ROUTE_VARIABLE: "Zk3vQ9-_tokenTOKENtoken"}) == (
        "/api/v1/providers/plivo/transfer/Zk3v…")
    assert redact_path(path, {"uuid": "x"}) == path  # other route variables stay as they are


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
    raw = await stored_bytes(settings)
    assert tenant.api_key.encode() not in raw
    assert re.search(rb"scrypt\$16384\$8\$1\$", raw), "password hash not found"


# -- provider secrets at rest ----------------------------------------------------------------------


async def test_provider_secrets_are_encrypted_at_rest_with_a_key_file_made_0600(
    tenant: Tenant, store: Store, settings: Any
) -> None:
    raw = await stored_bytes(settings)
    assert tenant.token.encode() not in raw  # a copy of the database alone reveals nothing
    assert (await store.get_telephony_config(tenant.org_id, 1)).value("bearer_token") == tenant.token
    key_file = settings.secret_key_file
    if settings.db_url:  # PostgreSQL: the key comes from AGENT_STREAM_SECRET_KEY, no file made
        assert not key_file.exists()
    else:
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        Fernet(key_file.read_bytes().strip())  # a Fernet key, as AGENT_STREAM_SECRET_KEY takes


async def test_a_wrong_or_lost_key_is_a_clear_error_never_a_new_key(tmp_path: Path) -> None:
    db = tmp_path / "agent_stream.db"
    store = await Store.open(db)
    org = await store.get_or_create_organization("K")
    await add_cloudonix_config(store, org.id, domain="acme.cloudonix.net", token="secret-token-1")
    await store.close()

    other = load_secret_key(new_secret_key(), tmp_path / "unused.key")
    with pytest.raises(SecretKeyError, match="does not open this database's secrets"):
        await Store.open(db, secret_key=other)

    key_file = tmp_path / "secret.key"
    saved = key_file.read_bytes()
    key_file.unlink()  # the key file is lost: a new one must not take its place
    with pytest.raises(SecretKeyError, match="was just created, but this database's secrets"):
        await Store.open(db)
    assert not key_file.exists()
    key_file.write_bytes(saved)
    store = await Store.open(db)
    assert (await store.list_telephony_configs(org.id))[0].value("bearer_token") == "secret-token-1"
    await store.close()


def test_a_malformed_key_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyError, match="new-secret-key"):
        load_secret_key("not-a-key", tmp_path / "secret.key")


async def test_cloudonix_rows_of_an_older_database_move_over_with_their_tokens_sealed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "agent_stream.db"
    with sqlite3.connect(db) as old:  # a version-2 database: the table as it had it, a row in it
        old.executescript((MIGRATIONS_DIR / "0001_schema.sqlite.sql").read_text())
        old.execute("INSERT INTO organizations (id, name, created_at) VALUES (1, 'Old', 't0')")
        old.execute("DROP TABLE telephony_configurations")
        old.execute(
            """CREATE TABLE telephony_configurations (id INTEGER PRIMARY KEY,
                organization_id INTEGER NOT NULL, provider TEXT NOT NULL, name TEXT NOT NULL,
                domain_id TEXT NOT NULL, bearer_token TEXT NOT NULL DEFAULT '',
                application_name TEXT, from_numbers TEXT NOT NULL DEFAULT '[]',
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
                UNIQUE (organization_id, provider, domain_id))""")
        old.execute(
            """INSERT INTO telephony_configurations VALUES (7, ?, 'cloudonix', 'main',
                'acme.cloudonix.net', 'cx-old-token-9876', 'app', '["+15550001111"]', 't0', 't1')""",
            (1,))
        old.execute("PRAGMA user_version = 2")
    assert not (tmp_path / "secret.key").exists()  # a version-2 server had no key yet

    store = await Store.open(db)
    (config,) = await store.list_telephony_configs(1)
    assert (config.id, config.provider, config.name, config.account_id) == (
        7, "cloudonix", "main", "acme.cloudonix.net")
    assert config.value("bearer_token") == "cx-old-token-9876"
    assert config.fields == {"domain_id": "acme.cloudonix.net", "application_name": "app"}
    assert config.from_numbers == ["+15550001111"]
    await store.close()
    raw = database_bytes(db)
    assert b"cx-old-token-9876" not in raw


def test_settings_never_show_the_secret_key_or_the_database_password() -> None:
    from agent_stream.config import Settings

    key = new_secret_key()
    settings = Settings(db_url="postgresql://agent:hunter2@db.internal:5432/agent_stream",
                        secret_key=key)
    assert "hunter2" not in repr(settings) and key not in repr(settings)
    assert settings.database_shown == "postgresql://db.internal:5432/agent_stream"
