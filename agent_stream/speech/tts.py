"""Text to speech with espeak-ng (GPL-3.0) through the `espeakng-loader` wheel.

espeak-ng keeps global state and is not thread-safe (two threads crashed it in every
trial), so the library is driven from one thread per process, shared by every
synthesizer; it takes about a millisecond per phrase, and repeated phrases are cached.
"""
from __future__ import annotations

import asyncio
import ctypes
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import espeakng_loader

from .. import audio

_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_POS_CHARACTER: Final = 1
_CHARS_UTF8: Final = 1
_RATE_PARAMETER: Final = 1
CACHE_SIZE: Final = 256
DEFAULT_VOICE: Final = "en-us"

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Espeak:
    """The process's one espeak-ng instance; every method runs on its own thread."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
        self._lib: ctypes.CDLL | None = None
        self._rate = 0
        self._voice = ""
        self._chunks: list[bytes] = []
        self._callback = _SynthCallback(self._collect)

    def _collect(self, wav: ctypes.Array[ctypes.c_short], samples: int, _events: object) -> int:
        if samples > 0:
            self._chunks.append(ctypes.string_at(wav, samples * 2))
        return 0

    def _load(self) -> ctypes.CDLL:
        lib = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        path = espeakng_loader.get_data_path().encode()
        self._rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, path, 0)
        if self._rate <= 0:
            raise RuntimeError("espeak-ng failed to initialise")
        lib.espeak_SetSynthCallback(self._callback)
        return lib

    def synthesize(self, text: str, voice: str, rate: int, sample_rate: int) -> bytes:
        if self._lib is None:
            self._lib = self._load()
        lib = self._lib
        if voice != self._voice:
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                lib.espeak_SetVoiceByName(DEFAULT_VOICE.encode())
            self._voice = voice
        lib.espeak_SetParameter(_RATE_PARAMETER, rate, 0)
        self._chunks = []
        data = text.encode() + b"\0"
        lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        pcm = b"".join(self._chunks)
        return audio.resample(pcm, self._rate, sample_rate) if pcm else pcm


_engine: _Espeak | None = None
_engine_lock = threading.Lock()


def _shared_engine() -> _Espeak:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Espeak()
        return _engine


class EspeakSynthesizer:
    """Speech at `sample_rate` (16-bit mono PCM) with a cache of recent phrases."""

    def __init__(self, *, sample_rate: int = 8000) -> None:
        self.sample_rate = sample_rate
        self._cache: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()

    async def synthesize(self, text: str, *, voice: str = DEFAULT_VOICE, rate: int = 175) -> bytes:
        key = (text, voice, rate)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        engine = _shared_engine()
        loop = asyncio.get_running_loop()
        pcm = await loop.run_in_executor(
            engine.executor, engine.synthesize, text, voice, rate, self.sample_rate
        )
        self._cache[key] = pcm
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return pcm

    def close(self) -> None:
        """The shared engine outlives any one app; only the cache goes."""
        self._cache.clear()
