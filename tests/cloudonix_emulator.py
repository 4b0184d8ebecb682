"""A local stand-in for the Cloudonix REST API, so tests exercise real HTTP instead of mocks."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request, dict[str, Any] | None], Awaitable[web.StreamResponse]]
Guarded = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class RecordedRequest:
    """One request the emulator answered, so tests can assert what the app sent."""

    method: str
    path: str
    domain: str
    session: str
    authorized: bool
    json: dict[str, Any] | None
    status: int


@dataclass
class CloudonixEmulator:
    """Domains with bearer tokens and live sessions, answering like Cloudonix does."""

    tokens: dict[str, str] = field(default_factory=dict)
    sessions: set[tuple[str, str]] = field(default_factory=set)
    requests: list[RecordedRequest] = field(default_factory=list)
    delay: float = 0.0
    status_override: int | None = None

    def add_domain(self, domain: str, token: str) -> None:
        """Register a domain and the bearer token that authorizes it."""
        self.tokens[domain] = token

    def add_account(self, domain: str, token: str) -> None:
        """`add_domain`, by the name the provider contract suite uses for every emulator."""
        self.add_domain(domain, token)

    def add_session(self, domain: str, session: str) -> None:
        """Make a call session live on a domain."""
        self.sessions.add((domain, session))

    def make_app(self) -> web.Application:
        """Build the aiohttp app serving the emulated endpoints."""
        app = web.Application()
        path = "/customers/self/domains/{domain}/sessions/{session}"
        app.router.add_get(path, self._guarded(self._get_session))
        app.router.add_delete(path, self._guarded(self._delete_session))
        app.router.add_post("/calls/{domain}/sessions/{session}/application", self._guarded(self._transfer))
        # The domain resource itself, as the real API has it: reading it answers 200 and
        # deleting it deletes the customer's domain. Calls must never reach these.
        for domain_path in ("/customers/self/domains/{domain}", "/customers/self/domains/{domain}/"):
            app.router.add_get(domain_path, self._guarded(self._get_domain))
            app.router.add_delete(domain_path, self._guarded(self._delete_domain))
        return app

    def _guarded(self, handler: Handler) -> Guarded:
        """Apply delay, status override and bearer auth, and record every request."""

        async def wrapped(request: web.Request) -> web.StreamResponse:
            domain = request.match_info["domain"]
            session = request.match_info.get("session", "")
            body = await _read_json(request)
            expected = self.tokens.get(domain)
            authorized = expected is not None and request.headers.get("Authorization") == f"Bearer {expected}"
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.status_override is not None:
                response: web.StreamResponse = _error(self.status_override, "status override")
            elif not authorized:
                response = _error(401, "unauthorized")
            else:
                response = await handler(request, body)
            self.requests.append(
                RecordedRequest(
                    request.method, request.path, domain, session, authorized, body, response.status
                )
            )
            return response

        return wrapped

    async def _get_session(self, request: web.Request, body: dict[str, Any] | None) -> web.StreamResponse:
        """Validate a session: 200 with its details when live, else 404."""
        domain, session = request.match_info["domain"], request.match_info["session"]
        if (domain, session) not in self.sessions:
            return _error(404, "session not found")
        details = {
            "id": zlib.crc32(session.encode()), "token": session, "domain": domain,
            "status": "processing",
        }
        return web.json_response(details)

    async def _get_domain(self, request: web.Request, body: dict[str, Any] | None) -> web.StreamResponse:
        """The domain's own record."""
        return web.json_response({"domain": request.match_info["domain"], "active": True})

    async def _delete_domain(self, request: web.Request, body: dict[str, Any] | None) -> web.StreamResponse:
        """Delete the customer's whole domain (what a hang-up must never turn into)."""
        self.tokens.pop(request.match_info["domain"], None)
        return web.Response(status=204)

    async def _delete_session(self, request: web.Request, body: dict[str, Any] | None) -> web.StreamResponse:
        """Hang up a live session."""
        key = (request.match_info["domain"], request.match_info["session"])
        if key not in self.sessions:
            return _error(404, "session not found")
        self.sessions.discard(key)
        return web.Response(status=204)

    async def _transfer(self, request: web.Request, body: dict[str, Any] | None) -> web.StreamResponse:
        """Replace a live session's application with the posted CXML."""
        if body is None or not isinstance(body.get("cxml"), str):
            return _error(400, "body must be JSON with a string 'cxml'")
        if (request.match_info["domain"], request.match_info["session"]) not in self.sessions:
            return _error(404, "session not found")
        return web.json_response({"ok": True})


async def _read_json(request: web.Request) -> dict[str, Any] | None:
    """The body as a JSON object, or None when absent or not an object."""
    if not request.can_read_body:
        return None
    try:
        body = json.loads(await request.read())
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _error(status: int, message: str) -> web.Response:
    """A JSON error answer like the real API gives."""
    return web.json_response({"error": message}, status=status)


async def start_emulator(aiohttp_server: Any) -> tuple[CloudonixEmulator, str]:
    """Serve a fresh emulator; returns it and its base URL (no trailing slash)."""
    emulator = CloudonixEmulator()
    server = await aiohttp_server(emulator.make_app())
    return emulator, str(server.make_url("")).rstrip("/")
