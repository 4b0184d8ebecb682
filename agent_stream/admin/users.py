"""Users & API keys (organization admins): accounts, call quotas, keys shown once, revoking."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from ..errors import Conflict, Stale
from ..plain_text import email_problem, one_line
from ..strict_json import whole_number
from .common import (
    MIN_PASSWORD_LENGTH,
    changed_elsewhere,
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

MAX_QUOTA = 10**7
USER_CHANGED: Final = changed_elsewhere("This user", "the user")


def _quota(raw: str) -> tuple[int | None, str | None]:
    """Blank means unlimited; otherwise a whole number >= 0."""
    if not raw:
        return None, None
    value = whole_number(raw)
    if value is None or value > MAX_QUOTA:
        return None, "Enter a whole number, or leave empty for unlimited."
    return value, None


async def _users_page(
    request: web.Request,
    *,
    status: int = 200,
    new_key: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    problems: dict[str, str] | None = None,
    quota_problems: dict[int, dict[str, str]] | None = None,
    conflict: str | None = None,
) -> web.Response:
    organization_id = user_of(request).organization_id
    store = store_of(request)
    users = await store.list_users(organization_id)
    minutes = {u.id: await store.minutes_used_this_month(u.id) for u in users}
    keys = await store.list_api_keys(organization_id)
    response = render(
        request,
        "users.html",
        {
            "users": users,
            "minutes": minutes,
            "keys": keys,
            "new_key": new_key,
            "form": form or {},
            "problems": problems or {},
            "quota_problems": quota_problems or {},
            "min_password": MIN_PASSWORD_LENGTH,
            "nav": "users",
            "conflict": conflict,
        },
        status=status,
    )
    return response


@page(admin=True)
async def users(request: web.Request) -> web.StreamResponse:
    return await _users_page(request)


@page(admin=True)
async def create_user(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    problems: dict[str, str] = {}
    email = form.get("email", "")
    if (problem := email_problem(email)) is not None:
        problems["email"] = problem
    if len(form.get("password", "")) < MIN_PASSWORD_LENGTH:
        problems["password"] = f"Use at least {MIN_PASSWORD_LENGTH} characters."
    monthly, problem = _quota(form.get("monthly_minutes_limit", ""))
    if problem:
        problems["monthly_minutes_limit"] = problem
    concurrent, problem = _quota(form.get("max_concurrent_calls", ""))
    if problem:
        problems["max_concurrent_calls"] = problem
    if not problems:
        try:
            await store_of(request).create_user(
                organization_id=user_of(request).organization_id,
                email=email,
                password=form["password"],
                is_admin=form.get("is_admin") == "on",
                monthly_minutes_limit=monthly,
                max_concurrent_calls=concurrent,
            )
        except Conflict:
            problems["email"] = "A user with this email already exists."
    if problems:
        shown = {k: v for k, v in form.items() if k != "password"}
        return await _users_page(request, status=400, form=shown, problems=problems)
    return redirect(request, url(request, "admin_users"), notice="user_created")


@page(admin=True)
async def set_quotas(request: web.Request) -> web.StreamResponse:
    organization_id = user_of(request).organization_id
    target = await store_of(request).get_org_user(organization_id, int_id(request, "id"))
    form = await form_of(request)
    revision = form_revision(form)
    if revision is not None and revision != target.revision:  # someone saved in between
        return await _users_page(request, status=409, conflict=USER_CHANGED)
    monthly, monthly_problem = _quota(form.get("monthly_minutes_limit", ""))
    concurrent, concurrent_problem = _quota(form.get("max_concurrent_calls", ""))
    if monthly_problem or concurrent_problem:
        problems: dict[str, Any] = {}
        if monthly_problem:
            problems["monthly_minutes_limit"] = monthly_problem
        if concurrent_problem:
            problems["max_concurrent_calls"] = concurrent_problem
        return await _users_page(request, status=400, quota_problems={target.id: problems})
    try:
        await store_of(request).set_user_quotas(
            organization_id, target.id, monthly_minutes_limit=monthly,
            max_concurrent_calls=concurrent, revision=revision,
        )
    except Stale:
        return await _users_page(request, status=409, conflict=USER_CHANGED)
    return redirect(request, url(request, "admin_users"), notice="quotas_saved")


@page(admin=True)
async def create_key(request: web.Request) -> web.StreamResponse:
    """The key is in this one answer and nowhere else (it is stored hashed)."""
    organization_id = user_of(request).organization_id
    form = await form_of(request)
    owner_id = form.get("user_id", "")
    owner = await store_of(request).get_org_user(
        organization_id, whole_number(owner_id, max_digits=17) or 0
    )
    name = form.get("name", "")[:120] or "admin"
    if not one_line(name):
        problem = "Keep the name on one line, without control characters."
        return await _users_page(request, status=400, problems={"key_name": problem})
    key, plaintext = await store_of(request).create_api_key(owner.id, name)
    return await _users_page(
        request, new_key={"name": key.name, "owner": owner.email, "value": plaintext}
    )


@page(admin=True)
async def revoke_key(request: web.Request) -> web.StreamResponse:
    await store_of(request).revoke_api_key(user_of(request).organization_id, int_id(request, "id"))
    return redirect(request, url(request, "admin_users"), notice="key_revoked")
