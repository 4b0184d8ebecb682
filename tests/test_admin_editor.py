"""The editor's pure parts: validation messages placed on fields, the LLM key kept secret."""

from __future__ import annotations

from agent_stream.admin import editor
from agent_stream.workflow import starter_definition, validate_definition


def test_every_kind_of_validation_message_lands_on_its_field() -> None:
    definition = starter_definition()
    definition["nodes"][0]["kind"] = "agent"  # no start node any more
    definition["nodes"][2]["destination"] = ""  # transfer without destination
    definition["nodes"].append({"id": "bye", "kind": "end"})  # duplicate id
    definition["nodes"].append({"id": "lonely", "kind": "weird"})  # bad kind
    definition["nodes"].append({"kind": "end"})  # no id
    definition["edges"][0]["dtmf"] = "12"
    definition["edges"][1]["to"] = "nowhere"
    definition["edges"][2]["phrases"] = "no"
    definition["settings"]["max_duration_seconds"] = -1
    definition["nodes"][1]["prompt"] = "Ask for a day.\nThen a time."  # spoken text: kept
    definition["nodes"][3]["destination"] = "+1555\r\n"
    definition["settings"]["voice"] = "en\x00"
    messages = validate_definition(definition)
    problems = editor.map_problems(messages, definition)

    assert problems.nodes[2]["destination"] == ["node 'human': a transfer node needs a destination"]
    assert problems.nodes[3]["destination"] == [
        "node 'bye'.destination must be one line, without control characters"]
    assert problems.settings["voice"] == [
        "settings.voice must be one line, without control characters"]
    assert "prompt" not in problems.nodes.get(1, {})
    assert problems.nodes[4]["id"] == ["duplicate node id 'bye'"]
    assert "kind must be one of" in problems.nodes[5]["kind"][0]
    assert problems.nodes[6]["id"] == ["nodes[6].id must be a non-empty string"]
    assert "dtmf must be one digit" in problems.edges[0]["dtmf"][0]
    assert "unknown node 'nowhere'" in problems.edges[1]["to"][0]
    assert "phrases must be a list" in problems.edges[2]["phrases"][0]
    assert problems.settings["max_duration_seconds"] == [
        "settings.max_duration_seconds must be a positive number"
    ]
    assert problems.general == ["there is no start node"]
    assert sorted(problems.all_messages()) == sorted(messages)


def test_unreachable_nodes_and_unknown_messages() -> None:
    definition = starter_definition()
    definition["nodes"].append({"id": "island", "kind": "end", "say": "Hi"})
    problems = editor.map_problems(
        validate_definition(definition) + ["a message from a future validator"], definition
    )
    assert problems.nodes[4][editor.NODE] == ["node 'island' is unreachable from the start node"]
    assert problems.general == ["a message from a future validator"]


def test_renaming_a_node_moves_its_edges_and_deleting_it_drops_them() -> None:
    definition = starter_definition()
    node = editor.node_from_form(
        {"id": "booking", "kind": "agent", "say": "Which day?"}, definition["nodes"][1]
    )
    renamed = editor.with_node(definition, 1, node)
    assert [e["to"] for e in renamed["edges"]][:1] == ["booking"]
    assert renamed["edges"][3]["from"] == "booking"
    assert renamed["nodes"][1]["prompt"] is None and renamed["nodes"][1]["interruptible"] is False
    assert definition["nodes"][1]["id"] == "book"  # the original is untouched
    smaller = editor.without_node(renamed, 1)
    assert all("booking" not in (e["from"], e["to"]) for e in smaller["edges"])
    assert editor.validate(smaller).all_messages() == []


def test_edge_forms_round_trip() -> None:
    edge = editor.edge_from_form(
        {
            "from": "a",
            "to": "b",
            "phrases": "yes, sure\nok ,",
            "dtmf": "1",
            "condition": "",
            "fallback": "on",
        }
    )
    assert edge == {
        "from": "a",
        "to": "b",
        "phrases": ["yes", "sure", "ok"],
        "dtmf": "1",
        "fallback": True,
    }
    assert editor.edge_form(edge) == {
        "from": "a",
        "to": "b",
        "phrases": "yes, sure, ok",
        "dtmf": "1",
        "condition": "",
        "fallback": True,
    }


def test_the_settings_form_shows_only_the_llm_key_hint_and_keeps_the_key() -> None:
    definition = starter_definition()
    definition["settings"]["llm"] = {
        "base_url": "https://x/v1",
        "model": "m",
        "api_key": "sk-secret-12345678",
    }
    form = editor.settings_form(definition)
    assert form["llm_api_key_hint"] == "••••5678"
    assert "sk-secret" not in str(form) and "sk-secret" not in editor.shown_json(definition)
    base = {"engine": "llm", "llm_base_url": "https://x/v1", "llm_model": "m"}
    kept, problems = editor.apply_settings_form(definition, base)
    assert problems == {} and kept["settings"]["llm"]["api_key"] == "sk-secret-12345678"
    pasted, _ = editor.apply_settings_form(definition, base | {"llm_api_key": "••••5678"})
    assert pasted["settings"]["llm"]["api_key"] == "sk-secret-12345678"
    replaced, _ = editor.apply_settings_form(definition, base | {"llm_api_key": "sk-new"})
    assert replaced["settings"]["llm"]["api_key"] == "sk-new"
    cleared, _ = editor.apply_settings_form(definition, base | {"llm_api_key_clear": "on"})
    assert "api_key" not in cleared["settings"]["llm"]
    moved, _ = editor.apply_settings_form(definition, base | {"llm_base_url": "https://y/v1"})
    assert "api_key" not in moved["settings"]["llm"]
    assert definition["settings"]["llm"]["api_key"] == "sk-secret-12345678"  # untouched


def test_settings_problems_land_on_the_settings_fields() -> None:
    definition = starter_definition()
    _, problems = editor.apply_settings_form(
        definition,
        {"engine": "llm", "llm_base_url": "nope", "max_duration_seconds": "-3", "voice": "x"},
    )
    assert problems["max_duration_seconds"] == ["Enter a positive number of seconds."]
    assert problems["llm_base_url"] == ["settings.llm.base_url must be an http(s) URL"]
    assert problems["llm_model"] == ["settings.llm.model is required when settings.engine is llm"]
    _, problems = editor.apply_settings_form(definition, {"engine": "quantum"})
    assert problems["engine"] == ["settings.engine must be one of scripted, llm"]


def test_speech_sections_in_the_settings_form() -> None:
    definition = starter_definition()
    definition["settings"]["stt"] = "pocketsphinx"  # a bare name: the embedded engine
    definition["settings"]["tts"] = {"provider": "openai", "voice": "nova", "api_key": "sk-t-0042"}
    form = editor.settings_form(definition)
    assert form["stt_provider"] == "embedded" and form["stt_api_key_hint"] == ""
    assert (form["tts_provider"], form["tts_voice"], form["tts_api_key_hint"]) == (
        "openai",
        "nova",
        "••••0042",
    )
    same = {
        "engine": "scripted",
        "stt_provider": "embedded",
        "tts_provider": "openai",
        "tts_voice": "nova",
    }
    kept, problems = editor.apply_settings_form(definition, same)
    assert problems == {}
    assert kept["settings"]["stt"] == "pocketsphinx"  # untouched: still the embedded engine
    assert kept["settings"]["tts"] == {
        "provider": "openai",
        "voice": "nova",
        "api_key": "sk-t-0042",
    }
    moved, _ = editor.apply_settings_form(
        definition, same | {"tts_base_url": "https://elsewhere.example/v1"}
    )
    assert "api_key" not in moved["settings"]["tts"]


def test_the_drawing_gets_nodes_and_edges_with_their_form_indexes_and_no_settings() -> None:
    definition = starter_definition()
    definition["settings"]["llm"] = {"base_url": "http://llm", "api_key": "sk-drawing-1234"}
    definition["edges"].append({"from": "book", "to": "human", "phrases": ["agent", 7]})
    graph = editor.graph_of(definition)

    assert [(n["index"], n["id"], n["kind"]) for n in graph["nodes"]] == [
        (0, "start", "start"), (1, "book", "agent"), (2, "human", "transfer"), (3, "bye", "end")]
    assert graph["edges"][0] == {
        "index": 0, "from": "start", "to": "book", "phrases": ["yes", "book an appointment"],
        "dtmf": "1", "fallback": False, "condition": "the caller wants to book"}
    assert [e["fallback"] for e in graph["edges"]] == [False, False, True, True, False]
    assert graph["edges"][4]["phrases"] == ["agent"]  # only text is drawn
    assert "sk-drawing" not in repr(graph) and set(graph) == {"nodes", "edges"}
