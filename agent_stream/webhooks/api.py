"""The webhooks part of the JSON API (CONTRACT sections 3 and 9), scoped to the API key's
organization. A webhook's secret is never answered, only its hint; a secret the server
generated (none was given) is in the creation's answer, once, like an API key."""
from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from ..api import MAX_ROW_ID, ApiError, api_user, edit_check, etag, json_body
from ..errors import NotFound, Stale
from ..keys import STORE
from ..models import Webhook, WebhookDelivery
from ..security import mask_secret
from ..store import Store
from .checks import WebhookInput, check_webhook
from .signing import new_secret

DEFAULT_DELIVERIES: Final = 50
MAX_DELIVERIES: Final = 200
# What a PATCH may change; what a GET answered besides may be sent back and is ignored.
_EDITABLE: Final = frozenset({"url", "events", "secret", "active", "revision"})
_READ_ONLY: Final = frozenset({"id", "secret_hint", "has_secret", "created_at", "updated_at"})


def webhook_json(webhook: Webhook) -> dict[str, Any]:
    return {
        "id": webhook.id,
        "url": webhook.url,
        "events": webhook.events,
        "active": webhook.active,
        "has_secret": bool(webhook.secret),
        "secret_hint": mask_secret(webhook.secret),
        "created_at": webhook.created_at,
        "updated_at": webhook.updated_at,
        "revision": webhook.revision,
    }


def delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event": delivery.event,
        "event_id": delivery.event_id,
        "run_id": delivery.run_id,
        "status": delivery.state,
        "status_code": delivery.status_code,
        "attempts": delivery.attempts,
        "latency_ms": delivery.latency_ms,
        "error": delivery.error,
        "created_at": delivery.created_at,
        "last_attempt_at": delivery.last_attempt_at,
        "next_attempt_at": delivery.next_attempt_at,
        "delivered_at": delivery.delivered_at,
    }


def _answer(body: dict[str, Any], revision: int, *, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers={"ETag": etag(revision)})


def _webhook_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or not 0 < int(raw) <= MAX_ROW_ID:
        raise NotFound("webhook not found")
    return int(raw)


def _checked(body: dict[str, Any], *, creating: bool) -> WebhookInput:
    unknown = sorted(set(body) - _EDITABLE - _READ_ONLY)
    if unknown:
        raise ApiError(400, f"unknown field '{unknown[0]}': a webhook has url, events, secret "
                            f"and active")
    given, problems = check_webhook(body, creating=creating)
    if problems:
        field, message = next(iter(problems.items()))
        raise ApiError(400, f"'{field}' {message}",
                       [{"field": f, "message": m} for f, m in problems.items()])
    return given


async def create_webhook(request: web.Request) -> web.Response:
    """201 with the webhook; with `secret` too when none was given (generated, shown once)."""
    user = await api_user(request)
    given = _checked(await json_body(request), creating=True)
    secret = given.secret or new_secret()
    webhook = await request.app[STORE].create_webhook(
        user.organization_id, url=given.url or "", events=given.events or [], secret=secret,
        active=True if given.active is None else given.active,
    )
    body = webhook_json(webhook)
    if given.secret is None:
        body["secret"] = secret
    return _answer(body, webhook.revision, status=201)


async def list_webhooks(request: web.Request) -> web.Response:
    user = await api_user(request)
    webhooks = await request.app[STORE].list_webhooks(user.organization_id)
    return web.json_response({"webhooks": [webhook_json(w) for w in webhooks]})


async def get_webhook(request: web.Request) -> web.Response:
    user = await api_user(request)
    webhook = await request.app[STORE].get_webhook(user.organization_id, _webhook_id(request))
    return _answer(webhook_json(webhook), webhook.revision)


async def patch_webhook(request: web.Request) -> web.Response:
    """Edit (`"active": false` pauses it); with If-Match or "revision", only if nobody
    changed it since it was read. A secret is kept unless a new one is given."""
    user = await api_user(request)
    body = await json_body(request)
    check = edit_check(request, body)
    given = _checked(body, creating=False)
    store: Store = request.app[STORE]
    current = await store.get_webhook(user.organization_id, _webhook_id(request))
    revision = check.expected(current.revision, "the webhook")
    try:
        webhook = await store.update_webhook(
            user.organization_id, current.id, url=given.url, events=given.events,
            secret=given.secret, active=given.active, revision=revision,
        )
    except Stale as exc:
        raise check.refused(exc) from None
    return _answer(webhook_json(webhook), webhook.revision)


async def delete_webhook(request: web.Request) -> web.Response:
    """Delete it and its deliveries; with If-Match, only if nobody changed it since."""
    user = await api_user(request)
    check = edit_check(request, None)
    store: Store = request.app[STORE]
    webhook_id = _webhook_id(request)
    revision = None
    if check.tags is not None:
        current = await store.get_webhook(user.organization_id, webhook_id)
        revision = check.expected(current.revision, "the webhook")
    try:
        await store.delete_webhook(user.organization_id, webhook_id, revision=revision)
    except Stale as exc:
        raise check.refused(exc) from None
    return web.Response(status=204)


async def list_deliveries(request: web.Request) -> web.Response:
    """The webhook's last deliveries, newest first (`?limit=`, at most 200)."""
    user = await api_user(request)
    raw = request.query.get("limit", str(DEFAULT_DELIVERIES))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_DELIVERIES:
        raise ApiError(400, f"'limit' must be an integer between 1 and {MAX_DELIVERIES}")
    deliveries = await request.app[STORE].list_deliveries(
        user.organization_id, _webhook_id(request), limit=int(raw)
    )
    return web.json_response({"deliveries": [delivery_json(d) for d in deliveries]})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api/v1/webhooks", create_webhook, name="api_webhooks_create")
    router.add_get("/api/v1/webhooks", list_webhooks, name="api_webhooks")
    router.add_get("/api/v1/webhooks/{id}", get_webhook, name="api_webhook")
    router.add_patch("/api/v1/webhooks/{id}", patch_webhook, name="api_webhook_patch")
    router.add_delete("/api/v1/webhooks/{id}", delete_webhook, name="api_webhook_delete")
    router.add_get("/api/v1/webhooks/{id}/deliveries", list_deliveries,
                   name="api_webhook_deliveries")
