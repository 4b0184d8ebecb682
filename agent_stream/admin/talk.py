"""**Talk to this agent**: the one-time token the call panel opens its socket with.

The panel posts this session's CSRF token like every admin form; the answer is JSON the
script reads, never a page. The token is good once, for a minute, for this agent and this
user (the `web` provider's handshake checks all of it when the socket opens)."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from .. import call_tokens
from .common import page, store_of, user_of

# Where the panel's socket goes (it adds its own ws:// or wss:// and host: same origin).
STREAM_PATH: Final = "/api/v1/agent-stream/web/{uuid}"


@page()
async def call_token(request: web.Request) -> web.StreamResponse:
    """POST: a token for one browser call of the agent (404 across organizations, 409 when
    the agent is archived and would refuse the call anyway)."""
    store = store_of(request)
    user = user_of(request)
    workflow = await store.get_workflow(user.organization_id, request.match_info["uuid"])
    headers = {"Cache-Control": "no-store"}
    if workflow.status == "archived":
        return web.json_response(
            {"error": "this agent is archived: restore it to talk to it"}, status=409,
            headers=headers,
        )
    token, call_id = await call_tokens.mint(store, agent_uuid=workflow.uuid, user_id=user.id)
    return web.json_response(
        {"token": token, "call_id": call_id, "stream_path": STREAM_PATH.format(uuid=workflow.uuid),
         "expires_in": call_tokens.TTL_SECONDS},
        headers=headers,
    )
