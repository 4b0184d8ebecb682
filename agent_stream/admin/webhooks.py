"""Run webhooks in the admin: add, edit, pause and resume, delete, and each one's recent
deliveries. Secrets only as their last four characters; a generated one is shown once."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from ..errors import Stale
from ..models import Webhook
from ..webhooks.api import webhook_json
from ..webhooks.checks import EVENTS, check_webhook
from ..webhooks.signing import new_secret
from .common import (
    changed_elsewhere,
    form_of,
    form_revision,
    int_id,
    page,
    posted,
    redirect,
    render,
    store_of,
    url,
    user_of,
)

WEBHOOK_CHANGED: Final = changed_elsewhere("This webhook", "the webhook")
DELIVERIES_SHOWN: Final = 25


def _given(form: dict[str, str], events: list[str]) -> dict[str, Any]:
    """A posted form in the shape the shared check takes (a blank secret: keep or generate)."""
    return {"url": form.get("url", ""), "events": events, "secret": form.get("secret") or None}


async def _events(request: web.Request) -> list[str]:
    return [str(e) for e in (await posted(request)).getall("events", []) if str(e) in EVENTS]


async def _list_page(
    request: web.Request, *, status: int = 200, form: dict[str, Any] | None = None,
    problems: dict[str, str] | None = None, new_secret_for: dict[str, str] | None = None,
) -> web.Response:
    webhooks = await store_of(request).list_webhooks(user_of(request).organization_id)
    return render(request, "webhooks.html", {
        "webhooks": [webhook_json(w) for w in webhooks],
        "events": EVENTS,
        "form": form or {"events": list(EVENTS)},
        "problems": problems or {},
        "new_secret": new_secret_for,
        "nav": "webhooks",
    }, status=status)


@page()
async def webhooks(request: web.Request) -> web.StreamResponse:
    return await _list_page(request)


@page()
async def create(request: web.Request) -> web.StreamResponse:
    """Add one; without a secret one is generated and shown on this answer only."""
    form = await form_of(request)
    events = await _events(request)
    given, problems = check_webhook(_given(form, events), creating=True)
    if problems:
        return await _list_page(request, status=400, problems=problems,
                                form={"url": form.get("url", ""), "events": events})
    secret = given.secret or new_secret()
    webhook = await store_of(request).create_webhook(
        user_of(request).organization_id, url=given.url or "", events=given.events or [],
        secret=secret,
    )
    if given.secret:
        return redirect(request, url(request, "admin_webhooks"), notice="webhook_added")
    return await _list_page(request, new_secret_for={"url": webhook.url, "value": secret})


async def _webhook(request: web.Request) -> Webhook:
    return await store_of(request).get_webhook(user_of(request).organization_id, int_id(request, "id"))


async def _detail_page(
    request: web.Request, webhook: Webhook, *, status: int = 200, form: dict[str, Any] | None = None,
    problems: dict[str, str] | None = None, conflict: str | None = None,
) -> web.Response:
    deliveries = await store_of(request).list_deliveries(
        webhook.organization_id, webhook.id, limit=DELIVERIES_SHOWN
    )
    return render(request, "webhook_edit.html", {
        "webhook": webhook_json(webhook),
        "events": EVENTS,
        "form": form or {"url": webhook.url, "events": webhook.events},
        "problems": problems or {},
        "deliveries": deliveries,
        "nav": "webhooks",
        "conflict": conflict,
    }, status=status)


@page()
async def detail(request: web.Request) -> web.StreamResponse:
    return await _detail_page(request, await _webhook(request))


@page()
async def update(request: web.Request) -> web.StreamResponse:
    """Edit; the secret stays unless a new one is pasted. A form made from an older revision
    shows the webhook as it is now (409)."""
    webhook = await _webhook(request)
    form = await form_of(request)
    events = await _events(request)
    revision = form_revision(form)
    given, problems = check_webhook(_given(form, events), creating=True)
    if problems:
        return await _detail_page(request, webhook, status=400, problems=problems,
                                  form={"url": form.get("url", ""), "events": events})
    try:
        await store_of(request).update_webhook(
            webhook.organization_id, webhook.id, url=given.url, events=given.events,
            secret=given.secret, revision=revision,
        )
    except Stale:
        return await _detail_page(request, await _webhook(request), status=409,
                                  conflict=WEBHOOK_CHANGED)
    return redirect(request, url(request, "admin_webhook", id=webhook.id), notice="webhook_saved")


@page()
async def set_active(request: web.Request) -> web.StreamResponse:
    """Pause (no new deliveries, none sent) or resume (what waited is sent)."""
    webhook = await _webhook(request)
    form = await form_of(request)
    active = form.get("active") == "1"
    await store_of(request).update_webhook(webhook.organization_id, webhook.id, active=active)
    return redirect(request, url(request, "admin_webhook", id=webhook.id),
                    notice="webhook_resumed" if active else "webhook_paused")


@page()
async def delete_page(request: web.Request) -> web.StreamResponse:
    """Deleting asks first: the deliveries go with it, those still waiting are never sent."""
    return render(request, "webhook_delete.html", {
        "webhook": webhook_json(await _webhook(request)), "nav": "webhooks",
    })


@page()
async def delete(request: web.Request) -> web.StreamResponse:
    webhook = await _webhook(request)
    await store_of(request).delete_webhook(webhook.organization_id, webhook.id)
    return redirect(request, url(request, "admin_webhooks"), notice="webhook_deleted")
