"""Where deliveries may go: by default only to public addresses.

A webhook's URL is chosen by any signed-in user of an organization, and its deliveries
list shows each attempt's status, latency and connect error: pointed at 127.0.0.1, at
the cloud's metadata address or at the private network, the sender would be a port scanner
and a blind POST into the operator's own network. So a receiver's address is checked when
the connection is made (the address connected to is the one checked: no DNS rebinding),
and one on a loopback, private, link-local or otherwise non-public network is refused,
unless the operator runs receivers there (`AGENT_STREAM_WEBHOOKS_ALLOW_PRIVATE=1`).
"""
from __future__ import annotations

import errno
import socket
from typing import Final

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from ..security import parse_ip

ALLOW_PRIVATE_ENV: Final = "AGENT_STREAM_WEBHOOKS_ALLOW_PRIVATE"


def is_public(address: str) -> bool:
    """A globally routable address (an IPv4-mapped IPv6 one judged as its IPv4)."""
    ip = parse_ip(address)
    return ip is not None and ip.is_global and not ip.is_multicast


class PrivateTarget(OSError):
    """A receiver on a non-public address, refused (aiohttp reports it as a connect error)."""

    def __init__(self, host: str) -> None:
        super().__init__(errno.EACCES, f"{host} is not a public address; receivers on a "
                                       f"private network need {ALLOW_PRIVATE_ENV}=1")


def private_literal(url: str) -> str | None:
    """The refusal for a URL whose host is a non-public IP address written out (aiohttp
    connects to those without asking the resolver), else None."""
    host = URL(url).host or ""
    if parse_ip(host) is None:
        return None  # a name: the resolver judges what it resolves to
    return None if is_public(host) else str(PrivateTarget(host).strerror)


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver, refusing a name any of whose addresses is not public."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if any(not is_public(result["host"]) for result in found):
            raise PrivateTarget(host)
        return found

    async def close(self) -> None:
        await self._inner.close()
