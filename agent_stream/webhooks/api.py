"""The webhooks part of the JSON API (CONTRACT sections 3 and 9), scoped to the API key's
organization. A webhook's secret is never answered, only its hint; a secret the server
generated (none was given) is in the creation's answer, once, like an API key."""
from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from .. import api_schemas as schemas
from ..api import (
    BAD_REQUEST,
    IF_MATCH,
    MISSING,
    STALE_BODY,
    STALE_TAG,
    ApiError,
    api_user,
    delete_unless_changed,
    edit_check,
    json_body,
    one_answer,
    one_resource,
)
from ..api_schemas import validated
from ..errors import NotFound, Stale
from ..keys import STORE
from ..models import Webhook, WebhookDelivery
from ..openapi import Answer, operation
from ..security import mask_secret
from ..store import Store
from .checks import WebhookInput, check_webhook
from .signing import new_secret

_WEBHOOKS: Final = ("Webhooks",)


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


def _webhook_id(request: web.Request) -> int:
    value = schemas.row_id(request.match_info["id"])
    if value is None:
        raise NotFound("webhook not found")
    return value


def _checked(body: schemas.WebhookCreate | schemas.WebhookPatch, *, creating: bool) -> WebhookInput:
    """What the schema let through, checked further (a URL's host, no credentials) by the
    check the admin's form uses too."""
    given, problems = check_webhook(body.model_dump(exclude_none=True), creating=creating)
    if problems:
        field, message = next(iter(problems.items()))
        raise ApiError(400, f"'{field}' {message}",
                       [{"field": f, "message": m} for f, m in problems.items()])
    return given


@operation(
    "Add a webhook", request=schemas.WebhookCreate, tags=_WEBHOOKS,
    responses={201: one_answer("Added; with `secret` when the server generated it.",
                                schemas.NewWebhook), 400: BAD_REQUEST},
)
async def create_webhook(request: web.Request) -> web.Response:
    """201 with the webhook; with `secret` too when none was given (generated, shown once)."""
    user = await api_user(request)
    given = _checked(validated(schemas.WebhookCreate, await json_body(request)), creating=True)
    secret = given.secret or new_secret()
    webhook = await request.app[STORE].create_webhook(
        user.organization_id, url=given.url or "", events=given.events or [], secret=secret,
        active=True if given.active is None else given.active,
    )
    body = webhook_json(webhook)
    if given.secret is None:
        body["secret"] = secret
    return one_resource(body, webhook.revision, status=201)


@operation("List the organization's webhooks", tags=_WEBHOOKS,
           responses={200: Answer("Every webhook, secrets only as hints.", schemas.WebhookList)})
async def list_webhooks(request: web.Request) -> web.Response:
    user = await api_user(request)
    webhooks = await request.app[STORE].list_webhooks(user.organization_id)
    return web.json_response({"webhooks": [webhook_json(w) for w in webhooks]})


@operation("Read a webhook", tags=_WEBHOOKS,
           responses={200: one_answer("The webhook.", schemas.Webhook), 404: MISSING})
async def get_webhook(request: web.Request) -> web.Response:
    user = await api_user(request)
    webhook = await request.app[STORE].get_webhook(user.organization_id, _webhook_id(request))
    return one_resource(webhook_json(webhook), webhook.revision)


@operation(
    "Edit, pause or resume a webhook", request=schemas.WebhookPatch, headers=(IF_MATCH,),
    tags=_WEBHOOKS,
    responses={200: one_answer("The edited webhook.", schemas.Webhook), 400: BAD_REQUEST,
               404: MISSING, 409: STALE_BODY, 412: STALE_TAG},
)
async def patch_webhook(request: web.Request) -> web.Response:
    """Edit (`"active": false` pauses it); with If-Match or "revision", only if nobody
    changed it since it was read. A secret is kept unless a new one is given."""
    user = await api_user(request)
    body = validated(schemas.WebhookPatch, await json_body(request))
    check = edit_check(request, body.revision)
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
    return one_resource(webhook_json(webhook), webhook.revision)


@operation(
    "Delete a webhook and its deliveries", headers=(IF_MATCH,), tags=_WEBHOOKS,
    responses={204: Answer("Deleted."), 400: BAD_REQUEST, 404: MISSING, 412: STALE_TAG},
)
async def delete_webhook(request: web.Request) -> web.Response:
    """Delete it and its deliveries; with If-Match, only if nobody changed it since."""
    user = await api_user(request)
    store: Store = request.app[STORE]
    webhook_id = _webhook_id(request)

    async def current_revision() -> int:
        return (await store.get_webhook(user.organization_id, webhook_id)).revision

    async def delete(revision: int | None) -> None:
        await store.delete_webhook(user.organization_id, webhook_id, revision=revision)

    return await delete_unless_changed(request, current_revision, delete, "the webhook")


@operation(
    "A webhook's last deliveries", query=schemas.DeliveriesQuery, tags=_WEBHOOKS,
    responses={200: Answer("Newest first: status, attempts, latency and error of each.",
                           schemas.DeliveryList), 400: BAD_REQUEST, 404: MISSING},
)
async def list_deliveries(request: web.Request) -> web.Response:
    """The webhook's last deliveries, newest first (`?limit=`, at most 200)."""
    user = await api_user(request)
    query = validated(schemas.DeliveriesQuery, {k: request.query[k] for k in request.query},
                      strict=False)
    deliveries = await request.app[STORE].list_deliveries(
        user.organization_id, _webhook_id(request), limit=query.limit
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
