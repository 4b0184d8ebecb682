"""The workflow definition (contract section 6): the starter agent and validation on save."""
from __future__ import annotations

import copy
from typing import Any, Final

NODE_KINDS: Final = ("start", "agent", "end", "transfer")
DTMF_DIGITS: Final = set("0123456789*#")

STARTER_DEFINITION: Final[dict[str, Any]] = {
    "version": 1,
    "global_prompt": "You are the front desk of Acme Dental. Be brief.",
    "settings": {
        "language": "en",
        "voice": "en-us",
        "max_duration_seconds": 600,
        "silence_timeout_seconds": 10,
    },
    "nodes": [
        {"id": "start", "kind": "start",
         "say": "Hello, thanks for calling Acme. Would you like to book an appointment?",
         "prompt": None, "interruptible": True},
        {"id": "book", "kind": "agent", "say": "Great. Which day suits you?",
         "prompt": "Collect a preferred day."},
        {"id": "human", "kind": "transfer", "say": "Connecting you now.",
         "destination": "+15555550123"},
        {"id": "bye", "kind": "end", "say": "Goodbye."},
    ],
    "edges": [
        {"from": "start", "to": "book", "phrases": ["yes", "book an appointment"], "dtmf": "1",
         "condition": "the caller wants to book"},
        {"from": "start", "to": "human", "phrases": ["talk to a human", "representative"],
         "dtmf": "0"},
        {"from": "start", "to": "bye", "phrases": ["no", "goodbye"], "fallback": True},
        {"from": "book", "to": "bye", "phrases": ["goodbye"], "fallback": True},
    ],
}


def starter_definition() -> dict[str, Any]:
    """A fresh copy of the starter agent, for workflows created without a definition."""
    return copy.deepcopy(STARTER_DEFINITION)


def validate_definition(definition: Any) -> list[str]:
    """Every problem of a definition, in plain words; an empty list means it is valid."""
    if not isinstance(definition, dict):
        return ["definition must be a JSON object"]
    problems: list[str] = []
    nodes = definition.get("nodes")
    edges = definition.get("edges", [])
    if not isinstance(nodes, list) or not nodes:
        return ["definition.nodes must be a non-empty list"]
    if not isinstance(edges, list):
        problems.append("definition.edges must be a list")
        edges = []
    settings = definition.get("settings", {})
    if not isinstance(settings, dict):
        problems.append("definition.settings must be an object")
    else:
        for key in ("max_duration_seconds", "silence_timeout_seconds"):
            value = settings.get(key)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                problems.append(f"settings.{key} must be a positive number")

    ids: set[str] = set()
    starts: list[str] = []
    for index, node in enumerate(nodes):
        where = f"nodes[{index}]"
        if not isinstance(node, dict):
            problems.append(f"{where} must be an object")
            continue
        node_id = node.get("id")
        if not isinstance(node_id, str) or not node_id:
            problems.append(f"{where}.id must be a non-empty string")
            continue
        where = f"node {node_id!r}"
        if node_id in ids:
            problems.append(f"duplicate node id {node_id!r}")
        ids.add(node_id)
        kind = node.get("kind")
        if kind not in NODE_KINDS:
            problems.append(f"{where}: kind must be one of {', '.join(NODE_KINDS)}")
        if kind == "start":
            starts.append(node_id)
        if kind == "transfer" and not node.get("destination"):
            problems.append(f"{where}: a transfer node needs a destination")
        for text_key in ("say", "prompt"):
            if node.get(text_key) is not None and not isinstance(node.get(text_key), str):
                problems.append(f"{where}.{text_key} must be text")
    if not starts:
        problems.append("there is no start node")
    elif len(starts) > 1:
        problems.append(f"there must be exactly one start node, found {len(starts)}")

    outgoing: dict[str, list[str]] = {node_id: [] for node_id in ids}
    for index, edge in enumerate(edges):
        where = f"edges[{index}]"
        if not isinstance(edge, dict):
            problems.append(f"{where} must be an object")
            continue
        for end in ("from", "to"):
            target = edge.get(end)
            if not isinstance(target, str) or target not in ids:
                problems.append(f"{where}.{end} names unknown node {target!r}")
        digit = edge.get("dtmf")
        if digit is not None and (not isinstance(digit, str) or digit not in DTMF_DIGITS):
            problems.append(f"{where}.dtmf must be one digit 0-9, * or #, got {digit!r}")
        phrases = edge.get("phrases", [])
        if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
            problems.append(f"{where}.phrases must be a list of text")
        if isinstance(edge.get("from"), str) and edge["from"] in outgoing and edge.get("to") in ids:
            outgoing[edge["from"]].append(edge["to"])

    if len(starts) == 1:
        reached, frontier = {starts[0]}, [starts[0]]
        while frontier:
            for target in outgoing.get(frontier.pop(), []):
                if target not in reached:
                    reached.add(target)
                    frontier.append(target)
        for node_id in sorted(ids - reached):
            problems.append(f"node {node_id!r} is unreachable from the start node")
    return problems
