"""The Agent Stream WebSocket (contract section 2): accept, then run the call in a task of
its own that always finishes its run."""
from __future__ import annotations

import asyncio
import time
from typing import Final

from aiohttp import WSCloseCode, web

from ..errors import GOING_AWAY
from ..keys import CALLS, METRICS, SETTINGS
from ..openapi import undocumented
from ..security import short_uuid
from .call import Call

# How long we wait for the provider to answer our close frame.
CLOSE_TIMEOUT: Final = 2.0


class StreamSocket(web.WebSocketResponse):
    """aiohttp closes oversized frames with 1009 and no reason; ours always says why."""

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message:
            message = b"message too big"
        return await super().close(code=code, message=message, drain=drain)


@undocumented("the Agent Stream WebSocket (contract section 2), not the JSON management API")
async def agent_stream(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/agent-stream/[{provider}/]{agent_uuid}: accept, then run the call."""
    accepted_at = time.monotonic()
    settings = request.app[SETTINGS]
    registry = request.app[CALLS]
    ws = StreamSocket(
        max_msg_size=settings.max_stream_message_bytes,
        autoping=True,
        timeout=CLOSE_TIMEOUT,
        compress=False,  # base64 mu-law barely compresses; deflate would only cost CPU
        protocols=("media",),  # Asterisk's chan_websocket asks for it and needs it echoed
    )
    await ws.prepare(request)
    if not registry.accepting:
        request.app[METRICS].rejected("shutting_down", None)
        await ws.close(code=GOING_AWAY, message=b"server shutting down")
        return ws
    call = Call(request, ws, accepted_at)
    # The call runs in its own task: if aiohttp cancels the handler (a lost connection,
    # with handler_cancellation on) the call still finishes its run. Shutdown waits for it.
    task = asyncio.create_task(call.handle(), name=f"call {short_uuid(call.agent_uuid)}")
    registry.add(call)
    task.add_done_callback(lambda _: registry.discard(call))
    await asyncio.shield(task)
    return ws


def setup_routes(app: web.Application) -> None:
    """The stream URL in its query form and its path form."""
    app.router.add_get("/api/v1/agent-stream/{agent_uuid}", agent_stream, name="agent_stream")
    app.router.add_get(
        "/api/v1/agent-stream/{provider}/{agent_uuid}", agent_stream, name="agent_stream_provider"
    )
