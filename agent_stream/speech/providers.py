"""Speech providers a workflow may name instead of the embedded engines: OpenAI-compatible
transcription (/v1/audio/transcriptions, whisper-style) and speech (/v1/audio/speech).

The adapters have the embedded engines' interface (`recognize`, `synthesize`), so the
engines do not know which one they hold. They call the API the way pipecat's
`OpenAISTTService` and `OpenAITTSService` do, with the same `openai` SDK client: those
services are pipeline processors that push frames, while an engine asks for one whole
utterance at a time and needs the audio back.

A provider failure never ends the call: a failed turn counts as not understood, a failed
synthesis is spoken by the embedded espeak voice (for the rest of the call). Each is
logged once per call, with the HTTP status only (an error body may quote the key).
"""
from __future__ import annotations

import functools
import io
import logging
import ssl
import warnings
import wave
from collections import OrderedDict
from typing import Any, Final

import httpx2
import openai

from ..workflow import SpeechProvider
from .tts import DEFAULT_VOICE, EspeakSynthesizer

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

# A caller is waiting: a short connect, a bounded wait for the whole answer, one retry.
CONNECT_TIMEOUT: Final = 5.0
READ_TIMEOUT: Final = 10.0
RETRIES: Final = 1
# Transcription gets 16 kHz WAV; OpenAI's "pcm" speech is 24 kHz 16-bit mono.
UPLOAD_RATE: Final = 16000
OPENAI_PCM_RATE: Final = 24000
PHONE_RATE: Final = 8000
CACHE_SIZE: Final = 64
# Endpoints that need no key still get one, so the client never sends OPENAI_API_KEY
# from the environment to a server of the workflow's choosing.
NO_API_KEY: Final = "no-key"

log = logging.getLogger(__name__)


def provider_error(exc: BaseException) -> str:
    """Why a provider call failed, without anything the provider echoed back."""
    if isinstance(exc, openai.APIStatusError):
        hint = " (check the API key)" if exc.status_code in (401, 403) else ""
        return f"HTTP {exc.status_code}{hint}"
    if isinstance(exc, openai.APITimeoutError):
        return "timed out"
    if isinstance(exc, openai.APIConnectionError):
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
    pcm16k, _ = audioop.ratecv(pcm8k, 2, 1, PHONE_RATE, UPLOAD_RATE, None)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(UPLOAD_RATE)
        wav.writeframes(pcm16k)
    return out.getvalue()


class OpenAIRecognizer:
    """Speech to text through an OpenAI-compatible /audio/transcriptions endpoint."""

    def __init__(self, provider: SpeechProvider, call_log: Any = log) -> None:
        self._provider = provider
        self._client = _client(provider)
        self._log = call_log
        self._failed = False

    async def recognize(self, pcm8k: bytes, phrases: tuple[str, ...]) -> str | None:
        """The whole turn's text (open vocabulary; `phrases` only hint the spelling)."""
        if not pcm8k:
            return None
        options: dict[str, Any] = {}
        if self._provider.language:
            options["language"] = self._provider.language
        if phrases:
            options["prompt"] = ", ".join(phrases)
        try:
            result = await self._client.audio.transcriptions.create(
                file=("audio.wav", wav_16k(pcm8k), "audio/wav"),
                model=self._provider.model,
                response_format="json",
                **options,
            )
        except (openai.OpenAIError, httpx2.HTTPError) as exc:
            if not self._failed:
                self._failed = True
                self._log.warning(
                    "speech-to-text provider at %s failed: %s; the turn counts as not understood",
                    self._provider.host, provider_error(exc))
            return None
        text = str(getattr(result, "text", "") or "").strip()
        return text or None

    async def close(self) -> None:
        await self._client.close()


class OpenAISynthesizer:
    """Text to speech through an OpenAI-compatible /audio/speech endpoint, as 8 kHz PCM;
    `fallback` (the embedded espeak voice) speaks once the provider has failed."""

    def __init__(
        self, provider: SpeechProvider, fallback: EspeakSynthesizer, call_log: Any = log
    ) -> None:
        self._provider = provider
        self._fallback = fallback
        self._client = _client(provider)
        self._log = call_log
        self._failed = False
        self._cache: OrderedDict[str, bytes] = OrderedDict()

    async def synthesize(self, text: str, *, voice: str = DEFAULT_VOICE, rate: int = 175) -> bytes:
        """16-bit mono PCM at 8 kHz; `voice` and `rate` are the espeak fallback's."""
        if self._failed:
            return await self._fallback.synthesize(text, voice=voice, rate=rate)
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        try:
            response = await self._client.audio.speech.create(
                input=text,
                model=self._provider.model,
                voice=self._provider.voice,  # type: ignore[arg-type]
                response_format="pcm",
            )
            pcm24k = response.content
        except (openai.OpenAIError, httpx2.HTTPError) as exc:
            self._failed = True
            self._log.warning(
                "text-to-speech provider at %s failed: %s; the embedded voice speaks instead",
                self._provider.host, provider_error(exc))
            return await self._fallback.synthesize(text, voice=voice, rate=rate)
        pcm24k = pcm24k[: len(pcm24k) - len(pcm24k) % 2]
        pcm, _ = audioop.ratecv(pcm24k, 2, 1, OPENAI_PCM_RATE, PHONE_RATE, None)
        self._cache[text] = pcm
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return pcm

    async def close(self) -> None:
        await self._client.close()
