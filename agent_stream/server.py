"""`create_app(settings)`: the one factory that builds the whole service."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Final

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from . import admin, api, metrics
from .calls import endpoint
from .calls.registry import CallRegistry
from .calls.run_writes import RunWriteQueue
from .calls.selection import StoredConfigs
from .config import SHUTDOWN_GRACE_SECONDS, Settings
from .errors import RequestTooSlow
from .heartbeat import keep_heartbeat
from .keys import (
    CALLS,
    CONFIG_SOURCE,
    HTTP,
    METRICS,
    RECORDINGS,
    RUN_WRITES,
    SETTINGS,
    SPEECH,
    STORE,
    WEBHOOKS,
)
from .pipeline.call import RECORDING_SAMPLE_RATE
from .pipeline.recorder import recover_recordings
from .providers import PROVIDERS
from .recordings import open_recordings
from .security import redact_path
from .speech import SpeechServices
from .speech.stt import GrammarRecognizer
from .store import open_store
from .webhooks import delivery
from .webhooks.targets import PublicOnlyResolver

log = logging.getLogger(__name__)


def server_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it installs (not on Windows): it spends less per socket message than
    asyncio's own loop, which at 80 live calls shows in the outbound audio gaps."""
    try:
        import uvloop
    except ImportError:
        if sys.platform != "win32":
            log.warning("uvloop is not installed: serving on asyncio's slower event loop")
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class AccessLogger(AbstractAccessLogger):
    """The access log, with agent uuids shortened (a stream URL is a credential) and
    one-time tokens in paths cut to their start."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.1fms',
            request.remote,
            request.method,
            redact_path(request.path_qs, _route_variables(request)),
            response.status,
            time * 1000,
        )


def _route_variables(request: web.BaseRequest) -> Mapping[str, str] | None:
    """The matched route's variables; none for a request that never reached routing (a
    malformed one answered 400 by the parser, whose `match_info` is unset)."""
    if not isinstance(request, web.Request):
        return None
    try:
        return request.match_info
    except AssertionError:
        return None


class HttpServerLog(logging.LoggerAdapter[logging.Logger]):
    """What aiohttp's request handler logs. A malformed request (a head over 8,190 bytes, bad
    bytes) reaches it as a parser error whose message quotes the raw request, agent uuids and
    all, with a traceback, at ERROR (at DEBUG for a bad method opening a connection): it is
    the client's mistake, so it becomes one INFO line naming the peer and the kind of error.
    Anything else (a failure of ours) passes through as it came."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Every logging call of the adapter (debug, exception, ...) arrives here."""
        exc = _exception_of(kwargs.get("exc_info"))
        if isinstance(exc, HttpProcessingError):
            # aiohttp's message is "Error handling request from %s", the peer's address.
            peer = args[0] if args and isinstance(args[0], str) else "an unknown peer"
            self.logger.info("bad HTTP request from %s: %s (%d)", peer, type(exc).__name__, exc.code)
            return
        super().log(level, msg, *args, **kwargs)


def _exception_of(exc_info: object) -> BaseException | None:
    """The exception a logging call's `exc_info` names (an exception, a sys.exc_info()
    tuple, or True for the one being handled)."""
    if exc_info is True:
        return sys.exc_info()[1]
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc_info = exc_info[1]
    return exc_info if isinstance(exc_info, BaseException) else None


# aiohttp's request handler logs here instead of `aiohttp.server`.
HTTP_SERVER_LOG: Final = HttpServerLog(logging.getLogger("agent_stream.http"))


def runner_options(settings: Settings) -> dict[str, Any]:
    """How every server of the app runs (production, the CLI test call, the tests), in one
    place, so the limits the tests check are the ones that serve.

    `keepalive_timeout` is aiohttp's only bound on a slow request head: its timer starts when
    a connection opens and again after each answer, and a connection still waiting for a
    complete head when it fires is closed. So it bounds both the time to send a head and the
    idle time between requests on a keep-alive connection. `logger` is where the request
    handler's own lines go: `HttpServerLog`."""
    return {
        "access_log_class": AccessLogger,
        "keepalive_timeout": settings.request_header_timeout,
        "logger": HTTP_SERVER_LOG,
    }


async def _recordings_ctx(app: web.Application) -> AsyncIterator[None]:
    """Where finished recordings go (a directory or a bucket's client); at a server's start,
    after the store has failed the runs this instance left open, merge the recordings their
    calls left and save them there."""
    settings = app[SETTINGS]
    async with open_recordings(settings.recordings_location) as recordings:
        log.info("recordings go to %s", recordings.describe())
        app[RECORDINGS] = recordings
        if settings.recover_at_start:
            leftovers = await recover_recordings(
                app[STORE], settings.recordings_dir, sample_rate=RECORDING_SAMPLE_RATE,
                recordings=recordings,
            )
            if leftovers.recovered or leftovers.removed:
                log.info("recordings left by a previous process: %d recovered, %d leftover(s) "
                         "removed", leftovers.recovered, leftovers.removed)
        yield
        await app[RUN_WRITES].finish_after_calls()  # uploads of ended calls, while we can


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open and migrate the database and register this instance; at a server's start, fail
    the runs this instance left open (their recordings: `_recordings_ctx`); keep the
    heartbeat (and the watch for lost instances) going; keep the run writes the database
    refused until it answers; close at the end."""
    settings = app[SETTINGS]
    store = await open_store(settings, instance_id=settings.instance_id)
    log.info("instance %s on %s", settings.instance_id, store.description)
    if settings.recover_at_start:
        recovered = await store.register_instance()
        if recovered:
            log.warning("marked %d run(s) left open by a previous process as failed", len(recovered))
            app[METRICS].calls_lost("server_restarted", (run.provider for run in recovered))
    else:
        await store.heartbeat()
    app[STORE] = store
    app[RUN_WRITES] = run_writes = RunWriteQueue(store)
    if CONFIG_SOURCE not in app:
        app[CONFIG_SOURCE] = StoredConfigs(store)
    heartbeats = asyncio.create_task(
        keep_heartbeat(
            store, settings, watch_others=settings.recover_at_start,
            on_lost=lambda failed: app[METRICS].calls_lost(
                "instance_lost", (run.provider for run in failed)),
        ),
        name="instance heartbeat",
    )
    yield
    heartbeats.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await heartbeats
    await run_writes.close()
    await store.close()


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    """One shared HTTP client for every provider API call of the process."""
    async with aiohttp.ClientSession(raise_for_status=False) as session:
        app[HTTP] = session
        yield


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """A serving process sends webhook deliveries, on its own HTTP client (a dead receiver
    holds none of the provider API's connections); the CLI test call's server does not."""
    if not app[SETTINGS].recover_at_start:
        yield
        return
    store = app[STORE]
    allow_private = app[SETTINGS].webhooks_allow_private
    connector = aiohttp.TCPConnector(
        limit=delivery.SENDERS, resolver=None if allow_private else PublicOnlyResolver()
    )
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False
    ) as session:
        app[WEBHOOKS] = sender = delivery.WebhookSender(
            store, session, app[SETTINGS].instance_id, allow_private=allow_private,
            on_outcome=app[METRICS].webhook_outcome,
        )
        store.run_event_listeners.append(sender.poke)
        task = asyncio.create_task(sender.run(), name="webhook sender")
        yield
        await sender.stop_claiming()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store.run_event_listeners.remove(sender.poke)


async def _speech_ctx(app: web.Application) -> AsyncIterator[None]:
    """The shared speech engines; their thread and process end with the app."""
    speech = SpeechServices(stt=GrammarRecognizer(priority=app[SETTINGS].decoder_priority))
    if app[SETTINGS].preload_speech:
        speech.stt.warm_up()
    app[SPEECH] = speech
    yield
    speech.close()


async def _close_live_calls(app: web.Application) -> None:
    """On shutdown: stop taking streams, close live calls with 1001, let their runs finish."""
    log.info("shutting down: no new calls; live ones are closed and their runs finished")
    await app[CALLS].shutdown(SHUTDOWN_GRACE_SECONDS)


@web.middleware
async def body_deadline_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A request body must arrive within the body timeout, or the answer is 408: it is read
    here, before any handler, and `request.json()`/`post()` reuse what was read."""
    if request.body_exists and request.can_read_body:
        timeout = request.app[SETTINGS].request_body_timeout
        try:
            async with asyncio.timeout(timeout):
                if request.content_type == "multipart/form-data":
                    await request.post()  # parsed from the stream: read() would leave it nothing
                else:
                    await request.read()
        except TimeoutError:
            raise RequestTooSlow(f"the request body did not arrive within {timeout:g} s") from None
        except ValueError:  # a malformed multipart body: the client's mistake, not a 500
            raise web.HTTPBadRequest() from None
    return await handler(request)


def setup_routes(app: web.Application) -> None:
    """Every route of the service, named."""
    endpoint.setup_routes(app)
    for provider in PROVIDERS.values():
        app.router.add_routes(provider.routes())
    api.setup_routes(app)
    admin.setup_routes(app)
    metrics.setup_routes(app)


def create_app(settings: Settings) -> web.Application:
    """Build the application; resources open when it starts and close when it stops."""
    app = web.Application(
        # Outermost first: the error middlewares also answer what the body deadline raises.
        middlewares=[api.error_middleware, admin.html_error_middleware, body_deadline_middleware],
        client_max_size=1024**2,
    )
    app[SETTINGS] = settings
    app[CALLS] = CallRegistry()
    app.cleanup_ctx.append(metrics.metrics_ctx)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_recordings_ctx)
    app.cleanup_ctx.append(_http_ctx)
    app.cleanup_ctx.append(_webhooks_ctx)
    app.cleanup_ctx.append(_speech_ctx)
    app.on_shutdown.append(_close_live_calls)
    admin.setup_templates(app)
    setup_routes(app)
    return app
