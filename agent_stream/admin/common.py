"""What every admin page shares: constants, rendering, the signed-in check, CSRF, flashes."""

from __future__ import annotations

import functools
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from ..errors import RETRY_AFTER_SECONDS, Conflict, DatabaseUnavailable, NotFound, RequestTooSlow
from ..keys import STORE
from ..models import Organization, User
from ..security import SESSION_COOKIE as SESSION_COOKIE  # the sign-in cookie, re-exported
from ..security import hash_session_token, redact_uuids, same_secret
from ..store import Store
from ..strict_json import whole_number
from ..urls import is_secure

log = logging.getLogger(__name__)

ROOT: Final = Path(__file__).resolve().parent.parent.parent
TEMPLATES_DIR: Final = ROOT / "templates"
STATIC_DIR: Final = ROOT / "static"

ANON_CSRF_COOKIE: Final = "agent_stream_csrf"
FLASH_COOKIE: Final = "agent_stream_flash"
SESSION_SECONDS: Final = 14 * 24 * 3600
CSRF_FIELD: Final = "csrf_token"
# What the pre-sign-in CSRF cookie holds: secrets.token_urlsafe's alphabet.
_ANON_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{20,200}")

# Sign-in throttling: this many failures for one email from one address within the
# window answer 429 until the oldest failure leaves the window.
LOGIN_MAX_FAILURES: Final = 5
LOGIN_WINDOW_SECONDS: Final = 15 * 60

MIN_PASSWORD_LENGTH: Final = 8
RUNS_PAGE_SIZE: Final = 25
LIVE_POLL_SECONDS: Final = 2

# Every admin page: no caching of signed-in pages, no framing, scripts only from us, and
# no Referer leaving the site (agent pages carry the agent uuid in their path).
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "media-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# Flash messages are codes, so a cookie can only pick one of our own sentences.
FLASHES: Final = {
    "agent_created": "Agent created. Its Agent UUID is on the Settings page.",
    "agent_renamed": "Agent renamed.",
    "agent_archived": "Agent archived: its stream URL no longer takes calls.",
    "agent_restored": "Agent restored.",
    "published": "Published. The Agent UUID is unchanged, so your stream URL keeps working.",
    "saved": "Saved as a new draft version. Publish to make calls use it.",
    "settings_saved": "Settings saved.",
    "telephony_added": "Telephony configuration added.",
    "telephony_saved": "Telephony configuration saved.",
    "telephony_deleted": "Telephony configuration deleted.",
    "webhook_added": "Webhook added.",
    "webhook_saved": "Webhook saved.",
    "webhook_paused": "Webhook paused: run events are not sent to it until you resume it.",
    "webhook_resumed": "Webhook resumed.",
    "webhook_deleted": "Webhook deleted with its deliveries.",
    "user_created": "User created.",
    "quotas_saved": "Limits saved.",
    "key_revoked": "API key revoked: the API rejects it from now on.",
    "signed_out": "You are signed out.",
    "welcome": "Welcome! Here is your starter agent.",
}

# What a page says when its form was made from a revision someone else has since changed
# (compare-and-set): the page is shown again as things are now, nothing of theirs is lost.
CHANGED_ELSEWHERE: Final = (
    "{what} was changed by someone else since you opened this page, so your change was not "
    "saved. This page now shows {it} as it is: make the change again."
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# What one request learns about its sender, typed (aiohttp request storage).
USER = web.RequestKey("admin_user", User)
ORGANIZATION = web.RequestKey("admin_organization", Organization)
SESSION_CSRF = web.RequestKey("admin_session_csrf", str)
ANON_CSRF = web.RequestKey("admin_anon_csrf", str)
SET_ANON_CSRF = web.RequestKey("admin_set_anon_csrf", bool)


class CsrfRejected(web.HTTPForbidden):
    """A form without this session's token: possibly forged by another site."""


class AdminOnly(web.HTTPForbidden):
    """A page for organization admins only."""


def token_hash(token: str) -> str:
    """Sessions are stored by the SHA-256 of the cookie: a database copy signs nobody in."""
    return hash_session_token(token)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def store_of(request: web.Request) -> Store:
    return request.app[STORE]


def user_of(request: web.Request) -> User:
    """The signed-in user (set by `page`)."""
    return request[USER]


def set_cookie(
    request: web.Request,
    response: web.StreamResponse,
    name: str,
    value: str,
    max_age: int | None = None,
) -> None:
    """Our cookies are HttpOnly, SameSite=Lax, and Secure whenever the site is on TLS."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=is_secure(request),
    )


def flash(request: web.Request, response: web.StreamResponse, code: str) -> None:
    set_cookie(request, response, FLASH_COOKIE, code, max_age=60)


def redirect(request: web.Request, location: str, *, notice: str | None = None) -> web.Response:
    """303 See Other after a form (POST-redirect-GET), with an optional flash message."""
    response = web.Response(status=303, headers={"Location": location})
    if notice:
        flash(request, response, notice)
    return response


def url(request: web.Request, name: str, query: dict[str, Any] | None = None, **parts: Any) -> str:
    target = request.app.router[name].url_for(**{k: str(v) for k, v in parts.items()})
    if query:
        target = target.with_query({k: str(v) for k, v in query.items() if v not in (None, "")})
    return str(target)


def safe_next(value: str | None) -> str | None:
    """Only a local path may be where a form sends the browser next (no open redirects):
    browsers read `//host`, `/\\host` and `/<tab>/host` as another site, so a backslash,
    whitespace or a control character anywhere, or a second leading slash, is refused."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return None
    if "\\" in value or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return None
    return value


def render(
    request: web.Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status: int = 200,
) -> web.Response:
    """Render a page with what the layout needs: the user, the CSRF token, a flash."""
    flash_code = request.cookies.get(FLASH_COOKIE)
    base: dict[str, Any] = {
        "user": request.get(USER),
        "organization": request.get(ORGANIZATION),
        "csrf_token": request.get(SESSION_CSRF) or request.get(ANON_CSRF) or "",
        "notice": FLASHES.get(flash_code or ""),
        "current_path": request.path,
        "live_poll_ms": LIVE_POLL_SECONDS * 1000,
        "nav": "",
        "tab": "",
        "conflict": None,  # CHANGED_ELSEWHERE, on the page a stale form is answered with
    }
    response = aiohttp_jinja2.render_template(
        template, request, base | (context or {}), status=status
    )
    response.headers.update(SECURITY_HEADERS)
    if flash_code:
        response.del_cookie(FLASH_COOKIE, path="/")
    if request.get(SET_ANON_CSRF):
        set_cookie(request, response, ANON_CSRF_COOKIE, request[ANON_CSRF])
    return response


def anon_csrf(request: web.Request) -> str:
    """Forms shown before sign-in (login, first run) carry a token bound to a cookie (one of
    ours: the page carries its value, which anything else, say bytes that are not UTF-8,
    could break)."""
    token = request.cookies.get(ANON_CSRF_COOKIE)
    if not token or not _ANON_TOKEN.fullmatch(token):
        token = secrets.token_urlsafe(32)
        request[SET_ANON_CSRF] = True
    request[ANON_CSRF] = token
    return token


def check_csrf(form: MultiDictProxy[Any], expected: str | None) -> None:
    """403 unless the form carries the expected token (constant-time compare)."""
    sent = form.get(CSRF_FIELD)
    if not expected or not isinstance(sent, str) or not same_secret(sent, expected):
        raise CsrfRejected()


async def signed_in_user(request: web.Request) -> tuple[User, str] | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await store_of(request).session_user(token_hash(token))


def page(*, admin: bool = False) -> Callable[[Handler], Handler]:
    """A page that needs a session (and, for writes, this session's CSRF token)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            found = await signed_in_user(request)
            if found is None:
                if request.method in ("GET", "HEAD"):
                    target = url(request, "admin_login", {"next": request.path_qs})
                else:
                    target = url(request, "admin_login")
                raise web.HTTPSeeOther(target)
            user, csrf = found
            request[USER], request[SESSION_CSRF] = user, csrf
            request[ORGANIZATION] = await store_of(request).get_organization(user.organization_id)
            if request.method not in ("GET", "HEAD"):
                check_csrf(await posted(request), csrf)
            if admin and not user.is_admin:
                raise AdminOnly()
            return await handler(request)

        return wrapper

    return decorate


async def posted(request: web.Request) -> MultiDictProxy[Any]:
    """The posted form; a 400 when its charset is one nobody knows (it cannot be read)."""
    try:
        return await request.post()
    except LookupError:
        raise web.HTTPBadRequest() from None


async def form_of(request: web.Request) -> dict[str, str]:
    """The posted form as plain text fields (files are not part of any admin form)."""
    form = await posted(request)
    return {k: v.strip() if isinstance(v, str) else "" for k, v in form.items()}


def form_revision(form: dict[str, str]) -> int | None:
    """The revision a form was rendered from (its hidden `revision` input); None when it
    has none, which saves without the check (a page from before revisions)."""
    raw = form.get("revision", "")
    if not raw:
        return None
    revision = whole_number(raw)
    if revision is None:
        raise web.HTTPBadRequest()
    return revision


def changed_elsewhere(what: str, it: str) -> str:
    """The message of a stale form, e.g. ("This agent", "the agent")."""
    return CHANGED_ELSEWHERE.format(what=what, it=it)


def int_id(request: web.Request, key: str) -> int:
    """A row id or a list index from the path; anything else (or a huge number) is simply
    not found."""
    value = whole_number(request.match_info[key])
    if value is None:
        raise NotFound(f"{key} not found")
    return value


# -- HTML errors ---------------------------------------------------------------------------

ERROR_TEXT: Final = {
    400: ("Bad request", "The request could not be understood."),
    403: ("Forbidden", "You do not have access to this page."),
    404: ("Not found", "There is nothing here, or it belongs to another organization."),
    405: ("Method not allowed", "This address does not accept that kind of request."),
    409: ("Conflict", "That would clash with something that already exists."),
    413: ("Too large", "The form you sent is larger than this server accepts."),
    429: ("Too many attempts", "Please wait before trying again."),
    408: ("Too slow", "The request did not arrive in time. Please try again."),
    500: ("Something went wrong", "The server failed to answer. The error has been logged."),
    503: ("Try again shortly", "The database is not answering right now; nothing was changed."),
}


def error_page(
    request: web.Request,
    status: int,
    message: str | None = None,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    default_title, default_message = ERROR_TEXT.get(status, ("Error", "The request failed."))
    response = render(
        request,
        "error.html",
        {"status": status, "title": title or default_title, "message": message or default_message},
        status=status,
    )
    if headers:
        response.headers.update(headers)
    return response


@web.middleware
async def html_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outside /api/: errors become readable pages (the JSON API keeps its own answers)."""
    if request.path.startswith("/api/"):
        return await handler(request)
    try:
        return await handler(request)
    except CsrfRejected:
        return error_page(
            request,
            403,
            "This form was not accepted: its security token is missing or out of date "
            "(it may have been sent from another site, or you signed out in the meantime). "
            "Go back, reload the page and try again.",
            title="Form expired",
        )
    except AdminOnly:
        return error_page(request, 403, "Only organization admins can open this page.")
    except NotFound:
        return error_page(request, 404)
    except Conflict as exc:
        return error_page(request, 409, str(exc))
    except RequestTooSlow:
        return error_page(request, 408)
    except DatabaseUnavailable as exc:
        log.warning("%s %s: %s", request.method, redact_uuids(request.path), exc)
        return error_page(request, 503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_page(request, exc.status)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, redact_uuids(request.path))
        return error_page(request, 500)
