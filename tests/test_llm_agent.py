"""The LLM engine end to end: calls go through the real socket, and the model is a local
OpenAI-compatible server streaming scripted completions (text and tool calls) over real
HTTP. Also: the engine's settings are validated, and its API key is never shown or logged."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from loguru import logger

from agent_stream.engine.llm import APOLOGY, PHONE_GUIDANCE
from agent_stream.speech.tts import EspeakSynthesizer
from agent_stream.store import Store
from agent_stream.workflow import (
    llm_endpoint,
    merge_secrets,
    redact_secrets,
    starter_definition,
    validate_definition,
)
from tests.cloudonix_emulator import CloudonixEmulator
from tests.conftest import Dial, MakeTenant, Tenant, answered, finished_run, say, until
from tests.openai_emulator import MODEL, OpenAIEmulator, failure, start_openai_emulator, text, tool_call
from tests.test_metrics import scrape, value

API_KEY = "sk-llm-TEST-secret-0123456789abcdef"
GLOBAL_PROMPT = "You are the front desk of Acme Dental. Be brief."


@pytest.fixture
async def openai_server(aiohttp_server: Any) -> tuple[OpenAIEmulator, str]:
    return await start_openai_emulator(aiohttp_server, API_KEY)


@pytest.fixture
def model(openai_server: tuple[OpenAIEmulator, str]) -> OpenAIEmulator:
    return openai_server[0]


def llm_flow(base_url: str, **llm: Any) -> dict[str, Any]:
    """The starter agent, driven by the emulated model."""
    definition = starter_definition()
    definition["nodes"][0]["say"] = "Hi, this is Acme."
    definition["nodes"][0]["prompt"] = "Find out what {{caller_number}} wants."
    definition["settings"]["engine"] = "llm"
    definition["settings"]["llm"] = {"base_url": base_url, "model": MODEL, "api_key": API_KEY} | llm
    return definition


async def llm_tenant(
    make_tenant: MakeTenant, base_url: str, **llm: Any
) -> tuple[Tenant, dict[str, Any]]:
    definition = llm_flow(base_url, **llm)
    tenant = await make_tenant(definition=definition)
    return tenant, definition


@pytest.fixture
async def agent(make_tenant: MakeTenant, openai_server: tuple[OpenAIEmulator, str]) -> Tenant:
    return (await llm_tenant(make_tenant, openai_server[1]))[0]


@pytest.fixture
def loguru_lines() -> Iterator[list[str]]:
    """Everything pipecat logs through loguru during the test, at every level."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="TRACE")
    yield lines
    logger.remove(sink)


def conversation(run: Any) -> list[tuple[str, str]]:
    return [(line.role, line.text) for line in run.transcript]


def system_prompt(node_prompt: str) -> str:
    return f"{GLOBAL_PROMPT}\n\n{node_prompt}\n\n{PHONE_GUIDANCE}"


# -- conversations ---------------------------------------------------------------------------


async def test_replies_are_spoken_sentence_by_sentence_and_functions_move_the_call(
    dial: Dial, agent: Tenant, store: Store, model: OpenAIEmulator, emulator: CloudonixEmulator,
    caller_voice: EspeakSynthesizer, caplog: pytest.LogCaptureFixture, loguru_lines: list[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    model.answer(
        text("Sure", " thing. We are", " open on Monday."),
        tool_call("go_to_book"),
        tool_call("end_call", {}, "Goodbye then."),
    )
    call = await dial(agent.workflow.uuid)
    call.start_reading()
    await call.handshake()
    await until(lambda: "utt-1" in call.marks)  # the start node's say, verbatim
    assert not model.requests  # a node that says something does not ask the model first

    await say(call, caller_voice, "yes")  # the embedded recognizer, on every edge phrase
    first = await model.wait_for_requests(1)
    assert first.authorized and first.body["model"] == MODEL and first.body["stream"] is True
    assert first.system == system_prompt("Find out what +15555550100 wants.")
    assert first.messages[1:] == [
        {"role": "assistant", "content": "Hi, this is Acme."},
        {"role": "user", "content": "yes"},
    ]
    assert first.tool_names == ["go_to_book", "go_to_human", "go_to_bye", "end_call", "transfer_call"]
    assert "the caller wants to book" in first.tool("go_to_book")["description"]
    assert '"talk to a human"' in first.tool("go_to_human")["description"]
    await until(lambda: "utt-3" in call.marks)  # two sentences: two utterances, two marks

    await call.press("5")  # no edge for 5: the model hears about it and moves on
    second = await model.wait_for_requests(2)
    assert second.messages[-2:] == [
        {"role": "assistant", "content": "Sure thing. We are open on Monday."},
        {"role": "user", "content": "(caller pressed 5)"},
    ]
    await until(lambda: "utt-4" in call.marks)  # "book" says its text

    await call.press("7")
    third = await model.wait_for_requests(3)
    assert third.system == system_prompt("Collect a preferred day.")
    assert third.tool_names == ["go_to_bye", "end_call", "transfer_call"]
    assert third.messages[-4:] == [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_0", "type": "function",
            "function": {"name": "go_to_book", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "done"},
        {"role": "assistant", "content": "Great. Which day suits you?"},
        {"role": "user", "content": "(caller pressed 7)"},
    ]
    assert await call.wait_closed(timeout=20) == (1000, "agent hung up")

    run = await finished_run(store, agent)
    assert (run.state, run.end_reason) == ("completed", "agent_hangup")
    assert conversation(run) == [
        ("agent", "Hi, this is Acme."),
        ("caller", "yes"),
        ("agent", "Sure thing."),
        ("agent", "We are open on Monday."),
        ("caller", "(pressed 5)"),
        ("agent", "Great. Which day suits you?"),
        ("caller", "(pressed 7)"),
        ("agent", "Goodbye then."),
    ]
    assert call.marks == ["utt-1", "utt-2", "utt-3", "utt-4", "utt-5"]
    (hangup,) = [r for r in emulator.requests if r.method == "DELETE"]
    assert hangup.session == call.session and hangup.authorized
    assert "LLM engine: model 'emulated-model'" in caplog.text
    assert API_KEY not in caplog.text and not any(API_KEY in line for line in loguru_lines)


async def test_a_digit_with_an_edge_is_followed_directly_and_transfer_call_transfers(
    dial: Dial, agent: Tenant, store: Store, model: OpenAIEmulator, emulator: CloudonixEmulator
) -> None:
    model.answer(tool_call("transfer_call", {}, "Let me get someone for you."))
    call = await dial(agent.workflow.uuid)
    call.start_reading()
    await call.handshake()
    await until(lambda: "utt-1" in call.marks)
    await call.press("1")  # the start node has an edge for 1: no need to ask the model
    await until(lambda: "utt-2" in call.marks)
    assert not model.requests

    await call.press("0")  # "book" has no edge for 0: the model decides, and transfers
    request = await model.wait_for_requests(1)
    assert request.messages[1:] == [
        {"role": "assistant", "content": "Hi, this is Acme."},
        {"role": "user", "content": "(caller pressed 1)"},
        {"role": "assistant", "content": "Great. Which day suits you?"},
        {"role": "user", "content": "(caller pressed 0)"},
    ]
    transfer = request.tool("transfer_call")
    assert transfer["parameters"]["properties"]["destination"]["enum"] == ["+15555550123"]
    assert await call.wait_closed(timeout=20) == (1000, "call transferred")

    run = await finished_run(store, agent)
    assert (run.state, run.end_reason) == ("completed", "transfer")
    assert run.gathered_context["transfer_destination"] == "+15555550123"
    assert conversation(run) == [
        ("agent", "Hi, this is Acme."),
        ("caller", "(pressed 1)"),
        ("agent", "Great. Which day suits you?"),
        ("caller", "(pressed 0)"),
        ("agent", "Let me get someone for you."),
        ("agent", "Connecting you now."),  # the transfer node's say, then the transfer
    ]
    (post,) = [r for r in emulator.requests if r.method == "POST"]
    assert post.json == {"cxml": "<Response><Dial>+15555550123</Dial></Response>"}


async def test_a_node_with_only_a_prompt_lets_the_model_speak_first(
    dial: Dial, make_tenant: MakeTenant, store: Store, model: OpenAIEmulator,
    openai_server: tuple[OpenAIEmulator, str],
) -> None:
    tenant, definition = await llm_tenant(make_tenant, openai_server[1])
    definition["nodes"][0]["say"] = None
    await store.update_workflow(tenant.org_id, tenant.workflow.uuid, definition=definition)
    model.answer(text("Good morning, Acme Dental here."))
    call = await answered(dial, tenant.workflow.uuid)
    request = await model.wait_for_requests(1)
    assert request.messages == [
        {"role": "system", "content": system_prompt("Find out what +15555550100 wants.")}]
    await until(lambda: "utt-1" in call.marks)
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")
    run = await finished_run(store, tenant)
    assert run.end_reason == "caller_hangup"
    assert conversation(run) == [("agent", "Good morning, Acme Dental here.")]


async def test_barge_in_stops_the_streamed_reply(
    dial: Dial, agent: Tenant, store: Store, model: OpenAIEmulator,
    caller_voice: EspeakSynthesizer,
) -> None:
    long_sentence = ("We are open every weekday from eight in the morning until six in the "
                     "evening, and on Saturdays until noon.")
    model.answer(
        # the rest of the reply is held back while the caller talks over the first sentence
        text(f"{long_sentence} And", " this part is never heard.", pause=8.0),
        tool_call("transfer_call"),
    )
    call = await dial(agent.workflow.uuid)
    call.start_reading()
    await call.handshake()
    await until(lambda: "utt-1" in call.marks)
    heard = call.received_media_bytes
    await call.press("5")
    await model.wait_for_requests(1)
    await until(lambda: call.received_media_bytes > heard + 8000)  # a second of the reply
    await say(call, caller_voice, "talk to a human")
    second = await model.wait_for_requests(2)
    assert call.clears == 1
    assert second.messages[-2:] == [
        {"role": "assistant", "content": long_sentence},
        {"role": "user", "content": "talk to a human"},
    ]
    assert await call.wait_closed(timeout=20) == (1000, "call transferred")
    run = await finished_run(store, agent)
    reply = run.transcript[2]
    assert (reply.role, reply.interrupted) == ("agent", True)
    assert reply.text and long_sentence.startswith(reply.text) and reply.text != long_sentence
    assert "never heard" not in " ".join(line.text for line in run.transcript)
    assert conversation(run)[3:] == [("caller", "talk to a human"), ("agent", "Connecting you now.")]


# -- failures and secrets ----------------------------------------------------------------------


async def test_a_refused_api_key_apologises_hangs_up_and_fails_the_run(
    client: TestClient, dial: Dial, make_tenant: MakeTenant, store: Store, model: OpenAIEmulator,
    openai_server: tuple[OpenAIEmulator, str], emulator: CloudonixEmulator,
    caplog: pytest.LogCaptureFixture, loguru_lines: list[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_key = "sk-WRONG-key-that-the-endpoint-refuses-42"
    tenant, _ = await llm_tenant(make_tenant, openai_server[1], api_key=wrong_key)
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: "utt-1" in call.marks)
    await call.press("5")
    request = await model.wait_for_requests(1)
    assert not request.authorized  # the endpoint answered 401
    assert await call.wait_closed(timeout=20) == (1000, "llm error")

    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason) == ("failed", "llm_error")
    assert run.error == "LLM failed: the LLM endpoint answered HTTP 401 (check the API key)"
    # counted as a failed call, though it closed with 1000 (an alert on failures reads state)
    assert value(await scrape(client), "agent_stream_calls_ended_total", provider="cloudonix",
                 state="failed", end_reason="llm_error", close_code="1000") == 1
    assert conversation(run)[-1] == ("agent", APOLOGY)
    assert [r.method for r in emulator.requests] == ["GET", "DELETE"]

    answers = [
        await client.get(f"/api/v1/workflows/{tenant.workflow.uuid}", headers=tenant.headers),
        await client.get("/api/v1/workflows", headers=tenant.headers),
        await client.get(f"/api/v1/workflow-runs/{run.id}", headers=tenant.headers),
    ]
    for answer in answers:
        assert answer.status == 200
        assert wrong_key not in await answer.text()
    assert "answered HTTP 401" in caplog.text
    assert wrong_key not in caplog.text and not any(wrong_key in line for line in loguru_lines)


async def test_a_failing_endpoint_fails_the_run_the_same_way(
    dial: Dial, agent: Tenant, store: Store, model: OpenAIEmulator
) -> None:
    model.answer(failure(404))  # e.g. a model name the server does not have
    call = await dial(agent.workflow.uuid)
    call.start_reading()
    await call.handshake()
    await until(lambda: "utt-1" in call.marks)
    await call.press("5")
    assert await call.wait_closed(timeout=20) == (1000, "llm error")
    run = await finished_run(store, agent)
    assert (run.state, run.error) == ("failed", "LLM failed: the LLM endpoint answered HTTP 404")


# -- settings -------------------------------------------------------------------------------------


def test_llm_settings_are_validated_with_clear_messages() -> None:
    definition = llm_flow("http://localhost:11434/v1")
    assert validate_definition(definition) == []

    def problems(**settings: Any) -> list[str]:
        broken = llm_flow("http://localhost:11434/v1")
        broken["settings"].update(settings)
        return validate_definition(broken)

    assert problems(engine="gpt") == ["settings.engine must be one of scripted, llm"]
    assert problems(llm={"base_url": "ftp://models.example", "model": "m"}) == [
        "settings.llm.base_url must be an http(s) URL"]
    assert problems(llm={"base_url": "localhost:11434", "model": "m"}) == [
        "settings.llm.base_url must be an http(s) URL"]
    assert problems(llm={"base_url": "https://u:p@api.example/v1", "model": "m"}) == [
        "settings.llm.base_url must not hold credentials; use settings.llm.api_key"]
    assert problems(llm={"base_url": "https://api.example/v1"}) == [
        "settings.llm.model is required when settings.engine is llm"]
    assert problems(llm={"base_url": "https://api.example/v1", "model": "m", "api_key": 7}) == [
        "settings.llm.api_key must be text"]
    assert problems(llm="openai") == ["settings.llm must be an object"]
    assert problems(llm=None) == ["settings.llm is required when settings.engine is llm"]
    # an LLM configured but not chosen is fine, and the engine stays scripted
    scripted = llm_flow("https://api.example/v1")
    scripted["settings"]["engine"] = "scripted"
    assert validate_definition(scripted) == [] and llm_endpoint(scripted) is None
    no_url = llm_flow("")
    assert validate_definition(no_url) == [] and llm_endpoint(no_url) is None
    endpoint = llm_endpoint(definition)
    assert endpoint is not None and endpoint.api_key == API_KEY
    assert API_KEY not in repr(endpoint)


def test_secrets_are_redacted_for_display_and_kept_unless_replaced() -> None:
    stored = llm_flow("https://api.example/v1")
    shown = redact_secrets(stored)
    assert "api_key" not in shown["settings"]["llm"]
    assert shown["settings"]["llm"]["api_key_hint"] == "••••" + API_KEY[-4:]
    assert stored["settings"]["llm"]["api_key"] == API_KEY  # the stored copy is untouched

    def key_after(new_llm: dict[str, Any]) -> Any:
        new = llm_flow("https://api.example/v1")
        new["settings"]["llm"] = new_llm
        return merge_secrets(new, stored)["settings"]["llm"].get("api_key")

    base = {"base_url": "https://api.example/v1", "model": MODEL}
    assert merge_secrets(shown, stored) == stored  # a shown definition saved back as is
    assert key_after(base) == API_KEY
    assert key_after(base | {"api_key": ""}) == API_KEY
    assert key_after(base | {"api_key": "••••" + API_KEY[-4:]}) == API_KEY
    assert key_after(base | {"api_key": "sk-new"}) == "sk-new"
    # another endpoint must be given its key: the stored one never follows the URL
    assert key_after(base | {"base_url": "https://elsewhere.example/v1"}) is None
    assert merge_secrets(starter_definition(), stored) == starter_definition()


async def test_the_api_never_answers_the_key_and_keeps_it_unless_replaced(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    url = "/api/v1/workflows"
    definition = llm_flow("https://api.example/v1")
    response = await client.post(url, json={"name": "LLM", "definition": definition},
                                 headers=tenant.headers)
    assert response.status == 201
    created = await response.json()
    assert API_KEY not in await response.text()
    llm = created["definition"]["settings"]["llm"]
    assert llm == {"base_url": "https://api.example/v1", "model": MODEL,
                   "api_key_hint": "••••" + API_KEY[-4:]}
    uuid = created["uuid"]

    async def stored_key() -> Any:
        workflow = await store.get_workflow(tenant.org_id, uuid)
        return workflow.definition["settings"]["llm"].get("api_key")

    # what GET shows, saved back (e.g. by an editor), changes nothing, not even the version
    shown = await (await client.get(f"{url}/{uuid}", headers=tenant.headers)).json()
    assert API_KEY not in json.dumps(shown)
    response = await client.patch(f"{url}/{uuid}", json={"definition": shown["definition"]},
                                  headers=tenant.headers)
    assert response.status == 200 and (await response.json())["version"] == created["version"]
    assert await stored_key() == API_KEY
    for kept in ("", "••••" + API_KEY[-4:]):
        edited = json.loads(json.dumps(shown["definition"]))
        edited["settings"]["llm"]["api_key"] = kept
        edited["global_prompt"] = f"Be brief{kept}."
        response = await client.patch(f"{url}/{uuid}", json={"definition": edited},
                                      headers=tenant.headers)
        assert response.status == 200 and API_KEY not in await response.text()
        assert await stored_key() == API_KEY
    edited["settings"]["llm"]["api_key"] = "sk-replaced-0000"
    response = await client.patch(f"{url}/{uuid}", json={"definition": edited},
                                  headers=tenant.headers)
    assert (await response.json())["definition"]["settings"]["llm"]["api_key_hint"] == "••••0000"
    assert await stored_key() == "sk-replaced-0000"

    bad = llm_flow("file:///etc/passwd")
    response = await client.patch(f"{url}/{uuid}", json={"definition": bad}, headers=tenant.headers)
    assert response.status == 400
    assert "settings.llm.base_url must be an http(s) URL" in (await response.json())["problems"]


async def test_calls_stay_scripted_without_an_llm_endpoint(
    dial: Dial, make_tenant: MakeTenant, store: Store, model: OpenAIEmulator,
    openai_server: tuple[OpenAIEmulator, str],
) -> None:
    tenant, definition = await llm_tenant(make_tenant, openai_server[1])
    definition["settings"]["engine"] = "scripted"
    await store.update_workflow(tenant.org_id, tenant.workflow.uuid, definition=definition)
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: "utt-1" in call.marks)
    await call.press("5")  # the scripted engine re-prompts; no model is asked
    await until(lambda: "utt-2" in call.marks)
    await call.hang_up()
    await call.wait_closed()
    run = await finished_run(store, tenant)
    assert conversation(run)[2] == ("agent", "Sorry, I didn't catch that. Hi, this is Acme.")
    assert not model.requests
