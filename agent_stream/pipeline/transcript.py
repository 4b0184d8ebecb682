"""What was said on a call, with agent lines holding only what the caller actually heard.

The output transport reports audio as it is sent, the marks it sends after each utterance
and the clears of a barge-in; the provider's mark echoes confirm playback. An utterance cut
by a clear keeps the words that fit in the audio that went out, and is marked interrupted.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..models import TranscriptLine


@dataclass
class Utterance:
    """One thing the agent says: queued, playing, then heard (fully or in part)."""

    id: str
    text: str
    audio_bytes: int
    interruptible: bool = True
    sent_bytes: int = 0
    started_ms: int | None = None
    mark_sent: bool = False
    played: bool = False
    interrupted: bool = False
    number: int = 0  # in the order the engine queued them


@dataclass
class CallTranscript:
    """The conversation of one call, as offsets from the start of the media."""

    bytes_per_second: int = 16000
    started: float = field(default_factory=time.monotonic)
    lines: list[TranscriptLine] = field(default_factory=list)
    _queue: deque[Utterance] = field(default_factory=deque)
    _counter: int = 0
    _clear_upto: int | None = None  # the last utterance the coming clear drops
    # Told (role, text) of each line as it happens: an agent line when its audio starts
    # going out, a caller line when it is recognized. None (most calls): nobody is told.
    listener: Callable[[str, str], None] | None = None
    # How long the caller waited for each reply: the end of their turn (speech or key) to
    # the agent's next audio going out, as the transcript's lines show it.
    replies_ms: list[int] = field(default_factory=list)
    _turn_ended_ms: int | None = None  # a caller turn the agent has not answered yet

    def now_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    # -- agent side --------------------------------------------------------------------

    def queue(self, text: str, audio_bytes: int, *, interruptible: bool) -> Utterance:
        """The engine is about to say `text`: its audio goes out next, then its mark."""
        self._counter += 1
        utterance = Utterance(f"utt-{self._counter}", text, audio_bytes, interruptible,
                              number=self._counter)
        self._queue.append(utterance)
        return utterance

    @property
    def playing(self) -> Utterance | None:
        """The utterance the caller is hearing (or about to), if any."""
        for utterance in self._queue:
            if not utterance.played:
                return utterance
        return None

    def audio_sent(self, size: int) -> None:
        utterance = next((u for u in self._queue if not u.mark_sent), None)
        if utterance is None:
            return
        if utterance.started_ms is None:
            utterance.started_ms = self.now_ms()
            if self._turn_ended_ms is not None and len(self.replies_ms) < 10_000:
                self.replies_ms.append(max(0, utterance.started_ms - self._turn_ended_ms))
            self._turn_ended_ms = None
            if self.listener is not None:
                self.listener("agent", utterance.text)
        utterance.sent_bytes += size

    def mark_sent(self, name: str) -> None:
        for utterance in self._queue:
            if utterance.id == name:
                utterance.mark_sent = True

    def mark_played(self, name: str) -> Utterance | None:
        """The provider echoed a mark: that utterance (and any before it) was heard. The
        echo of a mark a clear already dropped (providers send those back on a clear) says
        nothing was heard: it is ignored."""
        if not any(utterance.id == name for utterance in self._queue):
            return None
        while self._queue:
            utterance = self._queue.popleft()
            self._finish(utterance, interrupted=False)
            if utterance.id == name:
                return utterance
        return None

    def interrupting(self) -> None:
        """The engine is about to cut the agent off: what is queued now is what the clear
        (`cleared`, when the output gets to it) drops. What the engine queues meanwhile
        (the next node's words, say) comes after the clear and is heard."""
        self._clear_upto = self._counter

    def cleared(self) -> Utterance | None:
        """Barge-in: the playing utterance is cut where its audio stopped; the rest of what
        was queued when the engine interrupted never played."""
        upto, self._clear_upto = self._clear_upto, None
        cut = None
        while self._queue and (upto is None or self._queue[0].number <= upto):
            utterance = self._queue.popleft()
            if utterance.sent_bytes and cut is None:
                self._finish(utterance, interrupted=True)
                cut = utterance
        return cut

    def _finish(self, utterance: Utterance, *, interrupted: bool) -> None:
        utterance.played, utterance.interrupted = True, interrupted
        start = utterance.started_ms if utterance.started_ms is not None else self.now_ms()
        heard_bytes = utterance.sent_bytes if interrupted else utterance.audio_bytes
        text = utterance.text
        if interrupted and utterance.audio_bytes:
            words = text.split()
            share = min(1.0, heard_bytes / utterance.audio_bytes)
            text = " ".join(words[: int(len(words) * share)])
        end = start + int(heard_bytes * 1000 / self.bytes_per_second)
        self.lines.append(TranscriptLine("agent", text, start, end, interrupted))

    # -- caller side -------------------------------------------------------------------

    def caller_said(self, text: str, start_ms: int, end_ms: int) -> None:
        self.lines.append(TranscriptLine("caller", text, start_ms, end_ms))
        self._turn_ended_ms = end_ms
        if self.listener is not None:
            self.listener("caller", text)

    def flush(self) -> list[TranscriptLine]:
        """At the end of the call: whatever was sent but never confirmed counts as heard."""
        while self._queue:
            utterance = self._queue.popleft()
            if utterance.sent_bytes:
                self._finish(utterance, interrupted=utterance.sent_bytes < utterance.audio_bytes)
        return sorted(self.lines, key=lambda line: line.start_ms)
