"""Speech providers end to end: calls go through the real socket, and the OpenAI-compatible
transcription and speech endpoints are a local server answering over real HTTP. A failing
provider never ends the call; the providers' keys are never shown or logged."""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from loguru import logger

from agent_stream.speech.tts import EspeakSynthesizer
from agent_stream.store import Store
from agent_stream.workflow import (
    merge_secrets,
    redact_secrets,
    speech_provider,
    starter_definition,
    validate_definition,
)
from tests.conftest import Dial, MakeTenant, Tenant, answered, finished_run, say, until
from tests.openai_emulator import (
    SPEECH_RATE,
    SPEECH_SECONDS,
    OpenAIEmulator,
    start_openai_emulator,
)
from tests.speech_emulator import VOICE_SECONDS, start_speech_vendors

STT_KEY = "sk-stt-TEST-secret-0123456789abcdef"
TTS_KEY = "sk-tts-TEST-secret-fedcba9876543210"
# What the caller hears of one emulated utterance: mu-law, one byte per 8 kHz sample.
TONE_BYTES = int(SPEECH_SECONDS * SPEECH_RATE) // 3


@pytest.fixture
async def speech_server(aiohttp_server: Any) -> tuple[OpenAIEmulator, str]:
    """One emulator for both: it accepts the STT key; the TTS key is checked separately."""
    return await start_openai_emulator(aiohttp_server, STT_KEY)


@pytest.fixture
def loguru_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="TRACE")
    yield lines
    logger.remove(sink)


def speech_flow(**sections: dict[str, Any]) -> dict[str, Any]:
    definition = starter_definition()
    definition["nodes"][0]["say"] = "Hi, this is Acme."
    definition["settings"].update(sections)
    return definition


def conversation(run: Any) -> list[tuple[str, str]]:
    return [(line.role, line.text) for line in run.transcript]


def keys_absent(text: str, *keys: str) -> bool:
    return not any(key in text for key in keys)


# -- calls ---------------------------------------------------------------------------------------


async def test_caller_turns_are_transcribed_by_the_provider(
    dial: Dial, make_tenant: MakeTenant, store: Store,
    speech_server: tuple[OpenAIEmulator, str], caller_voice: EspeakSynthesizer,
    caplog: pytest.LogCaptureFixture, loguru_lines: list[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    provider, base_url = speech_server
    stt = {"provider": "openai", "base_url": base_url, "model": "emulated-stt", "api_key": STT_KEY}
    tenant = await make_tenant(definition=speech_flow(stt=stt))
    provider.transcribe("Yes, please.", "Goodbye!")
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: "utt-1" in call.marks)
    await say(call, caller_voice, "hello there")  # what is said is the provider's to decide
    await until(lambda: "utt-2" in call.marks)  # the "yes" edge: "book" speaks
    await say(call, caller_voice, "see you")
    assert await call.wait_closed(timeout=20) == (1000, "agent hung up")

    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason) == ("completed", "agent_hangup")
    assert conversation(run) == [
        ("agent", "Hi, this is Acme."),
        ("caller", "Yes, please."),
        ("agent", "Great. Which day suits you?"),
        ("caller", "Goodbye!"),
        ("agent", "Goodbye."),
    ]
    first, second = provider.uploads
    assert first.authorized and first.sample_rate == 16000 and first.frames > 16000 * 0.3
    assert first.fields["model"] == "emulated-stt" and first.fields["language"] == "en"
    assert "book an appointment" in first.fields["prompt"]  # the expected phrases, as a hint
    assert second.fields["prompt"] == "goodbye"
    assert not provider.requests and not provider.speech_requests  # no LLM, espeak speaks
    assert "speech to text: SpeechProvider(stt openai" in caplog.text
    assert keys_absent(caplog.text, STT_KEY) and keys_absent("".join(loguru_lines), STT_KEY)


async def test_agent_speech_comes_from_the_provider(
    dial: Dial, make_tenant: MakeTenant, store: Store,
    speech_server: tuple[OpenAIEmulator, str], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    provider, base_url = speech_server
    tts = {"provider": "openai", "base_url": base_url, "voice": "nova", "api_key": STT_KEY}
    tenant = await make_tenant(definition=speech_flow(tts=tts))
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: "utt-1" in call.marks)
    assert call.received_media_bytes == TONE_BYTES  # the emulator's tone, at 8 kHz
    await call.press("1")
    await until(lambda: "utt-2" in call.marks)
    assert call.received_media_bytes == 2 * TONE_BYTES
    await call.hang_up()
    assert await call.wait_closed() == (1000, "call ended")

    run = await finished_run(store, tenant)
    assert run.state == "completed"
    assert conversation(run) == [
        ("agent", "Hi, this is Acme."),
        ("caller", "(pressed 1)"),
        ("agent", "Great. Which day suits you?"),
    ]
    assert [r.body for r in provider.speech_requests] == [
        {"input": text, "model": "tts-1", "voice": "nova", "response_format": "pcm"}
        for text in ("Hi, this is Acme.", "Great. Which day suits you?")
    ]
    assert all(r.authorized for r in provider.speech_requests)
    assert keys_absent(caplog.text, STT_KEY)


async def test_refused_providers_fall_back_and_the_call_completes(
    client: TestClient, dial: Dial, make_tenant: MakeTenant, store: Store,
    speech_server: tuple[OpenAIEmulator, str], caller_voice: EspeakSynthesizer,
    caplog: pytest.LogCaptureFixture, loguru_lines: list[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    provider, base_url = speech_server
    wrong = "sk-WRONG-key-the-provider-refuses-42"
    stt = {"provider": "openai", "base_url": base_url, "api_key": wrong}
    tts = {"provider": "openai", "base_url": base_url, "api_key": TTS_KEY}  # not the server's
    tenant = await make_tenant(definition=speech_flow(stt=stt, tts=tts))
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: "utt-1" in call.marks)
    espeak_greeting = call.received_media_bytes
    assert espeak_greeting > 0 and espeak_greeting != TONE_BYTES  # espeak spoke instead
    await say(call, caller_voice, "yes")
    await until(lambda: "utt-2" in call.marks)  # not understood: the re-prompt
    await say(call, caller_voice, "yes")  # not understood again: the fallback edge
    assert await call.wait_closed(timeout=20) == (1000, "agent hung up")

    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason) == ("completed", "agent_hangup")
    assert conversation(run) == [
        ("agent", "Hi, this is Acme."),
        ("caller", "(not understood)"),
        ("agent", "Sorry, I didn't catch that. Hi, this is Acme."),
        ("caller", "(not understood)"),
        ("agent", "Goodbye."),
    ]
    assert len(provider.uploads) == 2 and not any(u.authorized for u in provider.uploads)
    assert len(provider.speech_requests) == 1  # after one refusal, espeak speaks for the call
    stt_lines = [r.getMessage() for r in caplog.records if "speech-to-text provider" in r.getMessage()]
    tts_lines = [r.getMessage() for r in caplog.records if "text-to-speech provider" in r.getMessage()]
    assert len(stt_lines) == 1 and "failed: HTTP 401 (check the API key)" in stt_lines[0]
    assert len(tts_lines) == 1 and "failed: HTTP 401 (check the API key)" in tts_lines[0]
    assert keys_absent(caplog.text, wrong, TTS_KEY)
    assert keys_absent("".join(loguru_lines), wrong, TTS_KEY)

    answers = [
        await client.get(f"/api/v1/workflows/{tenant.workflow.uuid}", headers=tenant.headers),
        await client.get("/api/v1/workflows", headers=tenant.headers),
        await client.get(f"/api/v1/workflow-runs/{run.id}", headers=tenant.headers),
    ]
    for answer in answers:
        assert answer.status == 200
        assert keys_absent(await answer.text(), wrong, TTS_KEY)


async def test_deepgram_hears_and_elevenlabs_speaks(
    aiohttp_server: Any, dial: Dial, make_tenant: MakeTenant, store: Store,
    caller_voice: EspeakSynthesizer, caplog: pytest.LogCaptureFixture,
    loguru_lines: list[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    vendors, base_url = await start_speech_vendors(aiohttp_server, STT_KEY, TTS_KEY)
    stt = {"provider": "deepgram", "base_url": base_url, "api_key": STT_KEY}
    tts = {"provider": "elevenlabs", "base_url": base_url, "voice": "voice-42", "api_key": TTS_KEY}
    tenant = await make_tenant(definition=speech_flow(stt=stt, tts=tts))
    vendors.transcribe("yes", "goodbye")
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: "utt-1" in call.marks)
    assert call.received_media_bytes == int(VOICE_SECONDS * 8000)  # ElevenLabs' mu-law tone
    await say(call, caller_voice, "hello there")
    await until(lambda: "utt-2" in call.marks)
    await say(call, caller_voice, "see you")
    assert await call.wait_closed(timeout=20) == (1000, "agent hung up")

    run = await finished_run(store, tenant)
    assert conversation(run) == [
        ("agent", "Hi, this is Acme."),
        ("caller", "yes"),
        ("agent", "Great. Which day suits you?"),
        ("caller", "goodbye"),
        ("agent", "Goodbye."),
    ]
    assert [(r.authorized, r.sample_rate, r.query) for r in vendors.listens] == [
        (True, 16000, {"model": "nova-2", "smart_format": "true", "language": "en"})] * 2
    assert [(r.path, r.query, r.body, r.authorized) for r in vendors.voices] == [
        ("/v1/text-to-speech/voice-42", {"output_format": "ulaw_8000"},
         {"text": text, "model_id": "eleven_flash_v2_5"}, True)
        for text in ("Hi, this is Acme.", "Great. Which day suits you?", "Goodbye.")
    ]
    assert keys_absent(caplog.text, STT_KEY, TTS_KEY)
    assert keys_absent("".join(loguru_lines), STT_KEY, TTS_KEY)


async def test_refused_vendor_keys_fall_back_too(
    aiohttp_server: Any, dial: Dial, make_tenant: MakeTenant, store: Store,
    caller_voice: EspeakSynthesizer, caplog: pytest.LogCaptureFixture,
) -> None:
    vendors, base_url = await start_speech_vendors(aiohttp_server, "dg-other", "xi-other")
    stt = {"provider": "deepgram", "base_url": base_url, "api_key": STT_KEY}
    tts = {"provider": "elevenlabs", "base_url": base_url, "api_key": TTS_KEY}
    tenant = await make_tenant(definition=speech_flow(stt=stt, tts=tts))
    call = await answered(dial, tenant.workflow.uuid)
    await until(lambda: "utt-1" in call.marks)
    assert call.received_media_bytes != int(VOICE_SECONDS * 8000)  # espeak spoke instead
    await say(call, caller_voice, "yes")
    await until(lambda: "utt-2" in call.marks)
    await call.press("0")
    assert await call.wait_closed(timeout=20) == (1000, "call transferred")

    run = await finished_run(store, tenant)
    assert (run.state, run.end_reason) == ("completed", "transfer")
    assert conversation(run)[1] == ("caller", "(not understood)")
    assert len(vendors.voices) == 1 and len(vendors.listens) == 1
    warnings = [r.getMessage() for r in caplog.records if "provider at" in r.getMessage()]
    assert len(warnings) == 2 and all("failed: HTTP 401 (check the API key)" in w for w in warnings)
    assert keys_absent(caplog.text, STT_KEY, TTS_KEY)


# -- settings ------------------------------------------------------------------------------------


def test_speech_settings_are_validated_with_clear_messages() -> None:
    def problems(**sections: Any) -> list[str]:
        return validate_definition(speech_flow(**sections))

    assert problems(stt={"provider": "embedded"}, tts={"provider": "embedded"}) == []
    assert problems(stt={"provider": "openai"}, tts={"provider": "openai", "voice": "nova"}) == []
    assert problems(stt={"provider": "deepgram"}, tts={"provider": "elevenlabs"}) == []
    assert problems(stt={"provider": "whisper"}) == [
        "settings.stt.provider must be one of embedded, openai, deepgram"]
    assert problems(tts={"provider": "espeak"}) == [
        "settings.tts.provider must be one of embedded, openai, elevenlabs"]
    assert problems(stt={"provider": "elevenlabs"}) == [
        "settings.stt.provider must be one of embedded, openai, deepgram"]
    assert problems(stt=["openai"]) == ["settings.stt must be an object or a provider name"]
    # a bare name is the provider (the admin's Settings form writes one)
    assert problems(stt="pocketsphinx", tts="espeak") == []
    assert problems(stt="Deepgram", tts="OpenAI") == []
    assert problems(tts="azure") == [
        "settings.tts.provider must be one of embedded, openai, elevenlabs"]
    assert problems(tts={"provider": "openai", "base_url": "ftp://speech.example"}) == [
        "settings.tts.base_url must be an http(s) URL"]
    assert problems(stt={"provider": "openai", "base_url": "https://u:p@speech.example/v1"}) == [
        "settings.stt.base_url must not hold credentials; use settings.stt.api_key"]
    assert problems(tts={"provider": "openai", "voice": 3, "api_key": 7}) == [
        "settings.tts.voice must be text", "settings.tts.api_key must be text"]

    assert speech_provider(speech_flow(), "stt") is None
    assert speech_provider(speech_flow(stt="pocketsphinx"), "stt") is None
    assert speech_provider(speech_flow(stt="openai"), "stt") is not None
    assert speech_provider(speech_flow(tts={"provider": "embedded"}), "tts") is None
    default = speech_provider(speech_flow(tts={"provider": "openai", "api_key": TTS_KEY}), "tts")
    assert default is not None
    assert (default.base_url, default.model, default.voice) == (
        "https://api.openai.com/v1", "tts-1", "alloy")
    assert TTS_KEY not in repr(default)
    eleven = speech_provider(speech_flow(tts={"provider": "elevenlabs"}), "tts")
    assert eleven is not None and (eleven.base_url, eleven.model) == (
        "https://api.elevenlabs.io", "eleven_flash_v2_5")
    deepgram = speech_provider(speech_flow(stt="deepgram"), "stt")
    assert deepgram is not None and (deepgram.base_url, deepgram.model) == (
        "https://api.deepgram.com", "nova-2")


def test_speech_keys_are_redacted_for_display_and_kept_unless_replaced() -> None:
    url = "https://speech.example/v1"
    stored = speech_flow(stt={"provider": "openai", "base_url": url, "api_key": STT_KEY},
                         tts={"provider": "openai", "api_key": TTS_KEY})
    shown = redact_secrets(stored)
    assert shown["settings"]["stt"] == {"provider": "openai", "base_url": url,
                                        "api_key_hint": "••••" + STT_KEY[-4:]}
    assert shown["settings"]["tts"] == {"provider": "openai", "api_key_hint": "••••" + TTS_KEY[-4:]}
    assert keys_absent(json.dumps(shown), STT_KEY, TTS_KEY)
    assert merge_secrets(shown, stored) == stored

    def keys_after(**sections: dict[str, Any]) -> tuple[Any, Any]:
        merged = merge_secrets(speech_flow(**sections), stored)["settings"]
        return merged["stt"].get("api_key"), merged["tts"].get("api_key")

    openai_tts = {"provider": "openai"}
    assert keys_after(stt={"provider": "openai", "base_url": url + "/", "api_key": ""},
                      tts=openai_tts | {"api_key": "••••" + TTS_KEY[-4:]}) == (STT_KEY, TTS_KEY)
    assert keys_after(stt={"provider": "openai", "base_url": url, "api_key": "sk-new"},
                      tts=openai_tts | {"base_url": "https://api.openai.com/v1/"}) == ("sk-new", TTS_KEY)
    # another endpoint must be given its key: the stored one never follows the URL
    assert keys_after(stt={"provider": "openai"},
                      tts=openai_tts | {"base_url": "https://elsewhere.example/v1"}) == (None, None)


async def test_the_api_never_answers_speech_keys_and_keeps_them(
    client: TestClient, tenant: Tenant, store: Store
) -> None:
    url = "/api/v1/workflows"
    definition = speech_flow(stt={"provider": "openai", "api_key": STT_KEY},
                             tts={"provider": "openai", "voice": "nova", "api_key": TTS_KEY})
    response = await client.post(url, json={"name": "Voices", "definition": definition},
                                 headers=tenant.headers)
    assert response.status == 201
    assert keys_absent(await response.text(), STT_KEY, TTS_KEY)
    uuid = (await response.json())["uuid"]
    shown = await (await client.get(f"{url}/{uuid}", headers=tenant.headers)).json()
    assert shown["definition"]["settings"]["tts"]["api_key_hint"] == "••••" + TTS_KEY[-4:]
    shown["definition"]["settings"]["tts"]["voice"] = "onyx"
    response = await client.patch(f"{url}/{uuid}", json={"definition": shown["definition"]},
                                  headers=tenant.headers)
    assert response.status == 200 and keys_absent(await response.text(), STT_KEY, TTS_KEY)
    stored = (await store.get_workflow(tenant.org_id, uuid)).definition["settings"]
    assert (stored["stt"]["api_key"], stored["tts"]["api_key"]) == (STT_KEY, TTS_KEY)
    assert stored["tts"]["voice"] == "onyx"

    bad = speech_flow(tts={"provider": "azure"})
    response = await client.patch(f"{url}/{uuid}", json={"definition": bad}, headers=tenant.headers)
    assert response.status == 400
    assert "settings.tts.provider must be one of embedded, openai, elevenlabs" in (
        await response.json())["problems"]
