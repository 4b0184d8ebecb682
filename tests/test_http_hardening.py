"""Slow and malformed HTTP clients, through the real app on real sockets (issue items 6 and 7):
a request head or body that does not arrive in time, and requests the parser refuses."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Final

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from agent_stream.config import Settings
from agent_stream.server import HTTP_SERVER_LOG
from agent_stream.store import Store
from tests.admin_fixtures import csrf_of
from tests.conftest import Tenant

# Lowered limits, so a slow client is caught in well under a second.
HEADER_TIMEOUT: Final = 0.5
BODY_TIMEOUT: Final = 0.5
# A trickling client: one byte this often, so 100 bytes would take 10 s.
TRICKLE_EVERY: Final = 0.1
# Generous bound for what should take HEADER_TIMEOUT: a loaded two-core machine.
CLOSE_BOUND: Final = 10.0
HALF_SENT_CONNECTIONS: Final = 30
PARTIAL_HEAD: Final = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n"  # no blank line: never complete
FULL_HEAD: Final = PARTIAL_HEAD + b"\r\n"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings with this module's short limits."""
    return replace(
        settings, request_header_timeout=HEADER_TIMEOUT, request_body_timeout=BODY_TIMEOUT
    )


async def _open(client: TestClient) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TCP connection to the test server: the client library would finish every request."""
    return await asyncio.open_connection(client.host, client.port)


async def _read_response_head(reader: asyncio.StreamReader) -> bytes:
    """The status line and headers of one answer, within the generous bound."""
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSE_BOUND)


async def test_half_sent_request_heads_are_closed_after_the_header_timeout(
    client: TestClient,
) -> None:
    # Guards item 6: 30 connections that never finish their request head were still open
    # after 12 s; aiohttp's keep-alive timeout was the only bound (75 s under run_app, its
    # default 3630 s here and in the CLI test call).
    connections = [await _open(client) for _ in range(HALF_SENT_CONNECTIONS)]
    for _, writer in connections:
        writer.write(PARTIAL_HEAD)
    await asyncio.gather(*(writer.drain() for _, writer in connections))

    # The control, on the same server: a complete head is answered, and the connection is
    # then closed once it has sat idle for the same timeout.
    reader, writer = await _open(client)
    writer.write(FULL_HEAD)
    head = await _read_response_head(reader)
    assert head.startswith(b"HTTP/1.1 200 "), head

    rests = await asyncio.wait_for(
        asyncio.gather(*(r.read() for r, _ in connections)), CLOSE_BOUND
    )
    assert rests == [b""] * HALF_SENT_CONNECTIONS  # closed by the server, nothing answered
    body_and_eof = await asyncio.wait_for(reader.read(), CLOSE_BOUND)
    assert body_and_eof.startswith(b"{")  # the health answer's body, then the close
    for _, w in [*connections, (reader, writer)]:
        w.close()


@contextlib.asynccontextmanager
async def _trickling(client: TestClient, head: bytes) -> AsyncIterator[asyncio.StreamReader]:
    """A client that sends `head` at once and then its body a byte at a time, slower than
    the body timeout allows (Content-Length: 100, a hundred spaces never all sent)."""
    reader, writer = await _open(client)
    writer.write(head)

    async def trickle() -> None:
        for _ in range(99):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(TRICKLE_EVERY)

    task = asyncio.create_task(trickle())
    try:
        yield reader
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await task
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one answer (which carries a Content-Length)."""
    head = (await _read_response_head(reader)).decode("latin-1")
    status_line, *lines = head.strip().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), CLOSE_BOUND)
    return int(status_line.split()[1]), headers, body


async def test_an_api_body_slower_than_the_body_timeout_is_answered_408(
    client: TestClient, tenant: Tenant
) -> None:
    # Guards item 6: nothing bounded how long a request body could take to arrive; the
    # handler waited for it as long as the client kept the connection open.
    head = (
        "POST /api/v1/workflows HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {tenant.api_key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    async with _trickling(client, head) as reader:
        status, headers, body = await _read_response(reader)
    assert status == 408
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"error": f"the request body did not arrive within {BODY_TIMEOUT:g} s"}

    # The control: a body sent at once is read as before (and only once) by the handler.
    created = await client.post(
        "/api/v1/workflows", json={"name": "In time"}, headers=tenant.headers
    )
    assert created.status == 201, await created.text()
    assert (await created.json())["name"] == "In time"


async def test_an_admin_form_slower_than_the_body_timeout_gets_the_408_page(
    client: TestClient, store: Store, tenant: Tenant
) -> None:
    # Guards item 6 outside the API: the sign-in form read its body without a deadline.
    head = (
        b"POST /login HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
    )
    async with _trickling(client, head) as reader:
        status, headers, body = await _read_response(reader)
    assert status == 408
    assert headers["content-type"].startswith("text/html")
    assert "The request did not arrive in time" in body.decode()

    # The control: a form sent at once is read by the handler, also as multipart/form-data
    # (which post() parses from the stream, not from the bytes read()).
    await store.create_user(organization_id=tenant.org_id, email="form@example.com", password="pw")
    login = await client.get("/login")
    form = aiohttp.FormData(
        {"csrf_token": csrf_of(await login.text()), "email": "form@example.com", "password": "pw"},
        default_to_multipart=True,
    )
    signed_in = await client.post("/login", data=form, allow_redirects=False)
    assert signed_in.status == 303, await signed_in.text()


def _malformed_requests(agent_uuid: str) -> dict[str, bytes]:
    """Requests the HTTP parser refuses, each carrying a full agent uuid."""
    stream = f"/api/v1/agent-stream/{agent_uuid}".encode()
    return {
        "request line over 8,190 bytes": (
            b"GET " + stream + b"?pad=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        ),
        "control character in the path": b"GET " + stream + b"\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        "control character in a header": (
            b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Agent: "
            + agent_uuid.encode() + b"\x00\r\n\r\n"
        ),
        # aiohttp logs a bad method at DEBUG when it is a connection's first request...
        "non-HTTP method": b"G\x01T " + stream + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    }


async def test_malformed_requests_are_answered_400_and_logged_once_without_the_request(
    client: TestClient, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    # Guards item 7: aiohttp logged each malformed request at ERROR with a traceback and the
    # raw request (a full agent uuid, a credential) quoted in the exception's message.
    caplog.set_level(logging.INFO)
    agent_uuid = tenant.workflow.uuid
    malformed = _malformed_requests(agent_uuid)
    for name, raw in malformed.items():
        reader, writer = await _open(client)
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(), CLOSE_BOUND)  # the server closes
        writer.close()
        assert re.match(rb"HTTP/1\.[01] 400 ", answer), (name, answer[:80])

    # ...and at ERROR when it follows a good request on a keep-alive connection.
    reader, writer = await _open(client)
    writer.write(FULL_HEAD)
    status, _, _ = await _read_response(reader)
    assert status == 200
    writer.write(malformed["non-HTTP method"])
    answer = await asyncio.wait_for(reader.read(), CLOSE_BOUND)
    writer.close()
    assert re.match(rb"HTTP/1\.[01] 400 ", answer), answer[:80]
    bad_requests = len(malformed) + 1

    records = [r for r in caplog.records if r.name.startswith(("aiohttp", "agent_stream"))]
    assert [r for r in records if r.levelno > logging.WARNING or r.exc_info] == []
    assert "Traceback" not in caplog.text
    assert agent_uuid not in caplog.text
    assert all(agent_uuid not in r.getMessage() for r in records)
    server_lines = [r.getMessage() for r in records if r.name == "agent_stream.http"]
    assert len(server_lines) == bad_requests, server_lines
    for line in server_lines:
        assert re.fullmatch(r"bad HTTP request from 127\.0\.0\.1: \w+ \(400\)", line), line
    # The access log has one line per request too, the bad ones as "UNKNOWN /".
    access_lines = [r.getMessage() for r in records if r.name == "aiohttp.access"]
    assert sum(' 400 ' in line for line in access_lines) == bad_requests, access_lines

    # The control: anything else aiohttp's request handler logs (a failure of ours) keeps
    # its level and its traceback.
    caplog.clear()
    try:
        raise RuntimeError("a handler bug")
    except RuntimeError as exc:
        HTTP_SERVER_LOG.exception("Error handling request from %s", "127.0.0.1", exc_info=exc)
    [record] = [r for r in caplog.records if r.name == "agent_stream.http"]
    assert record.levelno == logging.ERROR
    assert "Traceback" in caplog.text and "RuntimeError: a handler bug" in caplog.text
