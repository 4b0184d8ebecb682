"""The workflow definition (contract section 6): the starter agent and validation on save."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from .plain_text import one_line
from .security import mask_secret

NODE_KINDS: Final = ("start", "agent", "end", "transfer")
DTMF_DIGITS: Final = set("0123456789*#")
ENGINES: Final = ("scripted", "llm")
# Speech providers a workflow may name; the embedded ones need no settings at all.
STT_PROVIDERS: Final = ("embedded", "openai", "deepgram")
TTS_PROVIDERS: Final = ("embedded", "openai", "elevenlabs")
OPENAI_BASE_URL: Final = "https://api.openai.com/v1"
# Each provider's own endpoint, model and voice, for what a workflow leaves out.
DEFAULT_BASE_URLS: Final = {"openai": OPENAI_BASE_URL, "deepgram": "https://api.deepgram.com",
                            "elevenlabs": "https://api.elevenlabs.io"}
DEFAULT_MODELS: Final = {("stt", "openai"): "whisper-1", ("stt", "deepgram"): "nova-2",
                         ("tts", "openai"): "tts-1", ("tts", "elevenlabs"): "eleven_flash_v2_5"}
DEFAULT_VOICES: Final = {"openai": "alloy", "elevenlabs": "21m00Tcm4TlvDq8ikWAM"}
# `settings.stt`/`settings.tts` may also be just a provider name; these mean "embedded".
EMBEDDED_ALIASES: Final = {"": "embedded", "pocketsphinx": "embedded", "espeak": "embedded",
                           "espeak-ng": "embedded"}
# The settings sections that may hold an `api_key`, never shown once saved.
SECRET_SECTIONS: Final = ("llm", "stt", "tts")
# What mask_secret() shows instead of a secret; a key sent back starting with it is a mask.
MASK_PREFIX: Final = "••••"
# Said of a one-line field (an id, a model, a key, an address) holding a control character.
ONE_LINE: Final = "must be one line, without control characters"

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


def validate_definition(definition: Any, *, saving: bool = True) -> list[str]:
    """Every problem of a definition, in plain words; an empty list means it is valid.
    A definition being saved must also keep its one-line fields to one line; one stored
    before that rule (a call starting runs it: `saving=False`) is run as it is."""
    problems = _structure_problems(definition)
    if saving and isinstance(definition, dict):
        problems.extend(_one_line_problems(definition))
    return problems


def _structure_problems(definition: Any) -> list[str]:
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
    version = definition.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        problems.append("definition.version must be an integer")
    if definition.get("global_prompt") is not None and not isinstance(
        definition.get("global_prompt"), str
    ):
        problems.append("definition.global_prompt must be text")
    settings = definition.get("settings", {})
    if not isinstance(settings, dict):
        problems.append("definition.settings must be an object")
    else:
        for key in ("max_duration_seconds", "silence_timeout_seconds"):
            value = settings.get(key)
            if value is not None and (
                not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0
            ):
                problems.append(f"settings.{key} must be a positive number")
        for key in ("language", "voice"):
            if settings.get(key) is not None and not isinstance(settings.get(key), str):
                problems.append(f"settings.{key} must be text")
        problems.extend(_engine_problems(settings))
        problems.extend(_speech_problems(settings, "stt", STT_PROVIDERS))
        problems.extend(_speech_problems(settings, "tts", TTS_PROVIDERS))

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
        for text_key in ("say", "prompt", "destination"):
            if node.get(text_key) is not None and not isinstance(node.get(text_key), str):
                problems.append(f"{where}.{text_key} must be text")
        if node.get("interruptible") is not None and not isinstance(node.get("interruptible"), bool):
            problems.append(f"{where}.interruptible must be true or false")
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
        if edge.get("condition") is not None and not isinstance(edge.get("condition"), str):
            problems.append(f"{where}.condition must be text")
        if edge.get("fallback") is not None and not isinstance(edge.get("fallback"), bool):
            problems.append(f"{where}.fallback must be true or false")
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


# -- the LLM engine's settings -----------------------------------------------------------------


@dataclass(frozen=True)
class LLMEndpoint:
    """An OpenAI-compatible chat endpoint (OpenAI, Groq, Ollama, vLLM, llama.cpp)."""

    base_url: str
    model: str
    api_key: str = ""

    @property
    def host(self) -> str:
        """Enough of the URL to log: no path or query that could carry a secret."""
        return urlsplit(self.base_url).netloc

    def __repr__(self) -> str:  # never print the key, even by accident
        return f"LLMEndpoint(host={self.host!r}, model={self.model!r})"


def _engine_problems(settings: dict[str, Any]) -> list[str]:
    """Problems of `settings.engine` and `settings.llm`."""
    problems: list[str] = []
    engine = settings.get("engine")
    if engine is not None and engine not in ENGINES:
        problems.append(f"settings.engine must be one of {', '.join(ENGINES)}")
    llm = settings.get("llm")
    if llm is None:
        if engine == "llm":
            problems.append("settings.llm is required when settings.engine is llm")
        return problems
    if not isinstance(llm, dict):
        return [*problems, "settings.llm must be an object"]
    base_url = llm.get("base_url")
    if base_url not in (None, "") and not _is_http_url(base_url):
        problems.append("settings.llm.base_url must be an http(s) URL")
    elif isinstance(base_url, str) and urlsplit(base_url).username is not None:
        problems.append("settings.llm.base_url must not hold credentials; use settings.llm.api_key")
    model = llm.get("model")
    if model is not None and not isinstance(model, str):
        problems.append("settings.llm.model must be text")
    elif engine == "llm" and not (model or "").strip():
        problems.append("settings.llm.model is required when settings.engine is llm")
    if llm.get("api_key") is not None and not isinstance(llm.get("api_key"), str):
        problems.append("settings.llm.api_key must be text")
    return problems


def _speech_problems(settings: dict[str, Any], section: str, providers: tuple[str, ...]) -> list[str]:
    """Problems of `settings.stt` or `settings.tts`."""
    where = f"settings.{section}"
    speech = _speech_section(settings.get(section))
    if speech is None:
        return [] if settings.get(section) is None else [
            f"{where} must be an object or a provider name"]
    problems: list[str] = []
    provider = speech.get("provider", "embedded")
    if provider not in providers:
        problems.append(f"{where}.provider must be one of {', '.join(providers)}")
    base_url = speech.get("base_url")
    if base_url not in (None, "") and not _is_http_url(base_url):
        problems.append(f"{where}.base_url must be an http(s) URL")
    elif isinstance(base_url, str) and urlsplit(base_url).username is not None:
        problems.append(f"{where}.base_url must not hold credentials; use {where}.api_key")
    for key in ("model", "voice", "api_key"):
        if speech.get(key) is not None and not isinstance(speech.get(key), str):
            problems.append(f"{where}.{key} must be text")
    return problems


def _one_line_problems(definition: dict[str, Any]) -> list[str]:
    """The one-line fields holding a control character: a node's id or transfer
    destination, the voice and language, an LLM's or speech vendor's address, model, voice
    and key. They end up in a log line, a provider's XML or an HTTP header, where a line
    break or a NUL breaks it (spoken text, `say` and `prompt`, is kept as given)."""
    fields: list[tuple[str, Any]] = []
    settings = definition.get("settings")
    if isinstance(settings, dict):
        fields += [(f"settings.{key}", settings.get(key)) for key in ("language", "voice")]
        llm = settings.get("llm")
        if isinstance(llm, dict):
            fields += [(f"settings.llm.{key}", llm.get(key))
                       for key in ("base_url", "model", "api_key")]
        for section in ("stt", "tts"):
            speech = settings.get(section)
            if isinstance(speech, dict):
                fields += [(f"settings.{section}.{key}", speech.get(key))
                           for key in ("base_url", "model", "voice", "api_key")]
    nodes = definition.get("nodes")
    for index, node in enumerate(nodes if isinstance(nodes, list) else []):
        if isinstance(node, dict):
            node_id = node.get("id")
            fields.append((f"nodes[{index}].id", node_id))
            where = f"node {node_id!r}" if isinstance(node_id, str) and node_id else f"nodes[{index}]"
            fields.append((f"{where}.destination", node.get("destination")))
    return [f"{name} {ONE_LINE}" for name, value in fields
            if isinstance(value, str) and not one_line(value)]


def _speech_section(value: Any) -> dict[str, Any] | None:
    """`settings.stt`/`settings.tts` as an object; a bare name is the provider's."""
    if isinstance(value, str):
        name = value.strip().lower()
        return {"provider": EMBEDDED_ALIASES.get(name, name)}
    return value if isinstance(value, dict) else None


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value.strip())
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def llm_endpoint(definition: dict[str, Any]) -> LLMEndpoint | None:
    """The chat endpoint a (valid) definition names, or None for the scripted engine:
    the LLM engine runs when `settings.engine` is "llm" and a base URL is set."""
    settings = definition.get("settings") or {}
    llm = settings.get("llm") or {}
    if settings.get("engine") != "llm" or not llm.get("base_url"):
        return None
    return LLMEndpoint(
        base_url=str(llm["base_url"]).strip(),
        model=str(llm.get("model") or "").strip(),
        api_key=str(llm.get("api_key") or ""),
    )


@dataclass(frozen=True)
class SpeechProvider:
    """A speech-to-text or text-to-speech provider a workflow names (not the embedded one)."""

    kind: str  # "stt" or "tts"
    provider: str
    base_url: str
    model: str
    voice: str = ""
    api_key: str = ""
    language: str = ""

    @property
    def host(self) -> str:
        """Enough of the URL to log: no path or query that could carry a secret."""
        return urlsplit(self.base_url).netloc

    def __repr__(self) -> str:  # never print the key, even by accident
        return f"SpeechProvider({self.kind} {self.provider} host={self.host!r}, model={self.model!r})"


def speech_provider(definition: dict[str, Any], kind: str) -> SpeechProvider | None:
    """The STT (`kind` "stt") or TTS ("tts") provider a (valid) definition names, or None
    for the embedded engines."""
    settings = definition.get("settings") or {}
    speech = _speech_section(settings.get(kind)) or {}
    provider = speech.get("provider") or "embedded"
    if (kind, provider) not in DEFAULT_MODELS:
        return None
    language = settings.get("language")
    return SpeechProvider(
        kind=kind,
        provider=provider,
        base_url=_base_url(speech),
        model=str(speech.get("model") or "").strip() or DEFAULT_MODELS[(kind, provider)],
        voice=str(speech.get("voice") or "").strip() or DEFAULT_VOICES.get(provider, ""),
        api_key=str(speech.get("api_key") or ""),
        language=language.strip() if isinstance(language, str) else "",
    )


def _base_url(section: dict[str, Any]) -> str:
    """The section's endpoint; a speech provider's own by default."""
    url = section.get("base_url")
    if isinstance(url, str) and url.strip():
        return url.strip()
    return DEFAULT_BASE_URLS.get(str(section.get("provider") or "openai"), OPENAI_BASE_URL)


def redact_secrets(definition: dict[str, Any]) -> dict[str, Any]:
    """A copy fit to show: every `api_key` of `settings.llm`, `settings.stt` and
    `settings.tts` becomes `api_key_hint` (its last four characters), like a telephony
    configuration's bearer token."""
    settings = definition.get("settings") if isinstance(definition, dict) else None
    if not isinstance(settings, dict):
        return definition
    sections = [name for name in SECRET_SECTIONS if isinstance(settings.get(name), dict)]
    if not sections:
        return definition
    shown = copy.deepcopy(definition)
    for name in sections:
        section = shown["settings"][name]
        key = section.pop("api_key", None)
        section["api_key_hint"] = mask_secret(key if isinstance(key, str) else None)
    return shown


def merge_secrets(
    new_definition: dict[str, Any], stored_definition: dict[str, Any] | None
) -> dict[str, Any]:
    """The definition to store when `new_definition` is saved over `stored_definition`.

    In each of `settings.llm`, `settings.stt` and `settings.tts`: an API key that is
    missing, empty or a mask (as shown by `redact_secrets`) keeps the stored key, so
    editing a shown definition never loses or overwrites it. The stored key is kept only
    for the same base URL: pointing the agent at another endpoint needs the key again, so
    nobody who cannot read the key can send it to a server of their choice.
    """
    settings = new_definition.get("settings")
    if not isinstance(settings, dict):
        return new_definition
    sections = [name for name in SECRET_SECTIONS if isinstance(settings.get(name), dict)]
    if not sections:
        return new_definition
    merged = copy.deepcopy(new_definition)
    stored_settings = (stored_definition or {}).get("settings") or {}
    for name in sections:
        stored = stored_settings.get(name) if isinstance(stored_settings, dict) else None
        _merge_key(merged["settings"][name], stored, speech=name != "llm")
    return merged


def _merge_key(section: dict[str, Any], stored: Any, *, speech: bool) -> None:
    """Keep the stored key of one settings section in `section`, unless it was replaced."""
    section.pop("api_key_hint", None)
    key = section.get("api_key")
    if isinstance(key, str) and key.strip() and not key.startswith(MASK_PREFIX):
        return
    section.pop("api_key", None)
    if not isinstance(stored, dict) or not stored.get("api_key"):
        return
    if speech:  # a speech provider without a base URL is the provider's own
        same = _same_endpoint(_base_url(stored), _base_url(section))
    else:
        same = _same_endpoint(stored.get("base_url"), section.get("base_url"))
    if same:
        section["api_key"] = stored["api_key"]


def _same_endpoint(a: Any, b: Any) -> bool:
    """Two base URLs name the same endpoint (ignoring spaces and a trailing slash)."""
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    return a.strip().rstrip("/") == b.strip().rstrip("/")
