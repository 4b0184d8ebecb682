"""The workflow editor's forms: definition <-> form fields, problems mapped to fields,
and API keys kept out of every page. Pure functions, no request and no database."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from ..workflow import (
    EMBEDDED_ALIASES,
    MASK_PREFIX,
    NODE_KINDS,
    merge_secrets,
    redact_secrets,
    validate_definition,
)

# The Settings form's fields of `settings.stt`/`settings.tts` (besides provider and key),
# and the sections whose API key is only ever shown as a hint.
SPEECH_FIELDS: Final = {"stt": ("base_url", "model"), "tts": ("base_url", "model", "voice")}
KEY_SECTIONS: Final = ("llm", "stt", "tts")
MAX_TEXT: Final = 4000

_NODE_INDEX_RE: Final = re.compile(r"^nodes\[(\d+)\](?:\.(\w+))?")
_EDGE_INDEX_RE: Final = re.compile(r"^edges\[(\d+)\](?:\.(\w+))?")
_DUPLICATE_RE: Final = re.compile(r"^duplicate node id (['\"])(.*)\1$")
_UNREACHABLE_RE: Final = re.compile(r"^node (['\"])(.*?)\1 is unreachable")
_NODE_ID_RE: Final = re.compile(r"^node (['\"])(.*?)\1(?::\s*|\.)(.*)$")
_SETTINGS_RE: Final = re.compile(r"^settings\.([\w.]+)")
# settings paths in messages -> the Settings form's field names
_SETTINGS_FIELDS: Final = {"llm": "llm_base_url", "stt": "stt_provider", "tts": "tts_provider"}
NODE = "node"  # the key of a problem about a node as a whole


@dataclass
class Problems:
    """Validation messages placed where a person will look for them."""

    general: list[str] = field(default_factory=list)
    nodes: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    edges: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    settings: dict[str, list[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.general or self.nodes or self.edges or self.settings)

    def add_node(self, index: int, key: str, message: str) -> None:
        self.nodes.setdefault(index, {}).setdefault(key, []).append(message)

    def add_edge(self, index: int, key: str, message: str) -> None:
        self.edges.setdefault(index, {}).setdefault(key, []).append(message)

    def all_messages(self) -> list[str]:
        out = list(self.general)
        for group in (*self.nodes.values(), *self.edges.values(), self.settings):
            for messages in group.values():
                out.extend(messages)
        return out


def _node_field(rest: str) -> str:
    for key in ("kind", "destination", "say", "prompt", "id"):
        if rest.startswith(key) or key in rest.split(":")[0]:
            return key
    return NODE


def map_problems(messages: list[str], definition: Any) -> Problems:
    """Attach each message of `validate_definition` to the node/edge field it is about;
    anything we cannot place stays general (so a new kind of message is never lost)."""
    problems = Problems()
    nodes = definition.get("nodes") if isinstance(definition, dict) else None
    nodes = nodes if isinstance(nodes, list) else []
    ids = [n.get("id") if isinstance(n, dict) else None for n in nodes]

    def indexes_of(node_id: str) -> list[int]:
        return [i for i, value in enumerate(ids) if value == node_id]

    for message in messages:
        if m := _NODE_INDEX_RE.match(message):
            problems.add_node(int(m.group(1)), m.group(2) or "id", message)
        elif m := _EDGE_INDEX_RE.match(message):
            problems.add_edge(int(m.group(1)), m.group(2) or "from", message)
        elif (m := _DUPLICATE_RE.match(message)) and len(indexes_of(m.group(2))) > 1:
            for index in indexes_of(m.group(2))[1:]:
                problems.add_node(index, "id", message)
        elif (m := _UNREACHABLE_RE.match(message)) and indexes_of(m.group(2)):
            problems.add_node(indexes_of(m.group(2))[0], NODE, message)
        elif (m := _NODE_ID_RE.match(message)) and indexes_of(m.group(2)):
            problems.add_node(indexes_of(m.group(2))[0], _node_field(m.group(3)), message)
        elif m := _SETTINGS_RE.match(message):
            path = m.group(1).rstrip(".")
            key = _SETTINGS_FIELDS.get(path, path.replace(".", "_"))
            problems.settings.setdefault(key, []).append(message)
        else:
            problems.general.append(message)
    return problems


def validate(definition: Any) -> Problems:
    return map_problems(validate_definition(definition), definition)


# -- forms -> definition ---------------------------------------------------------------------


def split_phrases(text: str) -> list[str]:
    """Phrases are typed comma- or line-separated."""
    return [p.strip() for p in re.split(r"[,\n]", text) if p.strip()]


def _clip(value: str) -> str:
    return value[:MAX_TEXT]


def node_from_form(form: dict[str, str], existing: dict[str, Any] | None = None) -> dict[str, Any]:
    """A node from its form; keys the form does not show are kept from the saved node."""
    node = copy.deepcopy(existing) if existing else {}
    node["id"] = _clip(form.get("id", ""))
    node["kind"] = form.get("kind", "")
    for key in ("say", "destination"):
        if form.get(key):
            node[key] = _clip(form[key])
        else:
            node.pop(key, None)
    node["prompt"] = _clip(form["prompt"]) if form.get("prompt") else None
    node["interruptible"] = form.get("interruptible") == "on"
    return node


def edge_from_form(form: dict[str, str], existing: dict[str, Any] | None = None) -> dict[str, Any]:
    edge = copy.deepcopy(existing) if existing else {}
    edge["from"] = form.get("from", "")
    edge["to"] = form.get("to", "")
    edge["phrases"] = split_phrases(_clip(form.get("phrases", "")))
    for key in ("dtmf", "condition"):
        if form.get(key):
            edge[key] = _clip(form[key])
        else:
            edge.pop(key, None)
    if form.get("fallback") == "on":
        edge["fallback"] = True
    else:
        edge.pop("fallback", None)
    return edge


def node_form(node: dict[str, Any]) -> dict[str, Any]:
    """What a node's form shows."""
    return {
        "id": node.get("id") or "",
        "kind": node.get("kind") or "",
        "say": node.get("say") or "",
        "prompt": node.get("prompt") or "",
        "destination": node.get("destination") or "",
        "interruptible": node.get("interruptible", True) is not False,
    }


def edge_form(edge: dict[str, Any]) -> dict[str, Any]:
    phrases = edge.get("phrases") or []
    return {
        "from": edge.get("from") or "",
        "to": edge.get("to") or "",
        "phrases": ", ".join(p for p in phrases if isinstance(p, str)),
        "dtmf": edge.get("dtmf") or "",
        "condition": edge.get("condition") or "",
        "fallback": bool(edge.get("fallback")),
    }


def with_node(definition: dict[str, Any], index: int, node: dict[str, Any]) -> dict[str, Any]:
    """Replace node `index` (or append when index == len); a renamed node keeps its edges."""
    candidate = copy.deepcopy(definition)
    nodes = candidate.setdefault("nodes", [])
    if index >= len(nodes):
        nodes.append(node)
        return candidate
    old_id = nodes[index].get("id")
    nodes[index] = node
    if old_id and old_id != node.get("id"):
        for edge in candidate.get("edges", []):
            for end in ("from", "to"):
                if edge.get(end) == old_id:
                    edge[end] = node.get("id")
    return candidate


def without_node(definition: dict[str, Any], index: int) -> dict[str, Any]:
    """Delete a node and every edge that touches it."""
    candidate = copy.deepcopy(definition)
    removed = candidate["nodes"].pop(index)
    candidate["edges"] = [
        e
        for e in candidate.get("edges", [])
        if removed.get("id") not in (e.get("from"), e.get("to"))
    ]
    return candidate


def with_edge(definition: dict[str, Any], index: int, edge: dict[str, Any]) -> dict[str, Any]:
    candidate = copy.deepcopy(definition)
    edges = candidate.setdefault("edges", [])
    if index >= len(edges):
        edges.append(edge)
    else:
        edges[index] = edge
    return candidate


def without_edge(definition: dict[str, Any], index: int) -> dict[str, Any]:
    candidate = copy.deepcopy(definition)
    candidate["edges"].pop(index)
    return candidate


def graph_of(definition: dict[str, Any]) -> dict[str, Any]:
    """What the editor's drawing shows of the saved definition (`static/graph.js`): each
    node with its form's index, each edge with its phrases, digit and fallback. No settings,
    so no key."""
    nodes = [n for n in definition.get("nodes") or [] if isinstance(n, dict)]
    edges = [e for e in definition.get("edges") or [] if isinstance(e, dict)]
    return {
        "nodes": [
            {"index": i, "id": str(n.get("id") or ""), "kind": str(n.get("kind") or ""),
             "say": str(n.get("say") or "")[:160]}
            for i, n in enumerate(nodes)
        ],
        "edges": [
            {"index": i, "from": str(e.get("from") or ""), "to": str(e.get("to") or ""),
             "phrases": [str(p) for p in e.get("phrases") or [] if isinstance(p, str)],
             "dtmf": str(e.get("dtmf") or ""), "fallback": bool(e.get("fallback")),
             "condition": str(e.get("condition") or "")[:160]}
            for i, e in enumerate(edges)
        ],
    }


def shown_json(definition: dict[str, Any]) -> str:
    """The raw JSON view: the LLM key only as its hint (`redact_secrets`, as the API does)."""
    return json.dumps(redact_secrets(definition), indent=2, ensure_ascii=False)


def from_page(candidate: Any, stored: dict[str, Any]) -> Any:
    """A definition sent back from a page keeps the stored LLM key (`merge_secrets`)."""
    return merge_secrets(candidate, stored) if isinstance(candidate, dict) else candidate


# -- the Settings page's voice and model form --------------------------------------------------


def _mapping(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one for anything else (definitions come from users)."""
    return value if isinstance(value, dict) else {}


def speech_section(value: Any) -> dict[str, Any]:
    """`settings.stt`/`settings.tts` as an object: a bare name is its provider's."""
    if isinstance(value, str):
        name = value.strip().lower()
        return {"provider": EMBEDDED_ALIASES.get(name, name)}
    return _mapping(value)


def settings_form(definition: dict[str, Any]) -> dict[str, Any]:
    """What the Settings page's voice and model form shows: API keys only as their hints."""
    settings = _mapping(definition.get("settings"))
    shown = _mapping(redact_secrets(definition).get("settings"))
    llm = _mapping(settings.get("llm"))
    values: dict[str, Any] = {
        "engine": settings.get("engine") or "scripted",
        "language": settings.get("language") or "",
        "voice": settings.get("voice") or "",
        "max_duration_seconds": settings.get("max_duration_seconds") or "",
        "silence_timeout_seconds": settings.get("silence_timeout_seconds") or "",
        "llm_base_url": llm.get("base_url") or "",
        "llm_model": llm.get("model") or "",
    }
    for section, fields in SPEECH_FIELDS.items():
        speech = speech_section(settings.get(section))
        values[f"{section}_provider"] = speech.get("provider") or "embedded"
        for name in fields:
            values[f"{section}_{name}"] = speech.get(name) or ""
    for section in KEY_SECTIONS:
        values[f"{section}_api_key_hint"] = _mapping(shown.get(section)).get("api_key_hint") or ""
    return values


def _positive_number(raw: str) -> int | float | None:
    try:
        value = float(raw)
    except ValueError:
        return None
    if value <= 0 or value != value or value > 10**7:
        return None
    return int(value) if value.is_integer() else value


def apply_settings_form(
    definition: dict[str, Any], form: dict[str, str]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The definition with the Settings form applied, and problems by field name. An API
    key left empty stays as saved (`merge_secrets`: for the same endpoint only)."""
    problems: dict[str, list[str]] = {}
    candidate = copy.deepcopy(definition)
    settings = candidate.get("settings")
    if not isinstance(settings, dict):
        settings = candidate["settings"] = {}
    settings["engine"] = form.get("engine", "scripted")
    for key in ("language", "voice"):
        if form.get(key):
            settings[key] = form[key][:200]
        else:
            settings.pop(key, None)
    for key in ("max_duration_seconds", "silence_timeout_seconds"):
        raw = form.get(key, "")
        if not raw:
            settings.pop(key, None)
            continue
        number = _positive_number(raw)
        if number is None:
            problems[key] = ["Enter a positive number of seconds."]
        else:
            settings[key] = number

    llm = _without_keys(_mapping(settings.get("llm")))
    for name, limit in (("base_url", 500), ("model", 200)):
        if form.get(f"llm_{name}"):
            llm[name] = form[f"llm_{name}"][:limit]
        else:
            llm.pop(name, None)
    settings["llm"] = llm
    for section, fields in SPEECH_FIELDS.items():
        provider = form.get(f"{section}_provider") or "embedded"
        stored = speech_section(settings.get(section))
        if provider == "embedded":  # the built-in engine needs no settings
            if (stored.get("provider") or "embedded") != "embedded":
                settings.pop(section, None)
            continue
        speech = {k: v for k, v in _without_keys(stored).items() if k not in fields}
        speech["provider"] = provider[:40]
        for name in fields:
            if form.get(f"{section}_{name}"):
                speech[name] = form[f"{section}_{name}"][:500]
        settings[section] = speech
    for section in KEY_SECTIONS:
        typed = form.get(f"{section}_api_key", "")[:4096]
        if typed and not typed.startswith(MASK_PREFIX) and isinstance(settings.get(section), dict):
            settings[section]["api_key"] = typed
    candidate = merge_secrets(candidate, definition)
    for section in KEY_SECTIONS:
        if form.get(f"{section}_api_key_clear") == "on":
            _mapping(candidate["settings"].get(section)).pop("api_key", None)
    if not candidate["settings"]["llm"]:
        del candidate["settings"]["llm"]

    for key, messages in validate(candidate).settings.items():
        problems.setdefault(key, []).extend(messages)
    return candidate, problems


def _without_keys(section: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in section.items() if k not in ("api_key", "api_key_hint")}


NODE_KIND_CHOICES: Final = NODE_KINDS
