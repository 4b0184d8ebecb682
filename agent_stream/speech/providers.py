"""Speech providers a workflow may name instead of the embedded engines: OpenAI-compatible
transcription (/v1/audio/transcriptions, whisper-style) and speech (/v1/audio/speech),
Deepgram's prerecorded /v1/listen, and ElevenLabs' text-to-speech.

The adapters have the embedded engines' interface (`recognize`, `synthesize`), so the
engines do not know which one they hold. The OpenAI ones call the API the way pipecat's
`OpenAISTTService` and `OpenAITTSService` do, with the same `openai` SDK client: those
services are pipeline processors that push frames, while an engine asks for one whole
utterance at a time and needs the audio back. Deepgram and ElevenLabs take one REST
request each (pipecat's services for them stream over WebSockets), sent through the
process's shared aiohttp session.

A provider failure never ends the call: a failed turn counts as not understood, a failed
synthesis is spoken by the embedded espeak voice (for the rest of the call). Each is
logged once per call, with the HTTP status only (an error body may quote the key).
"""
from __future__ import annotations

import functools
import io
import logging
import ssl
import wave
from collections import OrderedDict
from typing import Any, Final

import aiohttp
import httpx2
import openai

from .. import audio
from ..workflow import SpeechProvider
from .tts import DEFAULT_VOICE, EspeakSynthesizer

# A caller is waiting: a short connect, a bounded wait for the whole answer, one retry.
CONNECT_TIMEOUT: Final = 5.0
READ_TIMEOUT: Final = 10.0
RETRIES: Final = 1
# Transcription gets 16 kHz WAV; OpenAI's "pcm" speech is 24 kHz 16-bit mono.
UPLOAD_RATE: Final = 16000
OPENAI_PCM_RATE: Final = 24000
PHONE_RATE: Final = 8000
REST_TIMEOUT: Final = aiohttp.ClientTimeout(total=READ_TIMEOUT, connect=CONNECT_TIMEOUT)
CACHE_SIZE: Final = 64
# Endpoints that need no key still get one, so the client never sends OPENAI_API_KEY
# from the environment to a server of the workflow's choosing.
NO_API_KEY: Final = "no-key"

log = logging.getLogger(__name__)


class ProviderHTTPError(Exception):
    """A REST speech provider answered an HTTP error (only the status is kept)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


# What a provider call may raise; anything else is a bug and fails the agent step loudly.
FAILURES: Final = (openai.OpenAIError, httpx2.HTTPError, ProviderHTTPError,
                   aiohttp.ClientError, TimeoutError, ValueError)


def provider_error(exc: BaseException) -> str:
    """Why a provider call failed, without anything the provider echoed back."""
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    if isinstance(exc, (openai.APIStatusError, ProviderHTTPError)) and isinstance(status, int):
        hint = " (check the API key)" if status in (401, 403) else ""
        return f"HTTP {status}{hint}"
    if isinstance(exc, (openai.APITimeoutError, TimeoutError)):
        return "timed out"
    if isinstance(exc, (openai.APIConnectionError, aiohttp.ClientConnectionError)):
        return "could not connect"
    return type(exc).__name__


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The process's TLS client context (its CA bundle takes ~30 ms to load)."""
    return httpx2.create_ssl_context()


def _client(provider: SpeechProvider) -> openai.AsyncOpenAI:
    """An SDK client for one call; cheap, since the TLS context is shared."""
    return openai.AsyncOpenAI(
        api_key=provider.api_key or NO_API_KEY,
        base_url=provider.base_url,
        timeout=httpx2.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        max_retries=RETRIES,
        http_client=openai.DefaultAsyncHttpxClient(verify=_tls_context()),
    )


def wav_16k(pcm8k: bytes) -> bytes:
    """A caller turn (16-bit PCM at 8 kHz) as the WAV file a transcription API takes."""
    pcm16k = audio.resample(pcm8k, PHONE_RATE, UPLOAD_RATE)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(UPLOAD_RATE)
        wav.writeframes(pcm16k)
    return out.getvalue()


class ProviderRecognizer:
    """Speech to text by a provider; a failed turn is not understood, logged once a call."""

    def __init__(self, provider: SpeechProvider, call_log: Any = log) -> None:
        self._provider = provider
        self._log = call_log
        self._failed = False

    async def _transcribe(self, pcm8k: bytes, phrases: tuple[str, ...]) -> str:
        raise NotImplementedError

    async def recognize(self, pcm8k: bytes, phrases: tuple[str, ...]) -> str | None:
        """The whole turn's text (open vocabulary; `phrases` at most hint the spelling)."""
        if not pcm8k:
            return None
        try:
            text = (await self._transcribe(pcm8k, phrases)).strip()
        except FAILURES as exc:
            if not self._failed:
                self._failed = True
                self._log.warning(
                    "speech-to-text provider at %s failed: %s; the turn counts as not understood",
                    self._provider.host, provider_error(exc))
            return None
        return text or None

    async def close(self) -> None:
        """Release what the adapter holds for its call."""


class ProviderSynthesizer:
    """Text to speech by a provider, as 8 kHz PCM; `fallback` (the embedded espeak voice)
    speaks for the rest of the call once the provider has failed."""

    def __init__(
        self, provider: SpeechProvider, fallback: EspeakSynthesizer, call_log: Any = log
    ) -> None:
        self._provider = provider
        self._fallback = fallback
        self._log = call_log
        self._failed = False
        self._cache: OrderedDict[str, bytes] = OrderedDict()

    async def _speech(self, text: str) -> bytes:
        """16-bit mono PCM at 8 kHz."""
        raise NotImplementedError

    async def synthesize(self, text: str, *, voice: str = DEFAULT_VOICE, rate: int = 175) -> bytes:
        """16-bit mono PCM at 8 kHz; `voice` and `rate` are the espeak fallback's."""
        if self._failed:
            return await self._fallback.synthesize(text, voice=voice, rate=rate)
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        try:
            pcm = await self._speech(text)
        except FAILURES as exc:
            self._failed = True
            self._log.warning(
                "text-to-speech provider at %s failed: %s; the embedded voice speaks instead",
                self._provider.host, provider_error(exc))
            return await self._fallback.synthesize(text, voice=voice, rate=rate)
        self._cache[text] = pcm
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return pcm

    async def close(self) -> None:
        """Release what the adapter holds for its call."""


class OpenAIRecognizer(ProviderRecognizer):
    """An OpenAI-compatible /audio/transcriptions endpoint (whisper-style)."""

    def __init__(self, provider: SpeechProvider, call_log: Any = log) -> None:
        super().__init__(provider, call_log)
        self._client = _client(provider)

    async def _transcribe(self, pcm8k: bytes, phrases: tuple[str, ...]) -> str:
        options: dict[str, Any] = {}
        if self._provider.language:
            options["language"] = self._provider.language
        if phrases:
            options["prompt"] = ", ".join(phrases)
        result = await self._client.audio.transcriptions.create(
            file=("audio.wav", wav_16k(pcm8k), "audio/wav"),
            model=self._provider.model,
            response_format="json",
            **options,
        )
        return str(getattr(result, "text", "") or "")

    async def close(self) -> None:
        await self._client.close()


class OpenAISynthesizer(ProviderSynthesizer):
    """An OpenAI-compatible /audio/speech endpoint, asked for 24 kHz PCM."""

    def __init__(
        self, provider: SpeechProvider, fallback: EspeakSynthesizer, call_log: Any = log
    ) -> None:
        super().__init__(provider, fallback, call_log)
        self._client = _client(provider)

    async def _speech(self, text: str) -> bytes:
        response = await self._client.audio.speech.create(
            input=text,
            model=self._provider.model,
            voice=self._provider.voice,
            response_format="pcm",
        )
        pcm24k = response.content
        pcm24k = pcm24k[: len(pcm24k) - len(pcm24k) % 2]
        return audio.resample(pcm24k, OPENAI_PCM_RATE, PHONE_RATE)

    async def close(self) -> None:
        await self._client.close()


def _checked(response: aiohttp.ClientResponse) -> None:
    """Raise the status of an error answer, reading nothing of its body."""
    if response.status >= 400:
        raise ProviderHTTPError(response.status)


class DeepgramRecognizer(ProviderRecognizer):
    """Deepgram's prerecorded REST API (POST /v1/listen with the WAV as the body), through
    the process's shared HTTP session."""

    def __init__(
        self, provider: SpeechProvider, http: aiohttp.ClientSession, call_log: Any = log
    ) -> None:
        super().__init__(provider, call_log)
        self._http = http

    async def _transcribe(self, pcm8k: bytes, phrases: tuple[str, ...]) -> str:
        params = {"model": self._provider.model, "smart_format": "true"}
        if self._provider.language:
            params["language"] = self._provider.language
        async with self._http.post(
            f"{self._provider.base_url.rstrip('/')}/v1/listen",
            params=params,
            data=wav_16k(pcm8k),
            headers={"Authorization": f"Token {self._provider.api_key}",
                     "Content-Type": "audio/wav"},
            timeout=REST_TIMEOUT,
        ) as response:
            _checked(response)
            answer = await response.json()
        try:
            return str(answer["results"]["channels"][0]["alternatives"][0]["transcript"])
        except (KeyError, IndexError, TypeError):
            return ""


class ElevenLabsSynthesizer(ProviderSynthesizer):
    """ElevenLabs' REST text-to-speech, asked for 8 kHz mu-law (the phone's own format),
    through the process's shared HTTP session."""

    def __init__(
        self, provider: SpeechProvider, fallback: EspeakSynthesizer, http: aiohttp.ClientSession,
        call_log: Any = log,
    ) -> None:
        super().__init__(provider, fallback, call_log)
        self._http = http

    async def _speech(self, text: str) -> bytes:
        async with self._http.post(
            f"{self._provider.base_url.rstrip('/')}/v1/text-to-speech/{self._provider.voice}",
            params={"output_format": "ulaw_8000"},
            json={"text": text, "model_id": self._provider.model},
            headers={"xi-api-key": self._provider.api_key, "Accept": "audio/basic"},
            timeout=REST_TIMEOUT,
        ) as response:
            _checked(response)
            ulaw = await response.read()
        return audio.ulaw_to_pcm16(ulaw)


def recognizer(
    provider: SpeechProvider, http: aiohttp.ClientSession, call_log: Any = log
) -> ProviderRecognizer:
    """The STT adapter for one call."""
    if provider.provider == "deepgram":
        return DeepgramRecognizer(provider, http, call_log)
    return OpenAIRecognizer(provider, call_log)


def synthesizer(
    provider: SpeechProvider, fallback: EspeakSynthesizer, http: aiohttp.ClientSession,
    call_log: Any = log,
) -> ProviderSynthesizer:
    """The TTS adapter for one call."""
    if provider.provider == "elevenlabs":
        return ElevenLabsSynthesizer(provider, fallback, http, call_log)
    return OpenAISynthesizer(provider, fallback, call_log)
