"""Signing in and out, the first-run page, and throttling of failed sign-ins."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

from aiohttp import web

from ..errors import Conflict
from ..plain_text import email_problem, one_line
from ..workflow import starter_definition
from .common import (
    ANON_CSRF_COOKIE,
    LOGIN_MAX_FAILURES,
    LOGIN_WINDOW_SECONDS,
    MIN_PASSWORD_LENGTH,
    SESSION_COOKIE,
    SESSION_SECONDS,
    anon_csrf,
    check_csrf,
    error_page,
    form_of,
    posted,
    redirect,
    render,
    safe_next,
    set_cookie,
    signed_in_user,
    store_of,
    token_hash,
    url,
)

log = logging.getLogger(__name__)

STARTER_AGENT_NAME = "Front desk"


async def start_session(request: web.Request, response: web.StreamResponse, user_id: int) -> None:
    """A fresh random session token in an HttpOnly cookie; only its hash is stored."""
    token = await store_of(request).create_session(user_id, seconds=SESSION_SECONDS)
    set_cookie(request, response, SESSION_COOKIE, token, max_age=SESSION_SECONDS)


async def home(request: web.Request) -> web.StreamResponse:
    """`/`: the first-run page on an empty database, else the agents (or sign-in)."""
    if await store_of(request).count_users() == 0:
        raise web.HTTPSeeOther(url(request, "admin_first_run"))
    if await signed_in_user(request) is None:
        raise web.HTTPSeeOther(url(request, "admin_login"))
    raise web.HTTPSeeOther(url(request, "admin_agents"))


async def login_page(request: web.Request) -> web.StreamResponse:
    if await store_of(request).count_users() == 0:
        raise web.HTTPSeeOther(url(request, "admin_first_run"))
    if await signed_in_user(request) is not None:
        raise web.HTTPSeeOther(safe_next(request.query.get("next")) or url(request, "admin_agents"))
    anon_csrf(request)
    return render(request, "login.html", {"next": safe_next(request.query.get("next")) or ""})


async def login(request: web.Request) -> web.StreamResponse:
    """Check the password, unless this email has failed too often from this address."""
    anon_csrf(request)
    check_csrf(await posted(request), request.cookies.get(ANON_CSRF_COOKIE))
    form = await form_of(request)
    email, password = form.get("email", ""), form.get("password", "")
    next_path = safe_next(form.get("next")) or ""
    if not one_line(email):  # nobody's email (and no database could look a NUL up)
        return _wrong_password(request, email, next_path)
    ip = request.remote or "unknown"
    store = store_of(request)
    since = datetime.now(UTC) - timedelta(seconds=LOGIN_WINDOW_SECONDS)
    failures, oldest = await store.login_failures_since(
        email.lower(), ip, since.isoformat(timespec="milliseconds")
    )
    if failures >= LOGIN_MAX_FAILURES:
        retry = LOGIN_WINDOW_SECONDS
        if oldest:
            lifted = datetime.fromisoformat(oldest) + timedelta(seconds=LOGIN_WINDOW_SECONDS)
            retry = max(1, math.ceil((lifted - datetime.now(UTC)).total_seconds()))
        minutes = math.ceil(retry / 60)
        log.warning("sign-in throttled for one email from %s", ip)
        return error_page(
            request,
            429,
            f"Too many failed sign-ins for this email from your address. "
            f"Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
            title="Too many sign-in attempts",
            headers={"Retry-After": str(retry)},
        )
    user = await store.check_password(email, password) if email and password else None
    if user is None:
        if email:
            await store.record_login_failure(email.lower(), ip)
        return _wrong_password(request, email, next_path)
    await store.clear_login_failures(email.lower(), ip)
    response = redirect(request, next_path or url(request, "admin_agents"))
    await start_session(request, response, user.id)
    return response


def _wrong_password(request: web.Request, email: str, next_path: str) -> web.Response:
    return render(
        request,
        "login.html",
        {"error": "Wrong email or password.", "email": email, "next": next_path},
        status=401,
    )


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session server-side (the cookie alone would be enough to come back)."""
    token = request.cookies.get(SESSION_COOKIE)
    found = await signed_in_user(request)
    if found is not None:
        check_csrf(await posted(request), found[1])
        await store_of(request).delete_session(token_hash(token or ""))
    response = redirect(request, url(request, "admin_login"), notice="signed_out")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


def _first_run_problems(form: dict[str, str]) -> dict[str, str]:
    problems: dict[str, str] = {}
    if not form.get("organization"):
        problems["organization"] = "Name your organization."
    elif not one_line(form["organization"]):
        problems["organization"] = "Name your organization on one line, without control characters."
    if (problem := email_problem(form.get("email", ""))) is not None:
        problems["email"] = problem
    if len(form.get("password", "")) < MIN_PASSWORD_LENGTH:
        problems["password"] = f"Use at least {MIN_PASSWORD_LENGTH} characters."
    elif form.get("password") != form.get("password_again"):
        problems["password_again"] = "The two passwords differ."
    return problems


async def first_run_page(request: web.Request) -> web.StreamResponse:
    if await store_of(request).count_users() > 0:
        raise web.HTTPSeeOther(url(request, "admin_login"))
    anon_csrf(request)
    return render(request, "first_run.html", {"form": {}, "problems": {}})


async def first_run(request: web.Request) -> web.StreamResponse:
    """Create the organization, its first admin and a starter agent, then sign in."""
    anon_csrf(request)
    check_csrf(await posted(request), request.cookies.get(ANON_CSRF_COOKIE))
    store = store_of(request)
    if await store.count_users() > 0:
        raise web.HTTPSeeOther(url(request, "admin_login"))
    form = await form_of(request)
    problems = _first_run_problems(form)
    if problems:
        shown = {k: v for k, v in form.items() if k in ("organization", "email")}
        return render(request, "first_run.html", {"form": shown, "problems": problems}, status=400)
    try:
        user = await store.claim_first_run(
            organization_name=form["organization"], email=form["email"], password=form["password"]
        )
    except Conflict:
        raise web.HTTPSeeOther(url(request, "admin_login")) from None
    workflow = await store.create_workflow(
        organization_id=user.organization_id,
        owner_user_id=user.id,
        name=STARTER_AGENT_NAME,
        definition=starter_definition(),
    )
    log.info("first run: organization and admin user created")
    response = redirect(request, url(request, "admin_agent", uuid=workflow.uuid), notice="welcome")
    await start_session(request, response, user.id)
    return response
