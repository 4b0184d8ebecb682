"""Agents: the list, the workflow editor (⋮ menu, node and edge forms, raw JSON, Publish)
and the Settings page with the Agent UUID, the stream URL and the voice/model settings."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, Literal

from aiohttp import web

from .. import strict_json
from ..errors import Stale
from ..models import TelephonyConfig, Workflow
from ..plain_text import one_line
from ..providers import PROVIDERS
from ..urls import stream_base
from ..workflow import ENGINES, STT_PROVIDERS, TTS_PROVIDERS, starter_definition
from . import editor
from .common import (
    Handler,
    changed_elsewhere,
    form_of,
    form_revision,
    int_id,
    page,
    redirect,
    render,
    safe_next,
    store_of,
    url,
    user_of,
)

MAX_NAME = 120
AGENT_CHANGED: Final = changed_elsewhere("This agent", "the agent")


def today_start() -> str:
    now = datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0).isoformat(timespec="milliseconds")


async def _workflow(request: web.Request) -> Workflow:
    """The agent named in the path, within the signed-in user's organization (else 404)."""
    return await store_of(request).get_workflow(
        user_of(request).organization_id, request.match_info["uuid"]
    )


def _fresh(workflow: Workflow, form: dict[str, str]) -> int:
    """The revision an edit of `workflow` is compared and set against: the one it was read
    at here, which a form made from an older one (its hidden `revision`) is not."""
    revision = form_revision(form)
    if revision is not None and revision != workflow.revision:
        raise Stale(AGENT_CHANGED, current=workflow.revision)
    return workflow.revision


def _reshown_when_stale(shown: Literal["editor", "settings"]) -> Callable[[Handler], Handler]:
    """A form from an older revision of the agent, or one that lost the race with another
    edit, is answered with the agent's page as it is now and why (409): nothing stored is
    lost, and the page's forms carry the current revision."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except Stale:
                workflow = await _workflow(request)
                if shown == "settings":
                    return await _settings_page(
                        request, workflow, status=409, conflict=AGENT_CHANGED
                    )
                return await _editor_page(request, workflow, status=409, conflict=AGENT_CHANGED)

        return wrapper

    return decorate


def _name_problem(name: str) -> str | None:
    if not name:
        return "Give the agent a name."
    if len(name) > MAX_NAME:
        return f"Keep the name under {MAX_NAME} characters."
    if not one_line(name):
        return "Keep the name on one line, without control characters."
    return None


# -- the list ----------------------------------------------------------------------------------


async def _agents_page(
    request: web.Request,
    *,
    status: int = 200,
    form: dict[str, str] | None = None,
    problem: str | None = None,
) -> web.Response:
    user = user_of(request)
    store = store_of(request)
    workflows = await store.list_workflows(user.organization_id)
    activity = await store.agent_activity(user.organization_id, today_start())
    active = [w for w in workflows if w.status != "archived"]
    archived = [w for w in workflows if w.status == "archived"]
    return render(
        request,
        "agents.html",
        {
            "agents": active,
            "archived": archived,
            "activity": activity,
            "form": form or {},
            "problem": problem,
            "nav": "agents",
        },
        status=status,
    )


@page()
async def agents(request: web.Request) -> web.StreamResponse:
    return await _agents_page(request)


@page()
async def create_agent(request: web.Request) -> web.StreamResponse:
    form = await form_of(request)
    name = form.get("name", "")
    problem = _name_problem(name)
    if problem:
        return await _agents_page(request, status=400, form=form, problem=problem)
    user = user_of(request)
    workflow = await store_of(request).create_workflow(
        organization_id=user.organization_id,
        owner_user_id=user.id,
        name=name,
        definition=starter_definition(),
    )
    return redirect(
        request, url(request, "admin_agent", uuid=workflow.uuid), notice="agent_created"
    )


# -- the workflow editor -----------------------------------------------------------------------


async def _editor_page(
    request: web.Request,
    workflow: Workflow,
    *,
    status: int = 200,
    problems: editor.Problems | None = None,
    node_forms: dict[int, dict[str, Any]] | None = None,
    edge_forms: dict[int, dict[str, Any]] | None = None,
    raw_json: str | None = None,
    prompt: str | None = None,
    conflict: str | None = None,
) -> web.Response:
    """The editor, showing what was sent (and why it was refused) where a form failed."""
    definition = workflow.definition
    nodes = definition.get("nodes", []) if isinstance(definition.get("nodes"), list) else []
    edges = definition.get("edges", []) if isinstance(definition.get("edges"), list) else []
    shown_nodes = [editor.node_form(n) for n in nodes if isinstance(n, dict)]
    shown_edges = [editor.edge_form(e) for e in edges if isinstance(e, dict)]
    for index, values in (node_forms or {}).items():
        if index < len(shown_nodes):
            shown_nodes[index] = values
    for index, values in (edge_forms or {}).items():
        if index < len(shown_edges):
            shown_edges[index] = values
    new_node = (node_forms or {}).get(len(nodes)) or {
        "id": "",
        "kind": "agent",
        "say": "",
        "prompt": "",
        "destination": "",
        "interruptible": True,
        "reached_from": "",
        "phrases": "",
        "dtmf": "",
    }
    new_edge = (edge_forms or {}).get(len(edges)) or {
        "from": "",
        "to": "",
        "phrases": "",
        "dtmf": "",
        "condition": "",
        "fallback": False,
    }
    return render(
        request,
        "agent_editor.html",
        {
            "agent": workflow,
            "tab": "workflow",
            "nodes": shown_nodes,
            "edges": shown_edges,
            "node_ids": [n.get("id") for n in nodes if isinstance(n, dict) and n.get("id")],
            "new_node": new_node,
            "new_edge": new_edge,
            "new_node_index": len(nodes),
            "new_edge_index": len(edges),
            "kinds": editor.NODE_KIND_CHOICES,
            "graph": editor.graph_of(definition),
            "problems": problems or editor.Problems(),
            "raw_json": raw_json if raw_json is not None else editor.shown_json(definition),
            "global_prompt": prompt
            if prompt is not None
            else (definition.get("global_prompt") or ""),
            "nav": "agents",
            "conflict": conflict,
        },
        status=status,
    )


@page()
async def agent_editor(request: web.Request) -> web.StreamResponse:
    return await _editor_page(request, await _workflow(request))


async def _save(
    request: web.Request, workflow: Workflow, candidate: dict[str, Any], **on_error: Any
) -> web.StreamResponse:
    problems = editor.validate(candidate)
    if problems:
        return await _editor_page(request, workflow, status=400, problems=problems, **on_error)
    await store_of(request).update_workflow(  # made from what was read: compare and set
        workflow.organization_id, workflow.uuid, definition=candidate, revision=workflow.revision
    )
    return redirect(request, url(request, "admin_agent", uuid=workflow.uuid), notice="saved")


async def _posted(
    request: web.Request, collection: str, *, may_append: bool
) -> tuple[Workflow, dict[str, str], list[dict[str, Any]], int]:
    """The agent, the submitted form, its nodes or edges and the index the path names (one
    past the end is an 'add' form where `may_append`); a stale form raises Stale."""
    workflow = await _workflow(request)
    form = await form_of(request)
    _fresh(workflow, form)
    items: list[dict[str, Any]] = workflow.definition.get(collection, [])
    index = int_id(request, "index")
    if index > len(items) or (index == len(items) and not may_append):
        raise web.HTTPNotFound()
    return workflow, form, items, index


async def _delete(
    request: web.Request,
    collection: str,
    remove: Callable[[dict[str, Any], int], dict[str, Any]],
    label: Callable[[dict[str, Any]], str],
) -> web.StreamResponse:
    """Delete one node or edge, unless what remains would be invalid (then say why)."""
    posted = await _posted(request, collection, may_append=False)
    workflow, _, items, index = posted
    candidate = remove(workflow.definition, index)
    problems = editor.validate(candidate)
    if problems:
        problems = editor.Problems(
            general=[f"{label(items[index])} was not deleted: " + "; ".join(problems.all_messages())]
        )
        return await _editor_page(request, workflow, status=400, problems=problems)
    return await _save(request, workflow, candidate)


@page()
@_reshown_when_stale("editor")
async def save_node(request: web.Request) -> web.StreamResponse:
    """One node's form (also the 'add a node' form, with the edge that reaches it)."""
    posted = await _posted(request, "nodes", may_append=True)
    workflow, form, nodes, index = posted
    adding = index == len(nodes)
    node = editor.node_from_form(form, None if adding else nodes[index])
    candidate = editor.with_node(workflow.definition, index, node)
    shown = editor.node_form(node)
    if adding and form.get("reached_from"):
        edge = editor.edge_from_form(
            {
                "from": form["reached_from"],
                "to": node["id"],
                "phrases": form.get("phrases", ""),
                "dtmf": form.get("dtmf", ""),
            }
        )
        candidate = editor.with_edge(candidate, len(candidate.get("edges", [])), edge)
    if adding:
        shown |= {k: form.get(k, "") for k in ("reached_from", "phrases", "dtmf")}
    problems = editor.validate(candidate)
    if adding and problems:
        # the new edge's problems belong to the add form, next to its fields
        new_edge = len(candidate.get("edges", [])) - 1
        for key, messages in problems.edges.pop(new_edge, {}).items():
            field = {"from": "reached_from", "to": "reached_from"}.get(key, key)
            problems.nodes.setdefault(index, {}).setdefault(field, []).extend(messages)
        # a new node nothing leads to: the fix is the "Reached from" field
        unreachable = problems.nodes.get(index, {}).pop(editor.NODE, [])
        if unreachable:
            problems.nodes[index].setdefault("reached_from", []).extend(unreachable)
    if problems:
        return await _editor_page(
            request, workflow, status=400, problems=problems, node_forms={index: shown}
        )
    return await _save(request, workflow, candidate)


@page()
@_reshown_when_stale("editor")
async def delete_node(request: web.Request) -> web.StreamResponse:
    return await _delete(
        request, "nodes", editor.without_node, lambda node: f"Node {node.get('id')!r}"
    )


@page()
@_reshown_when_stale("editor")
async def save_edge(request: web.Request) -> web.StreamResponse:
    posted = await _posted(request, "edges", may_append=True)
    workflow, form, edges, index = posted
    edge = editor.edge_from_form(form, edges[index] if index < len(edges) else None)
    candidate = editor.with_edge(workflow.definition, index, edge)
    return await _save(request, workflow, candidate, edge_forms={index: editor.edge_form(edge)})


@page()
@_reshown_when_stale("editor")
async def delete_edge(request: web.Request) -> web.StreamResponse:
    return await _delete(request, "edges", editor.without_edge, lambda _edge: "The edge")


@page()
@_reshown_when_stale("editor")
async def save_prompt(request: web.Request) -> web.StreamResponse:
    workflow = await _workflow(request)
    form = await form_of(request)
    _fresh(workflow, form)
    candidate = dict(workflow.definition)
    if form.get("global_prompt"):
        candidate["global_prompt"] = form["global_prompt"][: editor.MAX_TEXT]
    else:
        candidate.pop("global_prompt", None)
    return await _save(request, workflow, candidate, prompt=form.get("global_prompt", ""))


@page()
@_reshown_when_stale("editor")
async def save_json(request: web.Request) -> web.StreamResponse:
    """The raw JSON view, for power users: the whole definition at once."""
    workflow = await _workflow(request)
    form = await form_of(request)
    _fresh(workflow, form)
    raw = form.get("definition", "")
    try:
        candidate = strict_json.loads(raw)
    except json.JSONDecodeError as exc:
        problems = editor.Problems(
            general=[f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."]
        )
        return await _editor_page(request, workflow, status=400, problems=problems, raw_json=raw)
    except RecursionError:
        problems = editor.Problems(general=["Not valid JSON: nested too deeply."])
        return await _editor_page(request, workflow, status=400, problems=problems, raw_json=raw)
    if strict_json.unpaired_surrogate(candidate):  # no page could show it again
        problems = editor.Problems(
            general=["Not valid text: the JSON has an unpaired surrogate (\\uD800-\\uDFFF)."]
        )
        return await _editor_page(request, workflow, status=400, problems=problems, raw_json=raw)
    candidate = editor.from_page(candidate, workflow.definition)
    messages = editor.validate(candidate).all_messages()
    if messages:
        problems = editor.Problems(general=messages)
        return await _editor_page(request, workflow, status=400, problems=problems, raw_json=raw)
    return await _save(request, workflow, candidate)


@page()
@_reshown_when_stale("editor")
async def publish(request: web.Request) -> web.StreamResponse:
    """Make the latest version the one calls run; the Agent UUID stays the same."""
    workflow = await _workflow(request)
    revision = _fresh(workflow, await form_of(request))
    if workflow.status == "archived":
        problems = editor.Problems(
            general=["An archived agent cannot be published; restore it first."]
        )
        return await _editor_page(request, workflow, status=409, problems=problems)
    problems = editor.validate(workflow.definition)
    if problems:
        return await _editor_page(request, workflow, status=400, problems=problems)
    await store_of(request).publish_workflow(  # the version validated here, nothing newer
        workflow.organization_id, workflow.uuid, revision=revision
    )
    return redirect(request, url(request, "admin_agent", uuid=workflow.uuid), notice="published")


@page()
@_reshown_when_stale("settings")
async def rename(request: web.Request) -> web.StreamResponse:
    workflow = await _workflow(request)
    form = await form_of(request)
    revision = _fresh(workflow, form)
    name = form.get("name", "")
    problem = _name_problem(name)
    if problem:
        return await _settings_page(request, workflow, status=400, name_problem=problem, name=name)
    await store_of(request).update_workflow(
        workflow.organization_id, workflow.uuid, name=name, revision=revision
    )
    # the form is on two pages: it goes back to the one it was sent from
    target = safe_next(form.get("back")) or url(request, "admin_agent_settings", uuid=workflow.uuid)
    return redirect(request, target, notice="agent_renamed")


@page()
@_reshown_when_stale("settings")
async def archive(request: web.Request) -> web.StreamResponse:
    workflow = await _workflow(request)
    revision = _fresh(workflow, await form_of(request))
    await store_of(request).update_workflow(
        workflow.organization_id, workflow.uuid, status="archived", revision=revision
    )
    return redirect(request, url(request, "admin_agents"), notice="agent_archived")


@page()
@_reshown_when_stale("settings")
async def restore(request: web.Request) -> web.StreamResponse:
    workflow = await _workflow(request)
    revision = _fresh(workflow, await form_of(request))
    status = "published" if workflow.published_version else "draft"
    await store_of(request).update_workflow(
        workflow.organization_id, workflow.uuid, status=status, revision=revision
    )
    return redirect(
        request, url(request, "admin_agent", uuid=workflow.uuid), notice="agent_restored"
    )


# -- the Settings page -------------------------------------------------------------------------


def _choices(known: tuple[str, ...], current: str) -> list[str]:
    """A select's options: the known values, and the current one even if it is not."""
    return list(known) if current in known else [*known, current]


def provider_snippets(
    request: web.Request, workflow: Workflow, configs: list[TelephonyConfig]
) -> list[dict[str, Any]]:
    """For every provider: what to paste into its own configuration to reach this agent,
    once per configuration of the organization (with placeholders when there is none)."""
    base = stream_base(request) + "/api/v1/agent-stream"
    blocks = []
    for provider in PROVIDERS.values():
        if not provider.needs_configuration:
            continue  # the browser's call has its own button, nothing to paste
        stream_url = f"{base}/{provider.name}/{workflow.uuid}"
        mine = [c for c in configs if c.provider == provider.name]
        groups = [
            {"config": config, "snippets": provider.snippets(stream_url, config)} for config in mine
        ] or [{"config": None, "snippets": provider.snippets(stream_url, None)}]
        blocks.append({"provider": provider, "groups": groups, "configured": bool(mine)})
    return blocks


async def _settings_page(
    request: web.Request,
    workflow: Workflow,
    *,
    status: int = 200,
    problems: dict[str, list[str]] | None = None,
    values: dict[str, Any] | None = None,
    name_problem: str | None = None,
    name: str | None = None,
    conflict: str | None = None,
) -> web.Response:
    configs = await store_of(request).list_telephony_configs(workflow.organization_id)
    shown_values = values or editor.settings_form(workflow.definition)
    return render(
        request,
        "agent_settings.html",
        {
            "agent": workflow,
            "tab": "settings",
            "providers": provider_snippets(request, workflow, configs),
            "voice": shown_values,
            "problems": problems or {},
            "engines": ENGINES,
            "speech_providers": {
                "stt": _choices(STT_PROVIDERS, shown_values["stt_provider"]),
                "tts": _choices(TTS_PROVIDERS, shown_values["tts_provider"]),
            },
            "name_problem": name_problem,
            "name_value": name if name is not None else workflow.name,
            "nav": "agents",
            "conflict": conflict,
        },
        status=status,
    )


@page()
async def agent_settings(request: web.Request) -> web.StreamResponse:
    return await _settings_page(request, await _workflow(request))


@page()
@_reshown_when_stale("settings")
async def save_settings(request: web.Request) -> web.StreamResponse:
    """Voice and model settings live in the definition's `settings` (a new draft version)."""
    workflow = await _workflow(request)
    form = await form_of(request)
    revision = _fresh(workflow, form)
    candidate, problems = editor.apply_settings_form(workflow.definition, form)
    if problems:
        values = editor.settings_form(candidate)
        saved = editor.settings_form(workflow.definition)  # hints of the keys saved, not sent
        values |= {k: v for k, v in saved.items() if k.endswith("_api_key_hint")}
        return await _settings_page(request, workflow, status=400, problems=problems, values=values)
    await store_of(request).update_workflow(
        workflow.organization_id, workflow.uuid, definition=candidate, revision=revision
    )
    return redirect(
        request,
        url(request, "admin_agent_settings", uuid=workflow.uuid) + "#voice",
        notice="settings_saved",
    )
