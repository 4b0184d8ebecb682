"""The agent's brain: what it says and when it hangs up or transfers, per workflow."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from ..speech.stt import phrase_words

_VARIABLE_RE: Final = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def render(text: str | None, context: dict[str, Any]) -> str:
    """Substitute `{{caller_number}}` and other context keys; unknown keys become ''."""
    if not text:
        return ""
    return _VARIABLE_RE.sub(
        lambda m: "" if context.get(m.group(1)) is None else str(context[m.group(1)]), text
    )


class CallActions(Protocol):
    """What an engine may do to the call itself, through the provider."""

    failure: str | None  # set when the run must end failed, with this reason

    async def hangup(self) -> None: ...

    async def transfer(self, destination: str) -> None: ...

    def finish(self, end_reason: str, gathered: dict[str, Any] | None = None) -> None: ...

    def fail(self, error: str) -> None: ...


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    phrases: tuple[str, ...] = ()
    dtmf: str | None = None
    condition: str | None = None
    fallback: bool = False

    def matches_words(self, heard: str) -> bool:
        """True when one of the phrases occurs, as whole words, in what was heard."""
        padded = f" {phrase_words(heard)} "
        return any(f" {phrase_words(p)} " in padded for p in self.phrases if phrase_words(p))


@dataclass(frozen=True)
class Node:
    id: str
    kind: str
    say: str = ""
    prompt: str | None = None
    interruptible: bool = True
    destination: str | None = None
    edges: tuple[Edge, ...] = field(default_factory=tuple)

    @property
    def fallback(self) -> Edge | None:
        return next((e for e in self.edges if e.fallback), None)

    @property
    def phrases(self) -> tuple[str, ...]:
        return tuple(p for e in self.edges for p in e.phrases)


@dataclass(frozen=True)
class Workflow:
    """A validated definition in the shape the engines walk."""

    nodes: dict[str, Node]
    start: str
    global_prompt: str | None
    settings: dict[str, Any]

    @classmethod
    def parse(cls, definition: dict[str, Any]) -> Workflow:
        edges: dict[str, list[Edge]] = {}
        for raw in definition.get("edges", []):
            edges.setdefault(raw["from"], []).append(Edge(
                source=raw["from"], target=raw["to"], phrases=tuple(raw.get("phrases") or ()),
                dtmf=raw.get("dtmf"), condition=raw.get("condition"),
                fallback=bool(raw.get("fallback")),
            ))
        nodes = {
            raw["id"]: Node(
                id=raw["id"], kind=raw["kind"], say=raw.get("say") or "",
                prompt=raw.get("prompt"), interruptible=raw.get("interruptible", True) is not False,
                destination=raw.get("destination"), edges=tuple(edges.get(raw["id"], ())),
            )
            for raw in definition["nodes"]
        }
        start = next(n.id for n in nodes.values() if n.kind == "start")
        return cls(nodes, start, definition.get("global_prompt"), dict(definition.get("settings") or {}))

    def setting(self, key: str, default: Any) -> Any:
        value = self.settings.get(key)
        return default if value is None else value
