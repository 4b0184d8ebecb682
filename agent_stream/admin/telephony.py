"""Telephony configurations of every provider: their fields, their secrets only as hints
(kept unless replaced), checked by the same rules as the API (providers/configs.py)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from ..errors import Conflict, NotFound, Stale
from ..models import TelephonyConfig
from ..providers import DEFAULT_PROVIDER, PROVIDERS, provider_named
from ..providers.base import Provider
from ..providers.configs import check_config, needs_no_configuration, numbers_from_text, save_config
from ..security import mask_secret
from .common import (
    changed_elsewhere,
    error_page,
    form_of,
    form_revision,
    int_id,
    page,
    redirect,
    render,
    store_of,
    url,
    user_of,
)

CONFIG_CHANGED: Final = changed_elsewhere(
    "This telephony configuration", "the configuration"
)


def _provider(name: str | None) -> Provider:
    provider = provider_named(name or DEFAULT_PROVIDER)
    if provider is None:
        raise NotFound("no such provider")
    return provider


def shown(config: TelephonyConfig) -> dict[str, Any]:
    """A configuration as a page shows it: its secrets only as dots and their last four."""
    provider = _provider(config.provider)
    secrets = [f for f in provider.fields if f.secret]
    hints = {
        f.name: (mask_secret(config.secrets.get(f.name)) if f.hint_shown else "set")
        if config.secrets.get(f.name) else "none"
        for f in secrets
    }
    return {
        "id": config.id,
        "name": config.name,
        "provider": provider,
        "account": config.account_id,
        "secret_hints": [(f.label, hints[f.name]) for f in secrets],
        "hints": hints,
        "from_numbers": ", ".join(config.from_numbers),
        "updated_at": config.updated_at,
        "revision": config.revision,  # what its edit form was made from
    }


def _form_values(provider: Provider, form: dict[str, str]) -> dict[str, Any]:
    """A posted form in the shape the shared check takes (numbers as a list)."""
    raw: dict[str, Any] = {f.name: form.get(f.name, "") for f in provider.fields}
    raw["name"] = form.get("name", "")
    raw["from_numbers"] = numbers_from_text(form.get("from_numbers", ""))
    return raw


def _refilled(provider: Provider, form: dict[str, str]) -> dict[str, str]:
    """What the form shows again after a problem: never a secret."""
    secret = set(provider.secret_fields)
    return {k: v for k, v in form.items() if k not in secret}


async def _list_page(
    request: web.Request,
    provider: Provider,
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
            "configs": [shown(c) for c in configs if c.provider in PROVIDERS],
            "providers": [p for p in PROVIDERS.values() if p.needs_configuration],
            "provider": provider,
            "form": form or {},
            "problems": problems or {},
            "nav": "telephony",
        },
        status=status,
    )


@page()
async def telephony(request: web.Request) -> web.StreamResponse:
    provider = _provider(request.query.get("provider"))
    if (refusal := needs_no_configuration(provider)) is not None:
        return error_page(request, 400, refusal, title="Nothing to configure")
    return await _list_page(request, provider)


async def _save(
    request: web.Request, provider: Provider, form: dict[str, str], organization_id: int,
    config_id: int | None = None, revision: int | None = None,
) -> dict[str, str]:
    """Check and store a posted configuration (a new one, or the changes to `config_id`
    as read at `revision`: Stale if it has changed since); the problems by field, none
    when it was stored."""
    given, found = check_config(provider, _form_values(provider, form), creating=config_id is None)
    problems = {p.field: p.message for p in found}
    if not problems:
        try:
            await save_config(
                store_of(request), provider, organization_id, given, config_id=config_id,
                revision=revision,
            )
        except Stale:
            raise
        except Conflict:
            problems[provider.account_field or "name"] = (
                f"There is already a configuration for {given.account_id}."
            )
    return problems


@page()
async def create(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    provider = _provider(form.get("provider"))
    if (refusal := needs_no_configuration(provider)) is not None:
        return error_page(request, 400, refusal, title="Nothing to configure")
    problems = await _save(request, provider, form, user_of(request).organization_id)
    if problems:
        return await _list_page(
            request, provider, status=400, form=_refilled(provider, form), problems=problems
        )
    return redirect(request, url(request, "admin_telephony"), notice="telephony_added")


async def _config(request: web.Request) -> TelephonyConfig:
    config = await store_of(request).get_telephony_config(
        user_of(request).organization_id, int_id(request, "id")
    )
    if config.provider not in PROVIDERS:
        raise NotFound("telephony configuration not found")
    return config


def _edit_form(config: TelephonyConfig) -> dict[str, str]:
    return {**config.fields, "name": config.name, "from_numbers": ", ".join(config.from_numbers)}


def _edit_page(
    request: web.Request, config: TelephonyConfig, *, status: int = 200,
    conflict: str | None = None,
) -> web.Response:
    return render(
        request,
        "telephony_edit.html",
        {
            "config": shown(config),
            "provider": _provider(config.provider),
            "form": _edit_form(config),
            "problems": {},
            "nav": "telephony",
            "conflict": conflict,
        },
        status=status,
    )


@page()
async def edit_page(request: web.Request) -> web.StreamResponse:
    return _edit_page(request, await _config(request))


@page()
async def update(request: web.Request) -> web.StreamResponse:
    """Edit; a stored secret stays unless a new one is pasted. A form made from an older
    revision (someone else saved in between) shows the configuration as it is now (409)."""
    config = await _config(request)
    provider = _provider(config.provider)
    form = await form_of(request)
    revision = form_revision(form)
    try:
        if revision is not None and revision != config.revision:
            raise Stale(CONFIG_CHANGED, current=config.revision)
        problems = await _save(
            request, provider, form, config.organization_id, config_id=config.id,
            revision=revision,
        )
    except Stale:
        return _edit_page(request, await _config(request), status=409, conflict=CONFIG_CHANGED)
    if problems:
        return render(
            request,
            "telephony_edit.html",
            {
                "config": shown(config),
                "provider": provider,
                "form": _refilled(provider, form),
                "problems": problems,
                "nav": "telephony",
            },
            status=400,
        )
    return redirect(request, url(request, "admin_telephony"), notice="telephony_saved")


@page()
async def delete_page(request: web.Request) -> web.StreamResponse:
    """Deleting asks first: calls it served fail with 4400 once it is gone."""
    config = await _config(request)
    return render(request, "telephony_delete.html", {"config": shown(config), "nav": "telephony"})


@page()
async def delete(request: web.Request) -> web.StreamResponse:
    config = await _config(request)
    await store_of(request).delete_telephony_config(config.organization_id, config.id)
    return redirect(request, url(request, "admin_telephony"), notice="telephony_deleted")
