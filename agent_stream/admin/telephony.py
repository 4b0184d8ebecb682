"""Telephony configurations: Cloudonix domains and their bearer tokens (always masked)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..errors import Conflict
from ..models import TelephonyConfig
from ..providers.cloudonix import normalize_domain, parse_domain
from ..security import mask_secret
from .common import form_of, int_id, page, redirect, render, store_of, url, user_of

PROVIDER = "cloudonix"


def shown(config: TelephonyConfig) -> dict[str, Any]:
    """A configuration as a page shows it: the token only as dots and its last four."""
    return {
        "id": config.id,
        "name": config.name,
        "domain_id": config.domain_id,
        "token_hint": mask_secret(config.bearer_token) or "none",
        "application_name": config.application_name or "",
        "from_numbers": ", ".join(config.from_numbers),
        "updated_at": config.updated_at,
    }


def _numbers(raw: str) -> list[str]:
    return [n.strip() for n in re.split(r"[,\n]", raw) if n.strip()]


def _parse(form: dict[str, str], *, creating: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """The fields to store and the problems by field; an empty token means 'keep it'."""
    problems: dict[str, str] = {}
    domain = normalize_domain(form.get("domain_id", ""))
    try:
        parse_domain(domain)
    except ValueError as exc:
        problems["domain_id"] = str(exc)
    token = form.get("bearer_token", "")
    if creating and not token:
        problems["bearer_token"] = "Paste the domain's bearer token (Cloudonix cockpit, API keys)."
    if len(token) > 4096:
        problems["bearer_token"] = "That token is too long."
    numbers = _numbers(form.get("from_numbers", ""))
    if any(not re.fullmatch(r"\+?[0-9*#]{2,20}", n) for n in numbers):
        problems["from_numbers"] = "Numbers are digits with an optional leading +, comma-separated."
    values = {
        "name": (form.get("name") or domain)[:120],
        "domain_id": domain,
        "bearer_token": token or None,
        "application_name": form.get("application_name", "")[:200] or None,
        "from_numbers": numbers,
    }
    return values, problems


async def _list_page(
    request: web.Request,
    *,
    status: int = 200,
    form: dict[str, str] | None = None,
    problems: dict[str, str] | None = None,
) -> web.Response:
    configs = await store_of(request).list_telephony_configs(user_of(request).organization_id)
    return render(
        request,
        "telephony.html",
        {
            "configs": [shown(c) for c in configs],
            "form": form or {},
            "problems": problems or {},
            "nav": "telephony",
        },
        status=status,
    )


@page()
async def telephony(request: web.Request) -> web.StreamResponse:
    return await _list_page(request)


@page()
async def create(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    values, problems = _parse(form, creating=True)
    shown_form = {k: v for k, v in form.items() if k != "bearer_token"}
    if not problems:
        try:
            await store_of(request).create_telephony_config(
                organization_id=user_of(request).organization_id,
                provider=PROVIDER,
                name=values["name"],
                domain_id=values["domain_id"],
                bearer_token=values["bearer_token"],
                application_name=values["application_name"],
                from_numbers=values["from_numbers"],
            )
        except Conflict:
            problems["domain_id"] = f"There is already a configuration for {values['domain_id']}."
    if problems:
        return await _list_page(request, status=400, form=shown_form, problems=problems)
    return redirect(request, url(request, "admin_telephony"), notice="telephony_added")


async def _config(request: web.Request) -> TelephonyConfig:
    return await store_of(request).get_telephony_config(
        user_of(request).organization_id, int_id(request, "id")
    )


@page()
async def edit_page(request: web.Request) -> web.StreamResponse:
    config = await _config(request)
    return render(
        request,
        "telephony_edit.html",
        {
            "config": shown(config),
            "form": shown(config),
            "problems": {},
            "nav": "telephony",
        },
    )


@page()
async def update(request: web.Request) -> web.StreamResponse:
    """Edit; the stored token stays unless a new one is pasted."""
    config = await _config(request)
    form = await form_of(request)
    values, problems = _parse(form, creating=False)
    if not problems:
        try:
            # an emptied application name is cleared; an empty token keeps the stored one
            values["application_name"] = values["application_name"] or ""
            await store_of(request).update_telephony_config(
                config.organization_id, config.id, **values
            )
        except Conflict:
            problems["domain_id"] = f"There is already a configuration for {values['domain_id']}."
    if problems:
        shown_form = {k: v for k, v in form.items() if k != "bearer_token"}
        return render(
            request,
            "telephony_edit.html",
            {
                "config": shown(config),
                "form": shown_form,
                "problems": problems,
                "nav": "telephony",
            },
            status=400,
        )
    return redirect(request, url(request, "admin_telephony"), notice="telephony_saved")


@page()
async def delete_page(request: web.Request) -> web.StreamResponse:
    """Deleting asks first: calls to that domain fail with 4400 once it is gone."""
    config = await _config(request)
    return render(request, "telephony_delete.html", {"config": shown(config), "nav": "telephony"})


@page()
async def delete(request: web.Request) -> web.StreamResponse:
    config = await _config(request)
    await store_of(request).delete_telephony_config(config.organization_id, config.id)
    return redirect(request, url(request, "admin_telephony"), notice="telephony_deleted")
