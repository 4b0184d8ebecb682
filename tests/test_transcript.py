"""The transcript keeps only what the caller heard, whatever order the provider's
acknowledgements come in (agent_stream/pipeline/transcript.py)."""
from __future__ import annotations

from agent_stream.pipeline.transcript import CallTranscript


def test_the_echo_of_a_mark_a_clear_dropped_says_nothing_was_heard() -> None:
    transcript = CallTranscript(bytes_per_second=16000)
    first = transcript.queue("one two three four", 16000, interruptible=True)
    transcript.audio_sent(8000)  # half of it went out
    transcript.mark_sent(first.id)
    transcript.cleared()  # barge-in: Twilio and others send the dropped marks back
    second = transcript.queue("the next thing", 16000, interruptible=True)
    transcript.audio_sent(4000)
    assert transcript.mark_played(first.id) is None  # the echo of the cleared mark
    assert transcript.playing is second  # still playing, not counted as heard
    assert transcript.mark_played(second.id) is second
    lines = [(line.text, line.interrupted) for line in transcript.flush()]
    assert lines == [("one two", True), ("the next thing", False)]


def test_a_mark_confirms_what_went_before_it() -> None:
    transcript = CallTranscript(bytes_per_second=16000)
    first = transcript.queue("first", 1600, interruptible=True)
    second = transcript.queue("second", 1600, interruptible=True)
    transcript.audio_sent(3200)
    assert transcript.mark_played(second.id) is second
    assert [line.text for line in transcript.flush()] == ["first", "second"]
    assert first.played


def test_a_listener_hears_each_line_once_as_it_happens() -> None:
    """The browser's live transcript: an agent line when its first audio goes out (not
    per chunk, not when queued), a caller line when it is recognized."""
    heard: list[tuple[str, str]] = []
    transcript = CallTranscript(bytes_per_second=16000, listener=lambda *line: heard.append(line))
    first = transcript.queue("hello there", 3200, interruptible=True)
    assert heard == []  # queued is not said
    transcript.audio_sent(320)
    transcript.audio_sent(320)
    assert heard == [("agent", "hello there")]
    transcript.audio_sent(2560)
    transcript.mark_sent(first.id)
    transcript.caller_said("yes", 300, 600)
    assert heard == [("agent", "hello there"), ("caller", "yes")]


def test_words_queued_after_a_barge_in_are_kept_when_the_clear_comes_later() -> None:
    """The engine cuts the agent off, then at once queues the next node's words; the clear
    reaches the output after that: it drops what was queued before the cut, not those."""
    transcript = CallTranscript(bytes_per_second=16000)
    cut = transcript.queue("one two three four", 16000, interruptible=True)
    transcript.audio_sent(8000)
    transcript.interrupting()  # the engine's barge-in, before its InterruptionFrame
    after = transcript.queue("Bye.", 3200, interruptible=False)
    assert transcript.cleared() is cut  # the output transport handles the clear
    assert transcript.playing is after
    transcript.audio_sent(3200)
    transcript.mark_sent(after.id)
    assert transcript.mark_played(after.id) is after
    lines = [(line.text, line.interrupted) for line in transcript.flush()]
    assert lines == [("one two", True), ("Bye.", False)]
