"""The browser admin (contract section 4): server-rendered Jinja pages on the same Store
the JSON API uses. `setup_admin(app)` wires templates, static files and named routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from . import agents, auth, overview, runs, talk, telephony, users, webhooks
from .common import STATIC_DIR, TEMPLATES_DIR, html_error_middleware

__all__ = ["html_error_middleware", "setup_routes", "setup_templates"]


def when(value: str | None) -> str:
    """An ISO timestamp as a person reads it (UTC, to the second)."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {rest:02d}s" if hours else f"{minutes}m {rest:02d}s"


def clock(ms: int | None) -> str:
    """Milliseconds into the call as m:ss."""
    if ms is None:
        return ""
    seconds = max(0, int(ms) // 1000)
    return f"{seconds // 60}:{seconds % 60:02d}"


def humanize(key: Any) -> str:
    """`caller_number` -> `Caller number`, for definition lists of contexts and logs."""
    text = str(key).replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def kind_of(value: Any) -> str:
    """What the recursive renderer needs to know about a JSON value."""
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return "records"
        return "list"
    if isinstance(value, bool):
        return "bool"
    if value is None:
        return "none"
    return "scalar"


def columns(records: list[dict[str, Any]]) -> list[str]:
    """The union of the records' keys, in first-seen order: one table for a list of objects."""
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(map(str, record)))
    return list(seen)


def setup_templates(app: web.Application) -> None:
    """Jinja templates from `templates/`, autoescaped, with the admin's filters."""
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, duration=duration, clock=clock, humanize=humanize)
    env.globals.update(kind_of=kind_of, columns=columns)


def setup_routes(app: web.Application) -> None:
    """Every admin page and form target, named, plus `static/`."""
    r = app.router
    r.add_static("/static", STATIC_DIR, name="static")
    r.add_get("/", auth.home, name="admin_home")
    r.add_get("/setup", auth.first_run_page, name="admin_first_run")
    r.add_post("/setup", auth.first_run, name="admin_first_run_post")
    r.add_get("/login", auth.login_page, name="admin_login")
    r.add_post("/login", auth.login, name="admin_login_post")
    r.add_post("/logout", auth.logout, name="admin_logout")

    r.add_get("/overview", overview.overview, name="admin_overview")
    r.add_get("/agents", agents.agents, name="admin_agents")
    r.add_post("/agents", agents.create_agent, name="admin_agents_create")
    r.add_get("/agents/{uuid}", agents.agent_editor, name="admin_agent")
    r.add_post("/agents/{uuid}/nodes/{index}", agents.save_node, name="admin_node")
    r.add_post("/agents/{uuid}/nodes/{index}/delete", agents.delete_node, name="admin_node_delete")
    r.add_post("/agents/{uuid}/edges/{index}", agents.save_edge, name="admin_edge")
    r.add_post("/agents/{uuid}/edges/{index}/delete", agents.delete_edge, name="admin_edge_delete")
    r.add_post("/agents/{uuid}/prompt", agents.save_prompt, name="admin_prompt")
    r.add_post("/agents/{uuid}/definition", agents.save_json, name="admin_definition")
    r.add_post("/agents/{uuid}/publish", agents.publish, name="admin_publish")
    r.add_post("/agents/{uuid}/rename", agents.rename, name="admin_rename")
    r.add_post("/agents/{uuid}/archive", agents.archive, name="admin_archive")
    r.add_post("/agents/{uuid}/restore", agents.restore, name="admin_restore")
    r.add_get("/agents/{uuid}/settings", agents.agent_settings, name="admin_agent_settings")
    r.add_post("/agents/{uuid}/settings", agents.save_settings, name="admin_agent_settings_post")

    r.add_post("/agents/{uuid}/call-token", talk.call_token, name="admin_call_token")

    r.add_get("/agents/{uuid}/runs", runs.runs, name="admin_runs")
    r.add_get("/agents/{uuid}/runs/{run_id}", runs.run_detail, name="admin_run")
    r.add_get("/agents/{uuid}/runs/{run_id}/status", runs.run_status, name="admin_run_status")
    r.add_get(
        "/agents/{uuid}/runs/{run_id}/recording", runs.run_recording, name="admin_run_recording"
    )

    r.add_get("/telephony", telephony.telephony, name="admin_telephony")
    r.add_post("/telephony", telephony.create, name="admin_telephony_create")
    r.add_get("/telephony/{id}", telephony.edit_page, name="admin_telephony_edit")
    r.add_post("/telephony/{id}", telephony.update, name="admin_telephony_update")
    r.add_get("/telephony/{id}/delete", telephony.delete_page, name="admin_telephony_delete")
    r.add_post("/telephony/{id}/delete", telephony.delete, name="admin_telephony_delete_post")

    r.add_get("/webhooks", webhooks.webhooks, name="admin_webhooks")
    r.add_post("/webhooks", webhooks.create, name="admin_webhooks_create")
    r.add_get("/webhooks/{id}", webhooks.detail, name="admin_webhook")
    r.add_post("/webhooks/{id}", webhooks.update, name="admin_webhook_update")
    r.add_post("/webhooks/{id}/active", webhooks.set_active, name="admin_webhook_active")
    r.add_get("/webhooks/{id}/delete", webhooks.delete_page, name="admin_webhook_delete_page")
    r.add_post("/webhooks/{id}/delete", webhooks.delete, name="admin_webhook_delete")

    r.add_get("/users", users.users, name="admin_users")
    r.add_post("/users", users.create_user, name="admin_users_create")
    r.add_post("/users/{id}/quotas", users.set_quotas, name="admin_user_quotas")
    r.add_post("/api-keys", users.create_key, name="admin_keys_create")
    r.add_post("/api-keys/{id}/revoke", users.revoke_key, name="admin_key_revoke")
