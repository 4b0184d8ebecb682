"""Speech recognition with pocketsphinx in grammar mode, in a worker process.

Open-vocabulary decoding of phone audio is poor (~63% WER measured here), but a JSGF
grammar of the phrases a node expects recognises them reliably. pocketsphinx holds the GIL
for the whole decode, so it runs in a separate process: one call's decode never stalls
another call's audio. Decoding wants 16 kHz and fails on exact digital silence, so the
8 kHz utterance is upsampled and a faint noise floor (~40 dB SNR) is added first.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import multiprocessing
import os
import re
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Final, Literal, get_args

from .. import audio
from ..lifeline import watch_parent

DECODE_RATE: Final = 16000
NOISE_FLOOR_RMS: Final = 30.0
# Longest wait for one utterance's decode (a couple of seconds of speech takes ~20 ms).
DECODE_TIMEOUT: Final = 10.0
# How the decoder process shares the CPU with the server (AGENT_STREAM_DECODER_PRIORITY):
# "idle" takes only CPU time nobody else wants (the default: audio pacing wins); "batch"
# (SCHED_BATCH at niceness 19) yields to the server but still gets a small share on a box
# that other work keeps busy; "normal" competes as an equal (a box shared with other busy
# processes, where an idle decoder could wait past DECODE_TIMEOUT).
DecoderPriority = Literal["idle", "batch", "normal"]
DECODER_PRIORITIES: Final[tuple[DecoderPriority, ...]] = get_args(DecoderPriority)
_WORD_RE: Final = re.compile(r"[a-z']+")

log = logging.getLogger(__name__)

_decoder: Any = None
_grammars: set[str] = set()


def phrase_words(phrase: str) -> str:
    """Lowercase words only: what a grammar rule and a match compare."""
    return " ".join(_WORD_RE.findall(phrase.lower()))


def grammar_for(phrases: tuple[str, ...]) -> tuple[str, str]:
    """A JSGF grammar accepting any one of `phrases`, and a stable name for it."""
    alternatives = sorted({phrase_words(p) for p in phrases if phrase_words(p)})
    body = " | ".join(f"( {a} )" for a in alternatives)
    text = f"#JSGF V1.0;\ngrammar expected;\npublic <utterance> = {body};\n"
    return "g" + hashlib.sha1(text.encode()).hexdigest()[:12], text


def _init_worker(priority: DecoderPriority) -> None:
    """Set up the decoder process. Ctrl-C is the server's to handle: the worker ends when
    the server shuts its pool down, without a traceback. The one-off start (~0.7 s of CPU:
    numpy, the acoustic model) runs at normal priority and only then does the process take
    its `priority`: on a busy machine an idle-priority start could take longer than a
    caller waits for an answer (seen in CI as a first decode timing out)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_the_server()
    import numpy  # noqa: F401  (decode's first import, paid here)

    _load_decoder()
    _take_priority(priority)


def _load_decoder() -> None:
    """Load the acoustic model, once per process (~0.4 s)."""
    global _decoder
    from pocketsphinx import Decoder

    config = Decoder.default_config()
    config["samprate"] = DECODE_RATE
    config["loglevel"] = "FATAL"
    _decoder = Decoder(config)


def _take_priority(priority: DecoderPriority) -> None:
    """Decoding is batch work and pacing live audio is not: on a busy machine the server's
    event loop must win every CPU it asks for, or all calls hear a gap. By default the
    decoder runs only on CPU time nobody else wants (SCHED_IDLE; niceness 19 where that is
    missing). At 80 calls on 2 cores this took the outbound gap p99 from 30-45 ms to
    23-27 ms. The price, on a box whose CPUs other work keeps busy, is decodes that wait:
    "batch" or "normal" trade some of the gap for answers that never starve."""
    if priority == "normal":
        return
    try:
        if priority == "idle":
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        else:  # niceness first: the policy then reads as done once it is batch
            os.nice(19)
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


def _exit_with_the_server() -> None:
    """A server killed without shutting its pool down (SIGKILL, the OOM killer) must not
    leave its decoder behind, holding the model's ~130 MB for good."""
    server = multiprocessing.parent_process()
    if server is not None and server.pid is not None:
        watch_parent(server.pid, lambda: os._exit(0))


def decode(pcm8k: bytes, phrases: tuple[str, ...]) -> str | None:
    """Runs in the worker: the phrase heard in one whole utterance, or None."""
    import numpy as np

    if _decoder is None:
        _load_decoder()
    name, grammar = grammar_for(phrases)
    if not grammar.count("("):
        return None
    if name not in _grammars:
        _decoder.add_jsgf_string(name, grammar)
        _grammars.add(name)
    _decoder.activate_search(name)
    pcm16 = audio.resample(pcm8k, 8000, DECODE_RATE)
    samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
    pad = np.zeros(DECODE_RATE // 5, dtype=np.float32)
    samples = np.concatenate([pad, samples, pad])
    samples += np.random.default_rng(len(pcm8k)).normal(0.0, NOISE_FLOOR_RMS, samples.size)
    pcm = np.clip(samples, -32768, 32767).astype(np.int16).tobytes()
    _decoder.start_utt()
    _decoder.process_raw(pcm, full_utt=True)
    _decoder.end_utt()
    hypothesis = _decoder.hyp()
    text = hypothesis.hypstr.strip() if hypothesis is not None else ""
    return text or None


class GrammarRecognizer:
    """The decoder process every call shares; `recognize` never blocks the event loop.
    The process (and its ~0.4 s model load) starts on the first utterance."""

    def __init__(self, workers: int = 1, priority: DecoderPriority = "idle") -> None:
        self._workers = workers
        self._priority = priority
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self._priority,),
            )
        return self._pool

    async def recognize(self, pcm8k: bytes, phrases: tuple[str, ...]) -> str | None:
        """The phrase heard, or None; also None when the decoder, which by default only gets
        CPU time the server leaves, cannot answer within DECODE_TIMEOUT (the turn is not
        understood)."""
        if not phrases or not pcm8k:
            return None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(DECODE_TIMEOUT):
                return await loop.run_in_executor(self._executor(), decode, pcm8k, phrases)
        except TimeoutError:
            log.warning(
                "speech decoder did not answer within %g s (it runs at %s priority: see"
                " AGENT_STREAM_DECODER_PRIORITY)", DECODE_TIMEOUT, self._priority,
            )
            return None

    def warm_up(self) -> None:
        """Start the decoder process now, so the first caller does not wait for it."""
        self._executor().submit(phrase_words, "")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
