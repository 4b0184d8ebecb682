"""Slow and malformed HTTP clients, through the real app on real sockets (issue items 6 and 7):
a request head or body that does not arrive in time, and requests the parser refuses."""
from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Final

import pytest
from aiohttp.test_utils import TestClient

from agent_stream.config import Settings

# Lowered limits, so a slow client is caught in well under a second.
HEADER_TIMEOUT: Final = 0.5
# Generous bound for what should take HEADER_TIMEOUT: a loaded two-core machine.
CLOSE_BOUND: Final = 10.0
HALF_SENT_CONNECTIONS: Final = 30
PARTIAL_HEAD: Final = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n"  # no blank line: never complete
FULL_HEAD: Final = PARTIAL_HEAD + b"\r\n"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings with this module's short limits."""
    return replace(settings, request_header_timeout=HEADER_TIMEOUT)


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
    # after 12 s (aiohttp's default keep-alive timeout, 3630 s, was the only bound).
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

    loop = asyncio.get_running_loop()
    started = loop.time()
    rests = await asyncio.wait_for(
        asyncio.gather(*(r.read() for r, _ in connections)), CLOSE_BOUND
    )
    closed_after = loop.time() - started
    assert rests == [b""] * HALF_SENT_CONNECTIONS  # closed by the server, nothing answered
    assert closed_after < CLOSE_BOUND
    body_and_eof = await asyncio.wait_for(reader.read(), CLOSE_BOUND)
    assert body_and_eof.startswith(b"{")  # the health answer's body, then the close
    for _, w in [*connections, (reader, writer)]:
        w.close()
