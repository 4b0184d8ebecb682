"""The stereo recording: agent audio lands where the caller's audio was when it went out,
whatever the writer thread's batching."""
from __future__ import annotations

import array
import asyncio
import wave
from pathlib import Path

from agent_stream.pipeline.recorder import CallRecorder


def pcm(value: int, samples: int) -> bytes:
    return array.array("h", [value] * samples).tobytes()


async def test_agent_audio_lands_where_the_caller_was_when_it_went_out(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path / "7.wav", sample_rate=8000)
    recorder.open()
    recorder.write_caller(pcm(1, 4000))  # half a second of caller
    recorder.write_agent(pcm(2, 800))  # the agent answers at 0.5 s
    recorder.write_caller(pcm(1, 1600))
    recorder.write_agent(pcm(3, 800))  # and again at 0.7 s, still in the same batch
    recorder.write_caller(pcm(1, 20000))  # 2.5 s more: goes to the writer thread
    recorder.write_agent(pcm(4, 800))  # and at 3.2 s
    recorder.keypress("5")
    path = await recorder.finish()

    assert path == str(tmp_path / "7.wav")  # a directory store keeps the WAV where it merged
    with wave.open(path) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getnframes()) == (2, 8000, 26400)
        frames = array.array("h", wav.readframes(wav.getnframes()))
    left, right = frames[0::2], frames[1::2]
    assert list(left) == [1] * 25600 + [0] * 800
    assert list(right) == [0] * 4000 + [2] * 800 + [0] * 800 + [3] * 800 + [0] * 19200 + [4] * 800
    assert [(k.digit, k.at_ms) for k in recorder.keypresses] == [("5", 3200)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7.wav"]  # raw tracks removed
    assert await recorder.finish() == path  # finishing twice is harmless


async def test_a_refused_disk_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "recordings").write_text("not a folder")
    recorder = CallRecorder(tmp_path / "recordings" / "8.wav", sample_rate=8000)
    recorder.open()
    recorder.write_caller(pcm(1, 20000))
    recorder.write_agent(pcm(2, 800))
    assert await recorder.finish() is None
    assert recorder.failure and recorder.failure.startswith(("FileExistsError", "NotADirectoryError"))


async def test_a_cancelled_finish_still_writes_the_recording(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path / "9.wav", sample_rate=8000)
    recorder.open()
    recorder.write_caller(pcm(1, 8000))
    finishing = asyncio.ensure_future(recorder.finish())
    await asyncio.sleep(0)
    finishing.cancel()
    assert await recorder.finish() == str(tmp_path / "9.wav")
    with wave.open(str(tmp_path / "9.wav")) as wav:
        assert wav.getnframes() == 8000
